"""The one importer of ``"package.module:attribute"`` paths (job factories, schema models)."""

from __future__ import annotations

import importlib
from typing import Any

from batchor.errors import ConfigurationError


def load_object(path: str, *, what: str = "object") -> Any:
    """The object at ``"package.module:attribute"`` (dots after the colon walk attributes).

    Args:
        path: The import path.
        what: What the path names, for the error message (``"job"``, ``"schema"``...).

    Raises:
        ConfigurationError: The path is malformed, its module cannot be imported or the
            attribute does not exist; the message names the path.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"{what} path {path!r} must look like 'package.module:name'")
    try:
        value: Any = importlib.import_module(module_name)
    except Exception as exc:  # an import error, or the module raised while importing
        raise ConfigurationError(
            f"{what} path {path!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigurationError(f"{what} path {path!r}: no attribute {part!r}") from None
    return value
