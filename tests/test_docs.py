"""The documentation site keeps up with the code: every public name has an API reference entry,
and every page is reachable from the nav."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import batchor
import batchor.testing

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
API_PAGE = DOCS / "reference" / "api.md"
MKDOCS_YML = ROOT / "mkdocs.yml"

_DIRECTIVE = re.compile(r"^:::[ \t]+([A-Za-z_][\w.]*)[ \t]*$", re.MULTILINE)


def directives(markdown: str) -> list[str]:
    """The dotted paths of the mkdocstrings ``::: path`` blocks in a page."""
    return _DIRECTIVE.findall(markdown)


def resolve(path: str) -> Any:
    """The object a dotted path names (the longest importable module, then attributes)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def undocumented(module: Any, markdown: str) -> list[str]:
    """Names of ``module.__all__`` (but ``__version__``) with no ``:::`` block in the page,
    either as ``module.name`` or as any other path to the same object."""
    paths = set(directives(markdown))
    objects = []
    for path in paths:
        try:
            objects.append(resolve(path))
        except (ImportError, AttributeError):
            continue  # a stale path documents nothing; the build reports it
    missing = []
    for name in module.__all__:
        if name == "__version__":
            continue
        if f"{module.__name__}.{name}" in paths:
            continue
        if any(obj is getattr(module, name) for obj in objects):
            continue
        missing.append(name)
    return missing


class _Loader(yaml.SafeLoader):
    """Reads mkdocs.yml, ignoring the ``!!python/...`` and ``!ENV`` tags mkdocs accepts."""


_Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def nav_pages(nav: Any) -> list[str]:
    """Every page path in a mkdocs nav (titles and sections unwrapped, URLs left out)."""
    if isinstance(nav, str):
        return [] if "://" in nav else [nav]
    if isinstance(nav, list):
        return [page for entry in nav for page in nav_pages(entry)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return []


def site_nav() -> list[str]:
    config = yaml.load(MKDOCS_YML.read_text(encoding="utf-8"), Loader=_Loader)
    assert config.get("docs_dir", "docs") == "docs"
    return nav_pages(config["nav"])


@pytest.mark.parametrize("module", [batchor, batchor.testing], ids=lambda m: m.__name__)
def test_every_public_name_has_an_api_reference_entry(module: Any) -> None:
    missing = undocumented(module, API_PAGE.read_text(encoding="utf-8"))
    assert not missing, (
        f"add a '::: {module.__name__}.NAME' block to docs/reference/api.md for: "
        + ", ".join(missing)
    )


def test_the_checks_catch_a_missing_name() -> None:
    page = API_PAGE.read_text(encoding="utf-8")
    assert undocumented(batchor, page.replace("::: batchor.BatchRunner\n", "\n")) == ["BatchRunner"]
    # Another path to the same object counts.
    page = page.replace("::: batchor.BatchRunner\n", "::: batchor.runner.BatchRunner\n")
    assert "BatchRunner" not in undocumented(batchor, page)
    nav = ["index.md", {"Guides": [{"A": "how-to/a.md"}, "how-to/b.md"]}, {"Ext": "https://x"}]
    assert nav_pages(nav) == ["index.md", "how-to/a.md", "how-to/b.md"]


def test_every_page_is_in_the_nav() -> None:
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    nav = site_nav()
    orphans = sorted(set(pages) - set(nav))
    assert not orphans, f"pages missing from the nav in mkdocs.yml: {', '.join(orphans)}"
    dangling = sorted(set(nav) - set(pages))
    assert not dangling, f"nav entries in mkdocs.yml with no page: {', '.join(dangling)}"
