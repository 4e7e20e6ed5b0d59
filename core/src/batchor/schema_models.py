"""Typed outputs in any process: the Pydantic model a run's results validate into, imported by
its ``module:Class`` path when that class is importable and unchanged, else rebuilt from the
JSON schema recorded with the run (a class defined in a DAG file, a notebook or ``__main__``
cannot be imported anywhere else)."""

from __future__ import annotations

import keyword
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, Union

from batchor.errors import ConfigurationError
from batchor.structured import import_model, strict_json_schema

if TYPE_CHECKING:
    # Pydantic loads when a model is first rebuilt, not with `import batchor`.
    from pydantic import BaseModel

_SCALARS: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool}


def output_model(config: Mapping[str, Any]) -> type[BaseModel] | None:
    """The model of a run's typed outputs, from its stored config; ``None`` for text runs.

    The class at ``schema_model`` is used when it imports and still gives the recorded
    schema; otherwise a model is rebuilt from the recorded ``schema`` (same field names,
    types, nesting and nullability; formats are plain strings). ``None`` also when the
    recorded schema cannot be rebuilt: outputs are then plain JSON.
    """
    schema = config.get("schema")
    if not schema:
        return None
    path = config.get("schema_model")
    if path:
        try:
            model = import_model(path)
            if strict_json_schema(model) == schema:
                return model
        except ConfigurationError:
            pass
    try:
        return model_from_schema(schema, config.get("schema_name") or "Output")
    except ConfigurationError:  # a schema from an older version: outputs stay JSON
        return None


def model_from_schema(schema: Mapping[str, Any], name: str) -> type[BaseModel]:
    """A Pydantic model that validates what ``schema`` (a strict-mode object schema, as
    `batchor.structured.strict_json_schema` makes) describes.

    Raises:
        ConfigurationError: the schema uses a construct strict mode does not allow.
    """
    builder = _Builder(schema)
    model = builder.model(schema, name)
    namespace = dict(builder.defs)
    for built in builder.built:
        built.model_rebuild(_types_namespace=namespace)
    return model


class _Builder:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self._schemas: Mapping[str, Any] = root.get("$defs", {})
        self.defs: dict[str, type[BaseModel]] = {}
        self.built: list[type[BaseModel]] = []
        self._building: set[str] = set()

    def model(self, node: Mapping[str, Any], name: str) -> type[BaseModel]:
        from pydantic import ConfigDict, Field, create_model

        fields: dict[str, Any] = {}
        for index, (field, sub) in enumerate(node.get("properties", {}).items()):
            annotation = self.annotation(sub, f"{name}_{_identifier(field, index)}")
            description = sub.get("description") if isinstance(sub, Mapping) else None
            python_name = _identifier(field, index)
            info = Field(alias=field if python_name != field else None, description=description)
            fields[python_name] = (annotation, info)
        model = create_model(
            _identifier(name, 0),
            __config__=ConfigDict(populate_by_name=True),
            __doc__=node.get("description"),
            **fields,
        )
        self.built.append(model)
        return model

    def annotation(self, node: Any, name: str) -> Any:
        if not isinstance(node, Mapping):
            raise ConfigurationError(f"recorded schema: {name} is not a schema")
        if "$ref" in node:
            return self._ref(str(node["$ref"]))
        if "anyOf" in node:
            options = tuple(self.annotation(o, f"{name}_{i}") for i, o in enumerate(node["anyOf"]))
            return Union[options]  # noqa: UP007 (a runtime tuple of types)
        if "enum" in node:
            return Literal[tuple(node["enum"])]
        if "const" in node:
            return Literal[node["const"]]
        kind = node.get("type")
        if isinstance(kind, list):
            return Union[tuple(self.annotation({**node, "type": k}, name) for k in kind)]  # noqa: UP007
        if kind in _SCALARS:
            return _SCALARS[kind]
        if kind == "null":
            return type(None)
        if kind == "array":
            return list[self.annotation(node.get("items", {}), f"{name}_item")]  # type: ignore[misc]
        if kind == "object":
            return self.model(node, name)
        raise ConfigurationError(f"recorded schema: {name} has no type strict mode allows")

    def _ref(self, ref: str) -> Any:
        name = ref.removeprefix("#/$defs/")
        if name in self.defs:
            return self.defs[name]
        if name in self._building:
            return _identifier(name, 0)  # recursion: a forward reference, rebuilt at the end
        target = self._schemas.get(name)
        if not ref.startswith("#/$defs/") or not isinstance(target, Mapping):
            raise ConfigurationError(f"recorded schema: unknown reference {ref!r}")
        self._building.add(name)
        try:
            built = self.annotation(target, name)
        finally:
            self._building.discard(name)
        self.defs[_identifier(name, 0)] = built
        self.defs[name] = built
        return built


def _identifier(name: str, index: int) -> str:
    """``name`` if it can be a Python field name, else a stand-in (the real name is the
    field's alias)."""
    from pydantic import BaseModel

    reserved = name.startswith("_") or keyword.iskeyword(name) or hasattr(BaseModel, name)
    if name.isidentifier() and not reserved:
        return name
    return f"field_{index}"
