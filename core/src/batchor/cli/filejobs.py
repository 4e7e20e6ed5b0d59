"""Turning CLI arguments into a job: pick each input's source by extension, chain several
inputs in the order given, check the prompt against every input's fields before anything
runs."""

from __future__ import annotations

import os
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from batchor.errors import ConfigurationError, SourceError
from batchor.items import BatchItem, PromptParts
from batchor.jobs import BatchJob, RetryPolicy
from batchor.providers.anthropic.codec import ANTHROPIC_ENDPOINT
from batchor.providers.anthropic.config import AnthropicProviderConfig
from batchor.providers.gemini.config import GEMINI_ENDPOINT, GeminiProviderConfig
from batchor.providers.openai.config import OpenAIProviderConfig
from batchor.providers.openai.endpoints import Endpoint, endpoint_kind
from batchor.providers.registry import ProviderConfigs
from batchor.sources.base import DEFAULT_ENCODING, CheckpointedItemSource, FileSource
from batchor.sources.composite import CompositeItemSource
from batchor.sources.csv import CsvItemSource
from batchor.sources.jsonl import JsonlItemSource
from batchor.sources.parquet import ParquetItemSource
from batchor.structured import import_model

if TYPE_CHECKING:
    from batchor.providers.azure.config import AzureEndpoint

_JSONL = (".jsonl", ".ndjson")
_PARQUET = (".parquet",)

#: The providers ``--provider`` names.
PROVIDERS = ("openai", "azure", "anthropic", "gemini")
#: Providers whose batches hold one kind of request (``--endpoint`` does not apply): the
#: endpoint each run records, and what it holds.
NATIVE_ENDPOINTS = {
    "anthropic": (ANTHROPIC_ENDPOINT, "an Anthropic Message Batch holds Messages API requests"),
    "gemini": (GEMINI_ENDPOINT, "a Gemini batch holds generateContent requests"),
}
#: Each reply's output cap with ``--provider anthropic`` when ``--max-tokens`` is not given.
DEFAULT_MAX_TOKENS = 1024
#: The request kinds ``--endpoint`` names, and each provider's path for them.
ENDPOINT_NAMES = ("responses", "chat", "embeddings")
ENDPOINT_PATHS: dict[str, dict[str, str]] = {
    "openai": {
        "responses": "/v1/responses",
        "chat": "/v1/chat/completions",
        "embeddings": "/v1/embeddings",
    },
    "azure": {"chat": "/chat/completions", "responses": "/v1/responses"},
}
#: The endpoint each provider uses when ``--endpoint`` is not given.
DEFAULT_ENDPOINT = {"openai": "responses", "azure": "chat"}
#: The API version ``--provider azure --emulate`` uses when none is given.
EMULATOR_API_VERSION = "2024-10-21"


@dataclass(frozen=True, slots=True)
class Emulated:
    """Where a built-in emulator serves a provider's API for one command.

    Attributes:
        base_url: The provider's base URL (for ``--provider azure``, the Azure endpoint).
        api_key: The key it accepts.
    """

    base_url: str
    api_key: str


def endpoint_name(value: str) -> str | None:
    """``responses``, ``chat`` or ``embeddings`` for a name or a provider's endpoint path
    (``/v1/chat/completions``, ``/chat/completions``, ...); None for anything else."""
    if value in ENDPOINT_NAMES:
        return value
    paths = {path for table in ENDPOINT_PATHS.values() for path in table.values()}
    return endpoint_kind(value) if value in paths else None


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
    endpoint: str | None
    metadata_fields: tuple[str, ...]
    max_attempts: int
    run_id: str | None
    emulate: bool
    encoding: str = DEFAULT_ENCODING
    provider: str = "openai"
    azure_endpoint: str | None = None
    api_version: str | None = None
    max_tokens: int | None = None

    @property
    def endpoint_name(self) -> str:
        """``responses``, ``chat`` or ``embeddings``: the one given, else the provider's
        default (empty for a provider without ``--endpoint``)."""
        return self.endpoint or DEFAULT_ENDPOINT.get(self.provider, "")


def check_spec(spec: JobSpec) -> str:
    """The endpoint path of the job ``spec`` describes, once its options agree with each
    other (checked before any input is opened).

    Raises:
        ConfigurationError: names the options that do not go together.
    """
    if spec.provider != "azure":
        given = [
            option
            for option, value in (
                ("--azure-endpoint", spec.azure_endpoint),
                ("--api-version", spec.api_version),
            )
            if value is not None
        ]
        if given:
            verb = "go" if len(given) > 1 else "goes"
            raise ConfigurationError(
                f"{' and '.join(given)} {verb} with --provider azure, not --provider "
                f"{spec.provider}"
            )
    if spec.max_tokens is not None and spec.provider != "anthropic":
        raise ConfigurationError(
            f"--max-tokens goes with --provider anthropic, not --provider {spec.provider}"
        )
    native = NATIVE_ENDPOINTS.get(spec.provider)
    if native is not None:
        if spec.endpoint is not None:
            raise ConfigurationError(
                f"--endpoint cannot be used with --provider {spec.provider}: {native[1]} "
                "only; leave --endpoint out"
            )
        return native[0]
    name = spec.endpoint_name
    path = ENDPOINT_PATHS[spec.provider].get(name)
    if path is None:
        raise ConfigurationError(
            f"--endpoint {name} cannot be used with --provider {spec.provider}: Azure OpenAI "
            "batch does not support embeddings (use --endpoint chat or responses, or "
            "--provider openai for embeddings)"
        )
    if name == "embeddings":
        for option, value in (("--system", spec.system), ("--schema", spec.schema)):
            if value is not None:
                raise ConfigurationError(
                    f"{option} cannot be used with --endpoint embeddings: an embedding request "
                    "takes only the text to embed, and its result is a vector"
                )
    return path


def build_job(
    spec: JobSpec,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    emulator: Emulated | None = None,
) -> BatchJob:
    """The job ``spec`` describes, its options, inputs and prompt checked. With
    ``emulator``, the job calls it (`emulated` serves the provider's API, and for
    ``--provider azure`` gives its Azure endpoint).

    Raises:
        SourceError: an input cannot be opened or lacks the id field.
        ConfigurationError: the options do not go together, or the prompt options or the
            schema are invalid.
    """
    path = check_spec(spec)
    if emulator is not None:
        api_key, base_url = emulator.api_key, emulator.base_url
    sources = open_inputs(spec.inputs, spec.id_field, spec.metadata_fields, spec.encoding)
    build = prompt_builder(
        sources, template=spec.prompt_template, field=spec.prompt_field, system=spec.system
    )
    structured = import_model(spec.schema) if spec.schema else None
    return BatchJob(
        items=job_items(sources),
        build_prompt=build,
        provider_config=provider_config(
            spec,
            path,
            base_url=base_url,
            api_key=api_key,
            api_version=EMULATOR_API_VERSION if emulator is not None else None,
        ),
        structured_output=structured,
        retry_policy=RetryPolicy(max_attempts=spec.max_attempts),
    )


def provider_config(
    spec: JobSpec,
    path: str,
    *,
    base_url: str | None,
    api_key: str | None,
    api_version: str | None = None,
) -> ProviderConfigs:
    """The provider config of the job: OpenAI's, Anthropic's (with ``--max-tokens``),
    Gemini's, or Azure OpenAI's with ``--model`` as the deployment (``base_url``, the
    emulator's, is then the Azure endpoint in place of ``--azure-endpoint``, and
    ``api_version`` the version used when neither ``--api-version`` nor
    ``OPENAI_API_VERSION`` gives one)."""
    if spec.provider == "anthropic":
        return AnthropicProviderConfig(
            model=spec.model,
            max_tokens=spec.max_tokens or DEFAULT_MAX_TOKENS,
            base_url=base_url,
            api_key=api_key,
        )
    if spec.provider == "gemini":
        return GeminiProviderConfig(model=spec.model, base_url=base_url, api_key=api_key)
    if spec.provider != "azure":
        return OpenAIProviderConfig(
            model=spec.model, endpoint=cast(Endpoint, path), base_url=base_url, api_key=api_key
        )
    from batchor.providers.azure import AzureOpenAIProviderConfig

    # Resolved here, so that the run records (and `status` shows) the resource and version.
    return AzureOpenAIProviderConfig(
        deployment=spec.model,
        endpoint=cast("AzureEndpoint", path),
        azure_endpoint=base_url or spec.azure_endpoint or env_setting("AZURE_OPENAI_ENDPOINT"),
        api_version=spec.api_version or env_setting("OPENAI_API_VERSION") or api_version,
        api_key=api_key,
    )


def env_setting(name: str) -> str | None:
    """The environment variable's value; blank counts as unset."""
    value = os.environ.get(name, "").strip()
    return value or None


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
