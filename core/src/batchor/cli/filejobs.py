"""Turning CLI arguments into a job: pick the source by extension, check the prompt
template against the input's fields before anything runs."""

from __future__ import annotations

import json
import string
from collections.abc import Callable
from pathlib import Path

from batchor.errors import ConfigurationError, SourceError
from batchor.items import BatchItem, PromptParts
from batchor.sources.base import FileSource
from batchor.sources.csv import CsvItemSource
from batchor.sources.jsonl import JsonlItemSource

_JSONL = (".jsonl", ".ndjson")


def open_source(
    path: str, id_field: str, metadata_fields: tuple[str, ...] = ()
) -> CsvItemSource | JsonlItemSource:
    """A source for ``path`` chosen by its extension (``.csv``, ``.jsonl``, ``.ndjson``)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return CsvItemSource(path, id_field=id_field, metadata_fields=metadata_fields)
    if suffix in _JSONL:
        return JsonlItemSource(path, id_field=id_field, metadata_fields=metadata_fields)
    raise SourceError(f"cannot tell the format of {path}: use a .csv, .jsonl or .ndjson file")


def input_fields(source: FileSource) -> list[str]:
    """The field names of the input: the CSV header, or the first JSONL object's keys."""
    if isinstance(source, CsvItemSource):
        return source.columns
    with open(source.path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                try:
                    record = json.loads(raw)
                except ValueError:
                    break  # reported with its line number when the source is read
                return list(record) if isinstance(record, dict) else []
    return []


def template_fields(template: str) -> list[str]:
    """The field names a ``{field}`` template uses.

    Raises:
        ConfigurationError: the template is malformed or uses indexing/attributes.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigurationError(f"prompt template is malformed: {exc}") from None
    names = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if not name or (not name.isidentifier() and not name.replace("-", "_").isidentifier()):
            raise ConfigurationError(
                f"prompt template field {{{name}}} must name a column, like {{text}}"
            )
        names.append(name)
    return names


def prompt_builder(
    source: FileSource,
    *,
    template: str | None,
    field: str | None,
    system: str | None,
) -> Callable[[BatchItem], PromptParts]:
    """A ``build_prompt`` from ``--prompt-template`` or ``--prompt-field``, checked against
    the input's fields.

    Raises:
        ConfigurationError: neither or both given, or they name a field the input lacks.
    """
    if (template is None) == (field is None):
        raise ConfigurationError("give exactly one of --prompt-template and --prompt-field")
    fields = input_fields(source)
    wanted = template_fields(template) if template is not None else [field or ""]
    for name in wanted:
        if name not in fields:
            what = "prompt template names" if template is not None else "--prompt-field names"
            raise ConfigurationError(
                f"{what} {name!r}, which {source.path.name} does not have "
                f"(fields: {', '.join(fields[:20]) or 'none'})"
            )
    if template is not None:
        fmt = template

        def build(item: BatchItem) -> PromptParts:
            return PromptParts(prompt=fmt.format_map(item.payload), system=system)

        return build
    key = field or ""

    def build_from_field(item: BatchItem) -> PromptParts:
        value = item.payload.get(key)
        if value is None:
            raise KeyError(key)
        return PromptParts(prompt=str(value), system=system)

    return build_from_field
