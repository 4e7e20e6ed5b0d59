"""Results destinations: a local path or an object-store URL, templated per partition."""

from __future__ import annotations

import string

from batchor import ConfigurationError

FIELDS = frozenset({"partition_key", "run_id", "asset"})
"""Placeholders a destination template may use."""


def check_template(template: str, partitioned: bool) -> None:
    """Refuse, at definition time, a template with an unknown placeholder, or one that uses
    ``{partition_key}`` on an unpartitioned asset."""
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ConfigurationError(
            f"destination {template!r} is not a valid template: {exc}"
        ) from exc
    unknown = names - FIELDS
    if unknown:
        raise ConfigurationError(
            f"destination {template!r} uses unknown placeholder(s) {sorted(unknown)}; "
            f"allowed: {sorted(FIELDS)}"
        )
    if "partition_key" in names and not partitioned:
        raise ConfigurationError(
            f"destination {template!r} uses {{partition_key}} but the asset is not partitioned"
        )


def render(template: str, *, partition_key: str | None, run_id: str, asset: str) -> str:
    """The destination of one materialisation (a path or an fsspec URL)."""
    return template.format(partition_key=partition_key or "", run_id=run_id, asset=asset)
