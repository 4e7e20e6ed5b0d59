"""Generation of realistic, deterministic batch output lines for each request line.

Text requests are answered with an echo of the prompt; structured requests with JSON that
validates against the requested schema; faulted lines with the matching error shapes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from batchor.testing.emulator.faults import LineFault
from batchor.testing.emulator.schemas import Entropy, SchemaCache

_ENCODER = json.JSONEncoder(separators=(",", ":"))
_encode = _ENCODER.encode
_JSON_OBJECT = object()  # marker: ``json_object`` response format
_MASK = (1 << 64) - 1
_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "server_error": (
        500,
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    "rate_limit": (
        429,
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached for {model} on requests per min (RPM). Please try again later.",
    ),
    "bad_request": (
        400,
        "invalid_request_error",
        None,
        "Invalid request: the emulator was asked to reject this request.",
    ),
}


class Answer(NamedTuple):
    """One answered request line."""

    line: str
    """The JSON line (without newline) for the output or error file."""
    is_error: bool
    """Whether the line belongs in the error file (non-2xx status)."""
    input_tokens: int
    """Estimated prompt tokens."""
    output_tokens: int
    """Estimated completion tokens."""


def estimate_tokens(text: str) -> int:
    """The usual rough estimate: one token per four characters, at least one."""
    return max(1, len(text) // 4)


def _text_of(content: Any, part_types: tuple[str, ...]) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, Mapping) and part.get("type") in part_types
        )
    return ""


def _last_user_text(messages: Any, part_types: tuple[str, ...]) -> str:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return _text_of(message.get("content"), part_types)
    return ""


def extract_prompt(endpoint: str, body: Mapping[str, Any]) -> str:
    """The prompt a request asks about: the last user message (or the plain input)."""
    if endpoint == "/v1/chat/completions":
        return _last_user_text(body.get("messages"), ("text",))
    if endpoint == "/v1/responses":
        value = body.get("input")
        if isinstance(value, str):
            return value
        return _last_user_text(value, ("input_text", "text"))
    value = body.get("prompt" if endpoint == "/v1/completions" else "input")
    if isinstance(value, list):
        return " ".join(str(v) for v in value)
    return "" if value is None else str(value)


def requested_schema(endpoint: str, body: Mapping[str, Any]) -> Any:
    """The JSON schema a request asks the reply to follow, a ``json_object`` marker, or None."""
    fmt: Any = None
    if endpoint == "/v1/chat/completions":
        fmt = body.get("response_format")
        if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
            spec = fmt.get("json_schema")
            return spec.get("schema", {}) if isinstance(spec, Mapping) else {}
    elif endpoint == "/v1/responses":
        text = body.get("text")
        fmt = text.get("format") if isinstance(text, Mapping) else None
        if isinstance(fmt, Mapping) and fmt.get("type") == "json_schema":
            return fmt.get("schema", {})
    if isinstance(fmt, Mapping) and fmt.get("type") == "json_object":
        return _JSON_OBJECT
    return None


def _mismatch(schema: Any) -> str:
    """Valid JSON that does not validate against ``schema``."""
    if isinstance(schema, Mapping):
        if schema.get("required"):
            return "{}"
        if schema.get("type") == "object" or "properties" in schema:
            return "[]"
    return '{"unexpected":true}'


def _truncate(content: str) -> str:
    cut = content[: max(1, len(content) // 2)]
    try:
        json.loads(cut)
    except ValueError:
        return cut
    return "{" + cut


class ReplyFactory:
    """Build output lines; holds the per-emulator schema cache and id generator."""

    def __init__(self) -> None:
        """Create a factory with an empty schema cache."""
        self._schemas = SchemaCache()
        self._salt = int.from_bytes(os.urandom(8), "big")
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def _id(self) -> str:
        """A unique 32-hex-digit id (cheap: a scrambled counter behind a random prefix)."""
        scrambled = (next(self._counter) * 0x9E3779B97F4A7C15 ^ self._salt) & _MASK
        return f"{self._prefix}{scrambled:016x}"

    def content(self, prompt: str, schema: Any, fault: LineFault | None) -> str:
        """The assistant's reply text for ``prompt`` under ``schema`` and ``fault``."""
        if fault == "schema_mismatch":
            return _mismatch(schema)
        if schema is _JSON_OBJECT:
            text = _encode({"echo": prompt})
        elif schema is not None:
            text = _encode(self._schemas.generator(schema)(Entropy.for_text(prompt)))
        elif fault == "invalid_json":
            text = _encode({"text": "Echo: " + prompt})
        else:
            text = "Echo: " + prompt
        return _truncate(text) if fault == "invalid_json" else text

    def answer(
        self,
        endpoint: str,
        custom_id: str,
        body: Mapping[str, Any],
        fault: LineFault | None,
        now: int,
    ) -> Answer:
        """Answer one request line of a batch."""
        model = body.get("model")
        model = model if isinstance(model, str) else ""
        if fault is not None and fault in _ERRORS:
            return self._error_answer(custom_id, model, fault)
        prompt = extract_prompt(endpoint, body)
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            input_tokens = estimate_tokens(prompt + instructions)
        else:
            input_tokens, instructions = estimate_tokens(prompt), None
        if endpoint == "/v1/embeddings":
            reply, output_tokens = self._embedding(prompt, model, input_tokens), 0
        else:
            text = self.content(prompt, requested_schema(endpoint, body), fault)
            output_tokens = estimate_tokens(text)
            reply = self._reply(
                endpoint, model, instructions, text, now, input_tokens, output_tokens
            )
        line = (
            f'{{"id":"batch_req_{self._id()}","custom_id":{_encode(custom_id)},'
            f'"response":{{"status_code":200,"request_id":"{self._id()}","body":{reply}}},'
            f'"error":null}}'
        )
        return Answer(line, False, input_tokens, output_tokens)

    def unexecuted(self, custom_id: str, code: str, message: str) -> str:
        """The error-file line of a request never executed (batch expired or cancelled)."""
        line = {
            "id": "batch_req_" + self._id(),
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
        return _encode(line)

    def _error_answer(self, custom_id: str, model: str, fault: str) -> Answer:
        status, kind, code, message = _ERRORS[fault]
        error = {
            "message": message.format(model=model or "the model"),
            "type": kind,
            "param": None,
            "code": code,
        }
        line = {
            "id": "batch_req_" + self._id(),
            "custom_id": custom_id,
            "response": {"status_code": status, "request_id": self._id(), "body": {"error": error}},
            "error": None,
        }
        return Answer(_encode(line), True, 0, 0)

    def _reply(
        self,
        endpoint: str,
        model: str,
        instructions: str | None,
        text: str,
        now: int,
        input_tokens: int,
        output_tokens: int,
    ) -> str:
        total = input_tokens + output_tokens
        if endpoint == "/v1/responses":
            return (
                f'{{"id":"resp_{self._id()}","object":"response","created_at":{now},'
                f'"status":"completed","error":null,"incomplete_details":null,'
                f'"instructions":{"null" if instructions is None else _encode(instructions)},'
                f'"model":{_encode(model)},'
                f'"output":[{{"type":"message","id":"msg_{self._id()}","status":"completed",'
                f'"role":"assistant","content":[{{"type":"output_text","text":{_encode(text)},'
                f'"annotations":[]}}]}}],"parallel_tool_calls":true,"tool_choice":"auto",'
                f'"tools":[],"usage":{{"input_tokens":{input_tokens},'
                f'"input_tokens_details":{{"cached_tokens":0,"cache_write_tokens":0}},"output_tokens":{output_tokens},'
                f'"output_tokens_details":{{"reasoning_tokens":0}},"total_tokens":{total}}}}}'
            )
        usage = (
            f'{{"prompt_tokens":{input_tokens},"completion_tokens":{output_tokens},'
            f'"total_tokens":{total}}}'
        )
        if endpoint == "/v1/completions":
            return (
                f'{{"id":"cmpl-{self._id()}","object":"text_completion","created":{now},'
                f'"model":{_encode(model)},"choices":[{{"text":{_encode(text)},"index":0,'
                f'"logprobs":null,"finish_reason":"stop"}}],"usage":{usage}}}'
            )
        return (
            f'{{"id":"chatcmpl-{self._id()}","object":"chat.completion","created":{now},'
            f'"model":{_encode(model)},"choices":[{{"index":0,"message":{{"role":"assistant",'
            f'"content":{_encode(text)},"refusal":null}},"logprobs":null,'
            f'"finish_reason":"stop"}}],"usage":{usage}}}'
        )

    def _embedding(self, prompt: str, model: str, input_tokens: int) -> str:
        digest = hashlib.blake2b(prompt.encode("utf-8", "replace"), digest_size=8).digest()
        vector = [round(b / 255 * 2 - 1, 4) for b in digest]
        return _encode(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": vector}],
                "model": model,
                "usage": {"prompt_tokens": input_tokens, "total_tokens": input_tokens},
            }
        )
