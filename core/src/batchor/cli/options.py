"""Options shared by several commands: the store, ``--json``, ``--poll-interval`` and the
job options of ``run`` and ``start``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

import click

from batchor.cli.filejobs import (
    DEFAULT_MAX_TOKENS,
    ENDPOINT_NAMES,
    PROVIDERS,
    JobSpec,
    endpoint_name,
)

F = TypeVar("F", bound=Callable[..., Any])

_JOB_FIELDS = tuple(f.name for f in fields(JobSpec))


def store_options(func: F) -> F:
    """``--store`` and ``--artifacts``, with their environment variables."""
    func = click.option(
        "--artifacts",
        envvar="BATCHOR_ARTIFACTS",
        help="Artifact directory or object-store URL such as s3://bucket/prefix "
        "[env BATCHOR_ARTIFACTS; default .batchor/artifacts].",
    )(func)
    func = click.option(
        "--store",
        envvar="BATCHOR_STORE",
        help="Store URL [env BATCHOR_STORE; default sqlite:///.batchor/batchor.db].",
    )(func)
    return func


def json_option(func: F) -> F:
    """``--json``: one JSON document on stdout instead of tables."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print one JSON document on stdout and nothing else there.",
    )(func)


def poll_interval_option(func: F) -> F:
    """``--poll-interval``: the longest pause between status checks."""
    return click.option(
        "--poll-interval",
        type=click.FloatRange(0.01),
        default=5.0,
        show_default=True,
        help="Longest pause between status checks, in seconds.",
    )(func)


class EndpointChoice(click.Choice[str]):
    """``responses``, ``chat`` or ``embeddings``; a provider's endpoint path
    (``/v1/chat/completions``, ...) is taken too and becomes its name."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if isinstance(value, str):
            name = endpoint_name(value)
            if name is not None:
                return name
        return str(super().convert(value, param, ctx))


def job_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options that describe a file-based job; the command receives them as one
    `JobSpec` (its first argument) and its own options as keywords."""

    @functools.wraps(func)
    def command(**kwargs: Any) -> Any:
        spec = JobSpec(**{name: kwargs.pop(name) for name in _JOB_FIELDS})
        return func(spec, **kwargs)

    for option in reversed(_JOB_OPTIONS):
        command = option(command)
    return command


_JOB_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    click.argument("inputs", metavar="INPUT...", nargs=-1, required=True),
    click.option("--id-field", required=True, help="Field (column) holding each item's id."),
    click.option(
        "--prompt-template", help='Prompt with {field} placeholders, e.g. "Rate: {text}".'
    ),
    click.option("--prompt-field", help="Field whose value is the whole prompt."),
    click.option(
        "--model",
        required=True,
        help="Model name, e.g. gpt-4.1-mini, claude-haiku-4-5 or gemini-2.5-flash; with "
        "--provider azure, the deployment name.",
    ),
    click.option("--system", help="System prompt (instructions); not with embeddings."),
    click.option(
        "--schema",
        help="Pydantic model for structured output, as module:Class; not with embeddings.",
    ),
    click.option(
        "--provider",
        type=click.Choice(PROVIDERS, case_sensitive=False),
        default="openai",
        show_default=True,
        help="Whose batch API: openai (key in OPENAI_API_KEY); azure (Azure OpenAI: "
        "--model names the deployment, the key is in AZURE_OPENAI_API_KEY; see "
        "--azure-endpoint and --api-version); anthropic (Message Batches, key in "
        "ANTHROPIC_API_KEY; pip install 'batchor[anthropic]'; see --max-tokens); or gemini "
        "(Batch Mode, key in GEMINI_API_KEY; pip install 'batchor[gemini]').",
    ),
    click.option(
        "--endpoint",
        type=EndpointChoice(ENDPOINT_NAMES),
        help="What each request asks for: responses (the Responses API; default with "
        "openai), chat (Chat Completions; default with azure) or embeddings (each result is "
        "a vector; openai only). A path such as /v1/chat/completions is taken too. Not "
        "with anthropic or gemini, whose batches hold one kind of request.",
    ),
    click.option(
        "--max-tokens",
        type=click.IntRange(1),
        help="With --provider anthropic: the most output tokens of each reply (the Messages "
        f"API requires a cap; a reply cut off there fails the item) [default "
        f"{DEFAULT_MAX_TOKENS}].",
    ),
    click.option(
        "--azure-endpoint",
        help="With --provider azure: the resource's endpoint, e.g. "
        "https://NAME.openai.azure.com [env AZURE_OPENAI_ENDPOINT].",
    ),
    click.option(
        "--api-version",
        help="With --provider azure: the Azure OpenAI API version, e.g. 2024-10-21 "
        "[env OPENAI_API_VERSION].",
    ),
    click.option(
        "--metadata-field",
        "metadata_fields",
        multiple=True,
        help="Field copied into each result's metadata (repeatable).",
    ),
    click.option("--max-attempts", type=click.IntRange(1), default=3, show_default=True),
    click.option(
        "--encoding",
        default="utf-8",
        show_default=True,
        help="Text encoding of CSV and JSONL inputs, e.g. latin-1 (Parquet is always UTF-8).",
    ),
    click.option("--run-id", help="Stable run id: the same id resumes the same run."),
    click.option(
        "--emulate",
        is_flag=True,
        help="Run against a built-in emulator of the provider's batch API (OpenAI's, Azure "
        "OpenAI's, Anthropic's or Gemini's, as --provider says); needs no key.",
    ),
]
