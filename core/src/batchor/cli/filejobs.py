"""Turning CLI arguments into a job: pick each input's source by extension, chain several
inputs in the order given, check the prompt against every input's fields before anything
runs."""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from batchor.errors import ConfigurationError, SourceError
from batchor.items import BatchItem, PromptParts
from batchor.jobs import BatchJob, RetryPolicy
from batchor.providers.openai.config import OpenAIProviderConfig
from batchor.providers.openai.endpoints import Endpoint
from batchor.sources.base import DEFAULT_ENCODING, CheckpointedItemSource, FileSource
from batchor.sources.composite import CompositeItemSource
from batchor.sources.csv import CsvItemSource
from batchor.sources.jsonl import JsonlItemSource
from batchor.sources.parquet import ParquetItemSource
from batchor.structured import import_model

_JSONL = (".jsonl", ".ndjson")
_PARQUET = (".parquet",)


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What ``run`` and ``start`` were asked to do, as given on the command line."""

    inputs: tuple[str, ...]
    id_field: str
    prompt_template: str | None
    prompt_field: str | None
    model: str
    system: str | None
    schema: str | None
    endpoint: str
    metadata_fields: tuple[str, ...]
    max_attempts: int
    run_id: str | None
    emulate: bool
    encoding: str = DEFAULT_ENCODING


def build_job(spec: JobSpec, *, base_url: str | None, api_key: str | None) -> BatchJob:
    """The job ``spec`` describes, its inputs and prompt checked.

    Raises:
        SourceError: an input cannot be opened or lacks the id field.
        ConfigurationError: the prompt options or the schema are invalid.
    """
    sources = open_inputs(spec.inputs, spec.id_field, spec.metadata_fields, spec.encoding)
    build = prompt_builder(
        sources, template=spec.prompt_template, field=spec.prompt_field, system=spec.system
    )
    structured = import_model(spec.schema) if spec.schema else None
    return BatchJob(
        items=job_items(sources),
        build_prompt=build,
        provider_config=OpenAIProviderConfig(
            model=spec.model,
            endpoint=cast(Endpoint, spec.endpoint),
            base_url=base_url,
            api_key=api_key,
        ),
        structured_output=structured,
        retry_policy=RetryPolicy(max_attempts=spec.max_attempts),
    )


def open_source(
    path: str,
    id_field: str,
    metadata_fields: tuple[str, ...] = (),
    encoding: str = DEFAULT_ENCODING,
) -> FileSource:
    """A source for ``path`` chosen by its extension (``.csv``, ``.jsonl``, ``.ndjson``,
    ``.parquet``); ``encoding`` is that of CSV and JSONL text."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return CsvItemSource(
            path, id_field=id_field, metadata_fields=metadata_fields, encoding=encoding
        )
    if suffix in _JSONL:
        return JsonlItemSource(
            path, id_field=id_field, metadata_fields=metadata_fields, encoding=encoding
        )
    if suffix in _PARQUET:
        return ParquetItemSource(path, id_field=id_field, metadata_fields=metadata_fields)
    raise SourceError(
        f"cannot tell the format of {path}: use a .csv, .jsonl, .ndjson or .parquet file"
    )


def open_inputs(
    paths: Sequence[str],
    id_field: str,
    metadata_fields: tuple[str, ...] = (),
    encoding: str = DEFAULT_ENCODING,
) -> list[FileSource]:
    """One source per input, in the order given.

    Raises:
        SourceError: an input is given twice, or cannot be opened.
    """
    seen: dict[Path, str] = {}
    for path in paths:
        resolved = Path(path).resolve()
        if resolved in seen:
            raise SourceError(f"input {path} is given twice (as {seen[resolved]} too)")
        seen[resolved] = path
    return [open_source(path, id_field, metadata_fields, encoding) for path in paths]


def job_items(sources: Sequence[FileSource]) -> CheckpointedItemSource:
    """The job's items: the one input, or several read one after another."""
    parts = [cast(CheckpointedItemSource, s) for s in sources]
    return parts[0] if len(parts) == 1 else CompositeItemSource(parts)


def input_fields(source: FileSource) -> list[str]:
    """The field names of the input: the CSV header or Parquet columns, or the first JSONL
    object's keys."""
    if isinstance(source, CsvItemSource | ParquetItemSource):
        return source.columns
    if not isinstance(source, JsonlItemSource):
        return []
    first = next(source.iter_from(None), None)  # a bad first line is reported, naming it
    return [] if first is None else list(first[0].payload)


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
    sources: Sequence[FileSource],
    *,
    template: str | None,
    field: str | None,
    system: str | None,
) -> Callable[[BatchItem], PromptParts]:
    """A ``build_prompt`` from ``--prompt-template`` or ``--prompt-field``, checked against
    every input's fields.

    Raises:
        ConfigurationError: neither or both given, or they name a field an input lacks.
    """
    if (template is None) == (field is None):
        raise ConfigurationError("give exactly one of --prompt-template and --prompt-field")
    wanted = template_fields(template) if template is not None else [field or ""]
    for source in sources:
        fields = input_fields(source)
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
