"""Gemini Batch Mode's wire format: request lines ``{"key", "request": GenerateContentRequest}``,
output lines ``{"key", "response": GenerateContentResponse}`` or ``{"key", "error": Status}``,
and what a batch that ended without answering every line means.

Request fields are written in snake_case, the proto field names, as the Batch API guide's
JSONL examples do (``generation_config``); the API's proto JSON parser takes either spelling.
Structured output is ``response_mime_type: application/json`` with the job's JSON schema as
``response_json_schema``, the field that takes JSON Schema as is (``$defs``, ``$ref``,
``anyOf``, ``additionalProperties``); ``response_schema`` takes only Gemini's OpenAPI subset,
into which batchor's strict schema would have to be rewritten, losing ``$ref`` and
``additionalProperties``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from batchor.items import PromptParts
from batchor.providers.base import BatchVerdict, Reply

#: ``google.rpc.Code`` names by number (per-line errors and a failed batch's error carry the
#: number).
RPC_CODES: dict[int, str] = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    15: "DATA_LOSS",
    16: "UNAUTHENTICATED",
}
_BY_NAME = {name: code for code, name in RPC_CODES.items()}
# Line errors worth another attempt: overload, rate and quota limits, internal errors,
# timeouts, aborted work. Everything else (INVALID_ARGUMENT above all) fails at once.
_RETRYABLE = frozenset({4, 8, 10, 13, 14})
# A line the batch cancelled was never run: requeued without charging an attempt.
_NOT_RUN = frozenset({1})
# Finish reasons of a reply the model stopped for its content: asking again gives the same.
_BLOCKED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "LANGUAGE",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_FINISHED = frozenset({"STOP", "FINISH_REASON_UNSPECIFIED"})
CHARS_PER_TOKEN = 4
_FRAMING_TOKENS = 8  # role markers and separators around each turn
_MESSAGE_CHARS = 2000


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def rpc_name(code: Any) -> str:
    """The canonical name of a ``google.rpc.Code`` number (or the name itself)."""
    if isinstance(code, int) and not isinstance(code, bool):
        return RPC_CODES.get(code, f"CODE_{code}")
    return str(code or "UNKNOWN")


def rpc_number(code: Any) -> int | None:
    """The ``google.rpc.Code`` number of a number or a canonical name."""
    if isinstance(code, int) and not isinstance(code, bool):
        return code
    if isinstance(code, str):
        return int(code) if code.isdigit() else _BY_NAME.get(code)
    return None


class GeminiCodec:
    """Request and output lines of one job.

    The parts shared by every request (the generation config and the schema) are serialised
    once; per item only the prompt is encoded. Output is compact JSON with a fixed key order,
    so the same prompt always gives the same bytes (and the same hash).

    Args:
        model: The model (``gemini-...`` or ``models/gemini-...``).
        params: ``generation_config`` fields for every request.
        schema: The structured-output JSON schema, if any.
    """

    output_kind = "text"

    def __init__(
        self,
        *,
        model: str,
        params: Mapping[str, Any],
        schema: dict[str, Any] | None = None,
    ) -> None:
        name = model if model.startswith("models/") else f"models/{model}"
        #: The REST method the batch is created with; the transport takes the model from it.
        self.endpoint = f"{name}:batchGenerateContent"
        config: dict[str, Any] = dict(params)
        if schema is not None:
            config["response_mime_type"] = "application/json"
            config["response_json_schema"] = schema
        self._tail = (b',"generation_config":' + _dumps(config) if config else b"") + b"}"

    def encode_body(self, parts: PromptParts) -> bytes:
        """The ``GenerateContentRequest`` of one prompt (UTF-8 JSON): the prompt as the user
        turn, the system prompt (if any) as the system instruction.

        Raises:
            TypeError: the text cannot be encoded (e.g. a lone surrogate).
        """
        body = b'{"contents":[{"role":"user","parts":[{"text":' + _dumps(parts.prompt) + b"}]}]"
        if parts.system:
            body += b',"system_instruction":{"parts":[{"text":' + _dumps(parts.system) + b"}]}"
        return body + self._tail

    def frame(self, seq: int, body: bytes) -> bytes:
        """The input line of item ``seq`` (its key is the seq)."""
        return b'{"key":"%d","request":%s}\n' % (seq, body)

    def decode(self, line: bytes) -> tuple[int, Reply | None] | None:
        """One output line: ``(seq, reply)``; ``(seq, None)`` for a request the batch
        cancelled before running it; ``None`` if the line is not a keyed result (an input
        line so broken the API could not read its key)."""
        try:
            parsed = orjson.loads(line)
            seq = int(parsed["key"])
        except (ValueError, KeyError, TypeError):
            return None
        response = parsed.get("response")
        if isinstance(response, dict):
            return seq, read_response(response)
        error = parsed.get("error")
        if not isinstance(error, dict):
            return seq, Reply(None, None, "invalid_response", "line has no response", True)
        number = rpc_number(error.get("code"))
        if number in _NOT_RUN:
            return seq, None
        message = f"{rpc_name(number)}: {error.get('message', '')}"[:_MESSAGE_CHARS]
        if number in _RETRYABLE:
            kind = "rate_limited" if number == 8 else "server_error"
            return seq, Reply(None, None, kind, message, True)
        return seq, Reply(None, None, "invalid_request", message, False)

    def batch_verdict(self, status: str, errors: list[tuple[str, str]]) -> BatchVerdict:
        """An expired or cancelled batch never ran its unanswered items (free requeue); a
        completed one should have answered them all; a failed one charges them, unless it
        failed ``RESOURCE_EXHAUSTED`` (the enqueued-token limit or the account's quota, which
        says nothing about the items): then they are requeued free and packing backs off, or,
        where the message points at billing, the run pauses."""
        codes = {code for code, _ in errors}
        if status in ("expired", "cancelled"):
            return BatchVerdict(charge=None)
        if status == "completed":
            missing = "the provider's completed batch has no line for this item"
            return BatchVerdict(charge=("missing_output", missing))
        if codes == {"RESOURCE_EXHAUSTED"}:
            message = "; ".join(f"{code}: {msg}" for code, msg in errors)
            if "billing" in message.lower():
                return BatchVerdict(charge=None, pause_reason=message[:_MESSAGE_CHARS])
            return BatchVerdict(charge=None, capacity=True)
        message = "; ".join(f"{code}: {msg}" for code, msg in errors) or f"batch {status}"
        return BatchVerdict(charge=("batch_failed", message[:_MESSAGE_CHARS]))

    def estimate_tokens(self, parts: PromptParts) -> int:
        """Estimated input tokens: one per 4 characters, rounded up, and a few for framing
        (Gemini's tokenizer is not available offline; leave headroom in
        ``enqueued_token_limit`` for code and non-Latin scripts)."""
        chars = len(parts.prompt) + (len(parts.system) + 1 if parts.system else 0)
        return -(-chars // CHARS_PER_TOKEN) + _FRAMING_TOKENS


def _usage(raw: Any) -> tuple[int, int] | None:
    """``(input, output)`` tokens: the prompt's, and the candidates' with the thinking
    tokens (billed as output)."""
    if type(raw) is not dict:
        return None
    output = int(raw.get("candidatesTokenCount") or 0) + int(raw.get("thoughtsTokenCount") or 0)
    return int(raw.get("promptTokenCount") or 0), output


def read_response(response: dict[str, Any]) -> Reply:
    """Interpret one ``GenerateContentResponse``: its first candidate's text, or why there is
    none."""
    usage = _usage(response.get("usageMetadata"))
    candidates = response.get("candidates")
    if type(candidates) is not list or not candidates or type(candidates[0]) is not dict:
        feedback = response.get("promptFeedback")
        block = feedback.get("blockReason") if type(feedback) is dict else None
        if block:
            return Reply(None, usage, "refusal", f"prompt blocked: {block}", False)
        return Reply(None, usage, "invalid_response", "reply has no candidates", True)
    candidate = candidates[0]
    finish = candidate.get("finishReason")
    texts: list[str] = []
    content = candidate.get("content")
    parts = content.get("parts") if type(content) is dict else None
    if type(parts) is list:
        for part in parts:
            if type(part) is dict and not part.get("thought"):
                text = part.get("text")
                if type(text) is str:
                    texts.append(text)
    if finish is None or finish in _FINISHED:
        if texts:
            return Reply(texts[0] if len(texts) == 1 else "".join(texts), usage)
        return Reply(None, usage, "invalid_response", "reply has no text", True)
    if finish == "MAX_TOKENS":
        return Reply(None, usage, "incomplete", "reply cut off at the token limit", False)
    if finish in _BLOCKED:
        return Reply(None, usage, "refusal", f"reply blocked: {finish}", False)
    return Reply(None, usage, "invalid_response", f"reply ended {finish}", True)
