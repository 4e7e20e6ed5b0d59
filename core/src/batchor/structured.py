"""Structured outputs: a Pydantic model as a strict JSON schema, and replies validated into it."""

from __future__ import annotations

import importlib
import re
import sys
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from batchor.errors import ConfigurationError

# Keywords the provider's strict mode rejects or ignores; dropping them keeps the schema valid.
_UNSUPPORTED_KEYWORDS = frozenset({"default", "examples"})


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Return ``model``'s JSON schema in the provider's strict form.

    Every object is closed (``additionalProperties: false``) and lists every property as
    required; a field that may be omitted must therefore be nullable (``str | None``), which
    Pydantic already expresses as ``anyOf [..., {"type": "null"}]``.
    """
    strict: dict[str, Any] = _make_strict(model.model_json_schema())
    return strict


def _make_strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_make_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _make_strict(v) for k, v in node.items() if k not in _UNSUPPORTED_KEYWORDS}
    if out.get("type") == "object" or "properties" in out:
        props = out.get("properties", {})
        out["additionalProperties"] = False
        out["required"] = list(props)
    return out


def schema_name(model: type[BaseModel]) -> str:
    """The schema name the provider requires (``^[a-zA-Z0-9_-]{1,64}$``)."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", model.__name__)[:64] or "output"


def model_path(model: type[BaseModel]) -> str:
    """``module:QualName`` of a model, used to rehydrate typed outputs in a fresh process."""
    return f"{model.__module__}:{model.__qualname__}"


def import_model(path: str) -> type[BaseModel]:
    """Import a Pydantic model from ``module:Class``.

    The current directory is put on ``sys.path`` first, as ``python -m`` would, so a model in
    a file beside the caller's working directory imports.

    Raises:
        ConfigurationError: naming the path, when it does not import or is not a model.
    """
    module_name, sep, qualname = path.partition(":")
    if not sep or not module_name or not qualname:
        raise ConfigurationError(f"schema path {path!r} must look like 'module:Class'")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigurationError(
            f"schema path {path!r}: cannot import module {module_name!r}: {exc}"
        ) from exc
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigurationError(
                f"schema path {path!r}: module {module_name!r} has no attribute {qualname!r}"
            ) from None
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise ConfigurationError(f"schema path {path!r} is not a Pydantic model class")
    return obj


class OutputValidationError(Exception):
    """A reply that is not valid JSON or does not match the schema (internal; retryable)."""

    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


def validate_output(model: type[BaseModel], text: str) -> BaseModel:
    """Validate a reply's text into ``model``.

    Raises:
        OutputValidationError: ``invalid_json`` when the text is not JSON, ``schema_validation``
            when it is JSON that does not fit the model.
    """
    try:
        # The validator itself: model_validate_json's wrapper costs half as much again.
        return cast(BaseModel, model.__pydantic_validator__.validate_json(text))
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0].get("type") == "json_invalid":
            raise OutputValidationError("invalid_json", f"reply is not valid JSON: {exc}") from None
        raise OutputValidationError(
            "schema_validation", f"reply does not match {model.__name__}: {exc}"
        ) from None
