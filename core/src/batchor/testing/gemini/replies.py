"""The lines of a batch output file: ``{"key", "response": GenerateContentResponse}`` or
``{"key", "error": google.rpc.Status}``.

Text requests are answered with an echo of the prompt, structured ones (``application/json``
with a schema) with JSON that validates against it, ``text/x.enum`` ones with one of the enum
values. A reply longer than ``maxOutputTokens`` is cut and finishes ``MAX_TOKENS``.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Mapping
from typing import Any

from batchor.testing.emulator.faults import LineFault
from batchor.testing.emulator.schema_text import SchemaCache
from batchor.testing.emulator.schemas import Entropy
from batchor.testing.gemini.errors import rpc_status
from batchor.testing.gemini.lines import LineRefused, Plan, plan_request

_encode = json.JSONEncoder(separators=(",", ":")).encode
_CHARS_PER_TOKEN = 4
LINE_ERRORS: dict[str, tuple[str, str]] = {
    "server_error": ("INTERNAL", "Internal error encountered."),
    "rate_limit": ("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota)."),
    "bad_request": ("INVALID_ARGUMENT", "Request contains an invalid argument."),
}
"""The ``error`` of a line faulted with each `LineFault` that answers with an error."""


def tokens(chars: int) -> int:
    """The usual rough estimate: one token per four characters, at least one."""
    return chars // _CHARS_PER_TOKEN or 1


def _mismatch(schema: Any) -> str:
    """Valid JSON that does not validate against ``schema``."""
    if isinstance(schema, Mapping):
        if schema.get("required"):
            return "{}"
        if schema.get("type") == "object" or "properties" in schema:
            return "[]"
    return '{"unexpected":true}'


def _truncate(text: str) -> str:
    """Text that is not valid JSON: the first half of ``text`` (an opening brace if need be)."""
    cut = text[: max(1, len(text) // 2)]
    try:
        json.loads(cut)
    except ValueError:
        return cut
    return "{" + cut


class Replier:
    """Answers request lines for one model; holds the compiled-schema cache."""

    def __init__(self, model: str) -> None:
        """Answer as ``model`` (``models/...``)."""
        self._model_version = model.removeprefix("models/")
        self._schemas = SchemaCache()

    def text(self, plan: Plan, fault: LineFault | None) -> str:
        """The reply text for ``plan`` under ``fault``."""
        if fault == "schema_mismatch":
            return _mismatch(plan.schema)
        if plan.enum is not None:
            text = plan.enum[Entropy.for_text(plan.prompt).below(len(plan.enum))]
        elif plan.schema is not None:
            text = self._schemas.generator(plan.schema)(Entropy.for_text(plan.prompt))
        elif plan.mime_type == "application/json" or fault == "invalid_json":
            text = _encode({"text": "Echo: " + plan.prompt})
        else:
            text = "Echo: " + plan.prompt
        return _truncate(text) if fault == "invalid_json" else text

    def response(self, plan: Plan, fault: LineFault | None) -> dict[str, Any]:
        """The ``GenerateContentResponse`` answering ``plan``."""
        text = self.text(plan, fault)
        finish = "STOP"
        output_tokens = tokens(len(text))
        limit = plan.max_output_tokens
        if limit is not None and output_tokens > limit:
            text = text[: limit * _CHARS_PER_TOKEN]
            finish = "MAX_TOKENS"
            output_tokens = limit
        input_tokens = tokens(len(plan.prompt) + plan.other_chars)
        return {
            "candidates": [
                {
                    "content": {"parts": [{"text": text}], "role": "model"},
                    "finishReason": finish,
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": input_tokens,
                "candidatesTokenCount": output_tokens,
                "totalTokenCount": input_tokens + output_tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": input_tokens}],
            },
            "modelVersion": self._model_version,
            "responseId": base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("="),
        }


def output_line(key: str | None, **payload: Any) -> dict[str, Any]:
    """An output line: ``key`` (when the input line had one), then ``response`` or ``error``."""
    line: dict[str, Any] = {} if key is None else {"key": key}
    line.update(payload)
    return line


def error_line(key: str | None, status: str, message: str) -> dict[str, Any]:
    """An output line answering a request with an error."""
    return output_line(key, error=rpc_status(status, message))


def answer(
    replier: Replier, key: str | None, request: Any, fault: LineFault | None
) -> dict[str, Any]:
    """The output line answering one ``GenerateContentRequest`` under ``fault``: an
    ``INVALID_ARGUMENT`` error for a request the API refuses, the fault's error, or the
    reply (a batch line and a synchronous request are answered alike)."""
    try:
        plan = plan_request(request)
    except LineRefused as exc:
        return error_line(key, "INVALID_ARGUMENT", str(exc))
    if fault is not None and fault in LINE_ERRORS:
        return error_line(key, *LINE_ERRORS[fault])
    return output_line(key, response=replier.response(plan, fault))
