"""What OpenAI's strict structured-output mode accepts, checked before anything is sent.

A schema the provider refuses fails every request of a run with a 400; a free-form dict
(``dict[str, int]``) is worse: once closed with ``additionalProperties: false`` it is an
object with no properties, so every reply comes back with it empty. This module finds such
schemas up front and names the field and the fix.

The rules follow OpenAI's Structured Outputs guide, section "Supported schemas"
(https://developers.openai.com/api/docs/guides/structured-outputs#supported-schemas):

- Supported types: string, number, boolean, integer, object, array, enum, anyOf.
- "Root objects must not be ``anyOf`` and must be an object."
- "All fields must be ``required``"; optional fields are a union with ``null``.
- "``additionalProperties: false`` must always be set in objects."
- String keywords: ``pattern``, ``format`` (only ``date-time``, ``time``, ``date``,
  ``duration``, ``email``, ``hostname``, ``ipv4``, ``ipv6``, ``uuid``). Number keywords:
  ``multipleOf``, ``maximum``, ``exclusiveMaximum``, ``minimum``, ``exclusiveMinimum``.
  Array keywords: ``minItems``, ``maxItems``.
- "Not yet supported": ``allOf``, ``not``, ``dependentRequired``, ``dependentSchemas``,
  ``if``, ``then``, ``else``. Keywords outside the supported lists (``prefixItems`` of a
  tuple, ``uniqueItems`` of a set, ``patternProperties``, ``oneOf`` ...) are refused too.
- "A schema may have up to 5000 object properties total, with up to 10 levels of nesting."
  The guide does not say how levels are counted: here every object on a path counts, the
  root included, and arrays and unions do not.
- "Total string length of all property names, definition names, enum values, and const
  values cannot exceed 120,000 characters."
- "Up to 1000 enum values across all enum properties"; "for a single enum property with
  string values, the total string length of all enum values cannot exceed 15,000
  characters when there are more than 250 enum values."
- Definitions (``$defs``) and recursive schemas (``$ref: "#"`` or into ``$defs``) are
  supported; a recursive reference does not add nesting levels.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from batchor.errors import ConfigurationError

#: The guide's limits (see the module docstring).
MAX_PROPERTIES = 5_000
MAX_NESTING = 10
MAX_STRING_CHARS = 120_000
MAX_ENUM_VALUES = 1_000
LARGE_ENUM_VALUES = 250
MAX_LARGE_ENUM_CHARS = 15_000
SUPPORTED_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid"}
)

_DICT_FIX = "use a list of key/value objects or a model with named fields"
_UNSUPPORTED: dict[str, tuple[str, str]] = {
    "prefixItems": (
        "is a fixed-length tuple (prefixItems)",
        "use list[...] of one type or a model with named fields",
    ),
    "uniqueItems": ("is a set (uniqueItems)", "use list[...] and drop duplicates afterwards"),
    "patternProperties": ("is a dict with constrained keys (patternProperties)", _DICT_FIX),
    "propertyNames": ("is a dict with constrained keys (propertyNames)", _DICT_FIX),
    "minProperties": ("is a dict with a size bound (minProperties)", _DICT_FIX),
    "maxProperties": ("is a dict with a size bound (maxProperties)", _DICT_FIX),
    "unevaluatedProperties": ("uses unevaluatedProperties", _DICT_FIX),
    "oneOf": ("is a oneOf union", "use a plain union (A | B), which is sent as anyOf"),
}
_UNSUPPORTED_FIX = (
    "remove it (it usually comes from json_schema_extra or a custom JSON schema hook)"
)
for _keyword in (
    "allOf",
    "not",
    "dependentRequired",
    "dependentSchemas",
    "if",
    "then",
    "else",
    "contains",
    "minContains",
    "maxContains",
    "unevaluatedItems",
    "additionalItems",
):
    _UNSUPPORTED[_keyword] = (f"uses '{_keyword}'", _UNSUPPORTED_FIX)

# Keywords whose value is one schema, a list of schemas, or a mapping of name to schema.
_ONE = (
    "items",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "additionalItems",
)
_MANY = ("anyOf", "oneOf", "allOf", "prefixItems")
_NAMED = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")


@dataclass(frozen=True, slots=True)
class SchemaProblem:
    """One thing strict mode refuses (or would answer empty) in a schema.

    Attributes:
        path: The field, dotted from the root model's name (``Outer.items[].counts``;
            ``[]`` is a list's item).
        problem: What is wrong with it.
        fix: How to change the model.
    """

    path: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path} {self.problem}; {self.fix}"


def schema_problems(schema: Any, name: str) -> list[SchemaProblem]:
    """Every problem strict mode has with ``schema`` (empty when it is accepted).

    Args:
        schema: The JSON schema as it would be sent (``strict: true``).
        name: The root's name in the paths, typically the model's class name.
    """
    return _Checker(schema, name).run()


def check_strict_schema(schema: Any, name: str) -> None:
    """Raise unless OpenAI's strict mode accepts ``schema`` as it stands.

    Raises:
        ConfigurationError: one line naming the first offending field and the fix, and how
            many other problems there are.
    """
    problems = schema_problems(schema, name)
    if not problems:
        return
    more = ""
    if len(problems) > 1:
        others = sorted({p.path for p in problems[1:]})
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        more = f" (and {len(problems) - 1} more: {shown})"
    raise ConfigurationError(
        f"structured output {name} is not accepted by OpenAI's strict mode: {problems[0]}{more}"
    )


class _Checker:
    """Walks a schema from its root along field paths, following ``$ref``s."""

    def __init__(self, root: Any, name: str) -> None:
        self.root = root
        self.name = name
        self.problems: list[SchemaProblem] = []
        self._reported: set[tuple[int, str]] = set()
        self._entered: dict[str, int] = {}  # ref -> shallowest nesting level it was checked at
        self._stack: list[str] = []
        self._too_deep = False

    def run(self) -> list[SchemaProblem]:
        root, name = self.root, self.name
        if not isinstance(root, Mapping):
            self._add(root, "root", name, "is not a JSON schema object", "send a Pydantic model")
            return self.problems
        if "$ref" in root:
            self._add(
                root,
                "root",
                name,
                "is a reference to another model (a RootModel of a model)",
                "use that model itself as the structured output",
            )
        elif root.get("anyOf") or root.get("oneOf"):
            self._add(
                root,
                "root",
                name,
                "is a union at the root, which strict mode refuses",
                "use a model with one field holding the union",
            )
        elif root.get("type") != "object":
            kind = _type_name(root)
            self._add(
                root,
                "root",
                name,
                f"is {kind} at the root (a RootModel), but the root must be an object",
                "use a model with named fields, e.g. a field 'items: list[...]' for a list",
            )
        self._stack.append("#")
        self._visit(root, name, 0)
        self._totals()
        return self.problems

    def _add(self, node: Any, code: str, path: str, problem: str, fix: str) -> None:
        key = (id(node), code)
        if key not in self._reported:
            self._reported.add(key)
            self.problems.append(SchemaProblem(path, problem, fix))

    def _visit(self, node: Any, path: str, level: int) -> None:
        if not isinstance(node, Mapping):
            if node is not False:  # ``items: false`` closes a tuple; prefixItems is reported
                self._add(node, "schema", path, "has no type (Any)", _ANY_FIX)
            return
        if "$ref" in node:
            self._ref(node, path, level)
            return
        for keyword, (problem, fix) in _UNSUPPORTED.items():
            if keyword in node:
                self._add(node, keyword, path, problem, fix)
        self._enum(node, path)
        for branch in _schemas(node.get("anyOf")) + _schemas(node.get("oneOf")):
            self._visit(branch, path, level)
        kinds = _types(node)
        if not kinds:
            if not ({"anyOf", "oneOf", "enum", "const"} & node.keys()):
                self._add(node, "type", path, "has no type (Any, object or a bare list)", _ANY_FIX)
            return
        if "object" in kinds:
            self._object(node, path, level + 1)
        if "array" in kinds:
            self._array(node, path, level)
        if "string" in kinds and "format" in node:
            self._format(node, path)

    def _ref(self, node: Mapping[str, Any], path: str, level: int) -> None:
        ref = str(node["$ref"])
        others = sorted(k for k in node if k != "$ref")
        if others:
            self._add(
                node,
                "ref",
                path,
                f"has keywords beside $ref ({', '.join(others)})",
                "put them on the referenced model instead",
            )
        target = _resolve(self.root, ref)
        if target is None:
            self._add(
                node,
                "dangling",
                path,
                f"refers to {ref}, which the schema lacks",
                "define it under $defs",
            )
            return
        if ref in self._stack:
            return  # recursion is supported and adds no nesting
        if self._entered.get(ref, MAX_NESTING + 1) <= level:
            return  # checked already, at this depth or shallower
        self._entered[ref] = level
        self._stack.append(ref)
        try:
            self._visit(target, path, level)
        finally:
            self._stack.pop()

    def _object(self, node: Mapping[str, Any], path: str, level: int) -> None:
        if level > MAX_NESTING:
            if not self._too_deep:
                self._too_deep = True
                self._add(
                    node,
                    "depth",
                    path,
                    f"is nested {level} objects deep; strict mode allows {MAX_NESTING}",
                    "flatten the model",
                )
            return
        properties = node.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        extra = node.get("additionalProperties")
        if extra is not False:
            if properties:
                self._add(
                    node,
                    "open",
                    path,
                    "does not set additionalProperties: false",
                    "close the object (no extra keys)",
                )
            else:
                self._add(
                    node,
                    "dict",
                    path,
                    "is a free-form dict, which strict mode cannot generate (it would come "
                    "back as an empty object)",
                    _DICT_FIX,
                )
        required = node.get("required")
        missing = [p for p in properties if not isinstance(required, list) or p not in required]
        if missing:
            self._add(
                node,
                "required",
                path,
                f"does not list {', '.join(missing)} as required",
                "make every field required (an optional field is 'X | None')",
            )
        for field_name, sub in properties.items():
            self._visit(sub, f"{path}.{field_name}", level)

    def _array(self, node: Mapping[str, Any], path: str, level: int) -> None:
        items = node.get("items")
        if items is None and "prefixItems" not in node:
            self._add(node, "items", path, "is a list without an item type", _ANY_FIX)
        elif items is not None:
            self._visit(items, f"{path}[]", level)
        for item in _schemas(node.get("prefixItems")):
            self._visit(item, f"{path}[]", level)

    def _format(self, node: Mapping[str, Any], path: str) -> None:
        fmt = node["format"]
        if fmt not in SUPPORTED_FORMATS:
            self._add(
                node,
                "format",
                path,
                f"has string format {fmt!r}, which strict mode does not support "
                f"(it supports {', '.join(sorted(SUPPORTED_FORMATS))})",
                "use str and check the format after (e.g. str instead of HttpUrl or bytes)",
            )

    def _enum(self, node: Mapping[str, Any], path: str) -> None:
        values = node.get("enum")
        if not isinstance(values, list) or len(values) <= LARGE_ENUM_VALUES:
            return
        chars = sum(len(v) for v in values if isinstance(v, str))
        if chars > MAX_LARGE_ENUM_CHARS:
            self._add(
                node,
                "enum",
                path,
                f"is an enum of {len(values)} values totalling {chars:,} characters; strict "
                f"mode allows {MAX_LARGE_ENUM_CHARS:,} characters past {LARGE_ENUM_VALUES} values",
                "use fewer or shorter values, or a plain str",
            )

    def _totals(self) -> None:
        """The whole-schema limits, counted over the schema as written (each definition once)."""
        properties = enum_values = chars = 0
        for node in _all_schemas(self.root):
            named = node.get("properties")
            if isinstance(named, Mapping):
                properties += len(named)
                chars += sum(len(str(k)) for k in named)
            for key in ("$defs", "definitions"):
                defs = node.get(key)
                if isinstance(defs, Mapping):
                    chars += sum(len(str(k)) for k in defs)
            values = node.get("enum")
            if isinstance(values, list):
                enum_values += len(values)
                chars += sum(len(v) for v in values if isinstance(v, str))
            if isinstance(node.get("const"), str):
                chars += len(node["const"])
        root, name = self.root, self.name
        if properties > MAX_PROPERTIES:
            self._add(
                root,
                "properties",
                name,
                f"has {properties:,} object properties in all; strict mode allows "
                f"{MAX_PROPERTIES:,}",
                "split the work into smaller models",
            )
        if enum_values > MAX_ENUM_VALUES:
            self._add(
                root,
                "enums",
                name,
                f"has {enum_values:,} enum values in all; strict mode allows {MAX_ENUM_VALUES:,}",
                "use fewer enum values, or plain str fields",
            )
        if chars > MAX_STRING_CHARS:
            self._add(
                root,
                "chars",
                name,
                f"has {chars:,} characters of property names, definition names, enum and "
                f"const values; strict mode allows {MAX_STRING_CHARS:,}",
                "use fewer or shorter names and values",
            )


_ANY_FIX = "give it a concrete type (str, int, a model, list[...] of one of these)"


def _types(node: Mapping[str, Any]) -> list[str]:
    kind = node.get("type")
    if isinstance(kind, str):
        return [kind]
    if isinstance(kind, list):
        return [str(k) for k in kind]
    return []


def _type_name(node: Mapping[str, Any]) -> str:
    kinds = [k for k in _types(node) if k != "null"]
    if not kinds:
        return "untyped"
    return {"array": "a list", "integer": "an integer", "object": "an object"}.get(
        kinds[0], f"a {kinds[0]}"
    )


def _schemas(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else []


def _resolve(root: Any, ref: str) -> Any:
    """The node a local ``$ref`` points to (``#`` or a JSON pointer), or None."""
    if not ref.startswith("#"):
        return None
    target = root
    for raw in ref[1:].split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(target, Mapping) and part in target:
            target = target[part]
        else:
            return None
    return target


def _all_schemas(node: Any) -> Iterator[Mapping[str, Any]]:
    """Every (sub)schema of the document, each once, without following ``$ref``s."""
    if not isinstance(node, Mapping):
        return
    yield node
    for key in _ONE:
        yield from _all_schemas(node.get(key))
    for key in _MANY:
        for sub in _schemas(node.get(key)):
            yield from _all_schemas(sub)
    for key in _NAMED:
        named = node.get(key)
        if isinstance(named, Mapping):
            for sub in named.values():
                yield from _all_schemas(sub)
