"""Structured outputs: a Pydantic model as a strict JSON schema, and replies validated into it."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any, cast

from batchor.errors import ConfigurationError
from batchor.loading import load_object
from batchor.schema_check import check_strict_schema

if TYPE_CHECKING:
    # Pydantic loads with the first model a job or result uses, not with `import batchor`.
    from pydantic import BaseModel

# Keywords the provider's strict mode rejects or ignores; dropping them keeps the schema valid.
_UNSUPPORTED_KEYWORDS = frozenset({"default", "examples", "discriminator"})


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """Return ``model``'s JSON schema in the provider's strict form, checked.

    Every object is closed (``additionalProperties: false``) and lists every property as
    required; a field that may be omitted must therefore be nullable (``str | None``), which
    Pydantic already expresses as ``anyOf [..., {"type": "null"}]``. A discriminated union
    (``oneOf``) is sent as the equivalent ``anyOf``, and a ``$ref`` with a description beside
    it is inlined, as strict mode allows nothing beside a ``$ref``.

    Raises:
        ConfigurationError: one line naming the field and the fix, when strict mode would
            refuse the schema or answer a field empty (a free-form ``dict``, ``Any``, a root
            that is not an object, a tuple or set, too large ...); see
            `batchor.schema_check`.
    """
    from pydantic import PydanticUserError

    name = model.__name__
    try:
        raw = model.model_json_schema()
    except PydanticUserError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigurationError(f"structured output {name} has no JSON schema: {first}") from None
    strict: dict[str, Any] = _Strict(raw).node(raw)
    check_strict_schema(strict, name)
    return strict


class _Strict:
    """Rewrites a Pydantic JSON schema into the strict form, node by node."""

    def __init__(self, root: dict[str, Any]) -> None:
        self._defs = root.get("$defs", {})
        self._inlining: list[str] = []

    def node(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.node(n) for n in node]
        if not isinstance(node, dict):
            return node
        kept = {k: v for k, v in node.items() if k not in _UNSUPPORTED_KEYWORDS}
        if "oneOf" in kept and "anyOf" not in kept:
            # Pydantic's discriminated union: the branches are disjoint, so anyOf is the same.
            kept["anyOf"] = kept.pop("oneOf")
        ref = kept.get("$ref")
        if isinstance(ref, str) and len(kept) > 1:
            return self._inline(ref, kept)
        out = {k: self._child(k, v) for k, v in kept.items()}
        if out.get("type") == "object" or "properties" in out:
            props = out.get("properties", {})
            # A free-form dict (additionalProperties a schema, no properties) is left as it
            # is, for the check to refuse: closing it would empty every reply's value.
            if props or out.get("additionalProperties") in (None, False):
                out["additionalProperties"] = False
                out["required"] = list(props)
        return out

    def _child(self, key: str, value: Any) -> Any:
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            return {name: self.node(sub) for name, sub in value.items()}
        return self.node(value)

    def _inline(self, ref: str, node: dict[str, Any]) -> Any:
        """``{"$ref": r, "description": d}`` as the referenced schema with ``d`` on it."""
        name = ref.removeprefix("#/$defs/")
        target = self._defs.get(name) if ref.startswith("#/$defs/") else None
        if not isinstance(target, dict) or name in self._inlining:
            return self.node({"$ref": ref})  # recursion: a bare reference
        self._inlining.append(name)
        try:
            return self.node({**target, **{k: v for k, v in node.items() if k != "$ref"}})
        finally:
            self._inlining.pop()


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
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    from pydantic import BaseModel

    obj = load_object(path, what="schema")
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
        return cast("BaseModel", model.__pydantic_validator__.validate_json(text))
    except Exception as exc:
        # Imported here, off the per-reply path: the model's own import loaded Pydantic.
        from pydantic import ValidationError

        if not isinstance(exc, ValidationError):
            raise
        errors = exc.errors(include_url=False)
        if errors and errors[0].get("type") == "json_invalid":
            raise OutputValidationError("invalid_json", f"reply is not valid JSON: {exc}") from None
        raise OutputValidationError(
            "schema_validation", f"reply does not match {model.__name__}: {exc}"
        ) from None
