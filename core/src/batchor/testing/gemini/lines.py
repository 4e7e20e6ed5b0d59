"""Reading one line of a batch input file: ``{"key": ..., "request": GenerateContentRequest}``.

Proto JSON accepts every field in camelCase or snake_case, so both are read. A request the
API would refuse is answered, on its own line, with an ``INVALID_ARGUMENT`` error; the
messages follow the API's ``* GenerateContentRequest.<field>: ...`` wording.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchor.testing.gemini.errors import unknown_field_message
from batchor.testing.gemini.schema import enum_values, to_json_schema
from batchor.testing.gemini.wire import both_spellings, field

REQUEST_FIELDS = both_spellings(
    "model",
    "contents",
    "tools",
    "toolConfig",
    "safetySettings",
    "systemInstruction",
    "generationConfig",
    "cachedContent",
)
"""The fields of a ``GenerateContentRequest``."""
GENERATION_CONFIG_FIELDS = both_spellings(
    "stopSequences",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "_responseJsonSchema",
    "responseModalities",
    "candidateCount",
    "maxOutputTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseLogprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "speechConfig",
    "thinkingConfig",
    "imageConfig",
    "mediaResolution",
)
"""The fields of a ``GenerationConfig``."""
MIME_TYPES = frozenset(
    {"text/plain", "application/json", "application/xml", "application/yaml", "text/x.enum"}
)
_STRUCTURED = frozenset({"application/json", "text/x.enum"})


class LineRefused(ValueError):
    """The request of a line is one the API answers with an ``INVALID_ARGUMENT`` error."""


@dataclass(frozen=True)
class Plan:
    """What a valid request asks for."""

    prompt: str
    """The text of the last user turn."""
    other_chars: int
    """Characters of the rest of the input (system instruction, earlier turns)."""
    mime_type: str
    schema: Any
    """The JSON Schema the reply must satisfy, or ``None``."""
    enum: list[str] | None
    """The values of a ``text/x.enum`` reply."""
    max_output_tokens: int | None


def split_line(raw: str) -> tuple[str | None, Any]:
    """The ``key`` and ``request`` of one input line; `LineRefused` if it is not a JSON
    object (then without a key)."""
    try:
        line = json.loads(raw)
    except ValueError as exc:
        raise LineRefused(f"Invalid JSON payload received. {exc}.") from exc
    if not isinstance(line, dict):
        raise LineRefused("Invalid JSON payload received. Expected an object.")
    key = line.get("key")
    return (key if isinstance(key, str) else None), line.get("request")


def _parts_text(content: Any) -> tuple[str, int]:
    """The text of a ``Content`` (or a plain string) and how many parts it has."""
    if isinstance(content, str):
        return content, 1
    if not isinstance(content, Mapping):
        return "", 0
    parts = content.get("parts")
    if not isinstance(parts, list):
        return "", 0
    texts = [str(p["text"]) for p in parts if isinstance(p, Mapping) and "text" in p]
    return "\n".join(texts), len(parts)


def _check_fields(body: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    for name in body:
        if name not in known:
            raise LineRefused(unknown_field_message(name, where))


def plan_request(request: Any) -> Plan:
    """Check a ``GenerateContentRequest`` as the API does; `LineRefused` if it would fail."""
    if not isinstance(request, Mapping):
        raise LineRefused("* GenerateContentRequest: request is not specified\n")
    _check_fields(request, REQUEST_FIELDS, "request")
    contents = request.get("contents")
    if not isinstance(contents, list) or not contents:
        raise LineRefused("* GenerateContentRequest.contents: contents is not specified\n")
    prompt = ""
    other = 0
    for index, content in enumerate(contents):
        text, parts = _parts_text(content)
        if parts == 0:
            raise LineRefused(
                f"* GenerateContentRequest.contents[{index}].parts: contents.parts must not "
                "be empty.\n"
            )
        role = content.get("role", "user") if isinstance(content, Mapping) else "user"
        if role in ("user", "", None):
            other += len(prompt)
            prompt = text
        else:
            other += len(text)
    system = field(request, "systemInstruction", "system_instruction")
    if system is not None:
        other += len(_parts_text(system)[0])
    config = field(request, "generationConfig", "generation_config") or {}
    if not isinstance(config, Mapping):
        raise LineRefused("* GenerateContentRequest.generation_config: must be an object.\n")
    last = _last_output
    output = last[1] if last is not None and last[0] == config else _output(config)
    mime, schema, enum, limit = output
    return Plan(prompt, other, mime, schema, enum, limit)


Output = tuple[str, Any, list[str] | None, int | None]
"""What a ``GenerationConfig`` asks of the reply: MIME type, JSON Schema, enum values and
the output token limit."""
_last_output: tuple[Mapping[str, Any], Output] | None = None
"""The last generation config checked and its `Output`: consecutive lines of a batch
usually share one, so it is checked and its schema converted once (replaced atomically)."""


def _output(config: Mapping[str, Any]) -> Output:
    global _last_output
    _check_fields(config, GENERATION_CONFIG_FIELDS, "request.generation_config")
    where = "* GenerateContentRequest.generation_config"
    mime = field(config, "responseMimeType", "response_mime_type") or "text/plain"
    if mime not in MIME_TYPES:
        raise LineRefused(
            f"{where}.response_mime_type: allowed mimetypes are `text/plain`, "
            "`application/json`, `application/xml`, `application/yaml` and `text/x.enum`.\n"
        )
    gemini_schema = field(config, "responseSchema", "response_schema")
    json_schema = field(config, "responseJsonSchema", "response_json_schema")
    if json_schema is None:
        json_schema = field(config, "_responseJsonSchema", "_response_json_schema")
    if gemini_schema is not None and json_schema is not None:
        raise LineRefused(
            f"{where}: response_schema and response_json_schema cannot both be set.\n"
        )
    schema = to_json_schema(gemini_schema) if gemini_schema is not None else json_schema
    if schema is not None and mime not in _STRUCTURED:
        raise LineRefused(
            f"{where}.response_mime_type: response_mime_type must be one of "
            "[application/json, text/x.enum] when a response schema is set.\n"
        )
    enum = enum_values(schema) if mime == "text/x.enum" else None
    if mime == "text/x.enum" and enum is None:
        raise LineRefused(f"{where}.response_schema: text/x.enum needs an enum schema.\n")
    limit = field(config, "maxOutputTokens", "max_output_tokens")
    if isinstance(limit, str) and limit.isdigit():  # proto JSON takes numbers as strings too
        limit = int(limit)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise LineRefused(f"{where}.max_output_tokens: must be a positive integer.\n")
    temperature = config.get("temperature")
    if isinstance(temperature, int | float) and not 0 <= temperature <= 2:
        raise LineRefused(f"{where}.temperature: temperature must be in the range [0.0, 2.0].\n")
    output: Output = (str(mime), schema if mime == "application/json" else None, enum, limit)
    _last_output = (config, output)
    return output
