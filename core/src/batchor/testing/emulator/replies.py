"""Generation of realistic, deterministic batch output lines for each request line.

Text requests are answered with an echo of the prompt; structured requests with JSON that
validates against the requested schema; embeddings requests with deterministic unit vectors
(`batchor.testing.emulator.embeddings`); faulted lines with the matching error shapes.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping
from typing import Any

from batchor.testing.emulator.embeddings import EMBEDDINGS, Embedder
from batchor.testing.emulator.faults import LineFault
from batchor.testing.emulator.schema_text import SchemaCache
from batchor.testing.emulator.schemas import Entropy, strict_refusal

_ENCODER = json.JSONEncoder(separators=(",", ":"))
_encode = _ENCODER.encode
_quote = json.encoder.encode_basestring_ascii
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


Answer = tuple[str, bool, int, int]
"""One answered request line: the JSON line (without newline), whether it belongs in the
error file (non-2xx status), and the estimated input and output tokens."""


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


class _Ids:
    """Unique 32-hex-digit ids, cheaply: a random prefix per kind of id, then a serial.

    The serial steps from a random start by an odd constant modulo 2**64 (a bijection of the
    step count), so serials are distinct and look random; the ids of one line share their
    serial but not their prefix.
    """

    def __init__(self) -> None:
        self._counter = itertools.count(int.from_bytes(os.urandom(8), "big"), 0x9E3779B97F4A7C15)
        prefixes: set[str] = set()
        while len(prefixes) < 4:
            prefixes.add(os.urandom(8).hex())
        self.line, self.request, self.body, self.message = sorted(prefixes)

    def serial(self) -> str:
        """The next serial, as 16 hex digits."""
        return f"{next(self._counter) & _MASK:016x}"


def _body_format(endpoint: str, ids: _Ids, model: str, instructions: str | None) -> str:
    """The %-format of a successful reply body (escaped constants, placeholders for the rest).

    Placeholders: body id serial, created, [message id serial,] text, tokens in/out/total.
    """
    model_json = _encode(model).replace("%", "%%")
    if endpoint == "/v1/responses":
        given = "null" if instructions is None else _encode(instructions).replace("%", "%%")
        return (
            f'{{"id":"resp_{ids.body}%s","object":"response","created_at":%d,'
            f'"status":"completed","error":null,"incomplete_details":null,'
            f'"instructions":{given},"model":{model_json},'
            f'"output":[{{"type":"message","id":"msg_{ids.message}%s","status":"completed",'
            f'"role":"assistant","content":[{{"type":"output_text","text":%s,'
            f'"annotations":[]}}]}}],"parallel_tool_calls":true,"tool_choice":"auto",'
            f'"tools":[],"usage":{{"input_tokens":%d,'
            f'"input_tokens_details":{{"cached_tokens":0,"cache_write_tokens":0}},'
            f'"output_tokens":%d,"output_tokens_details":{{"reasoning_tokens":0}},'
            f'"total_tokens":%d}}}}'
        )
    usage = '"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}'
    if endpoint == "/v1/completions":
        return (
            f'{{"id":"cmpl-{ids.body}%s","object":"text_completion","created":%d,'
            f'"model":{model_json},"choices":[{{"text":%s,"index":0,'
            f'"logprobs":null,"finish_reason":"stop"}}],{usage}'
        )
    return (
        f'{{"id":"chatcmpl-{ids.body}%s","object":"chat.completion","created":%d,'
        f'"model":{model_json},"choices":[{{"index":0,"message":{{"role":"assistant",'
        f'"content":%s,"refusal":null}},"logprobs":null,'
        f'"finish_reason":"stop"}}],{usage}'
    )


def _line_format(ids: _Ids, status: str, body: str) -> str:
    """The %-format of an output line: serial, custom_id, [status,] serial, then ``body``."""
    return (
        f'{{"id":"batch_req_{ids.line}%s","custom_id":%s,"response":{{"status_code":{status},'
        f'"request_id":"{ids.request}%s","body":{body}}},"error":null}}'
    )


class Renderer:
    """Answers the request lines that share an endpoint, model, instructions and format.

    Everything those lines have in common is worked out once: the compiled schema and the
    reply line as a %-format with only the per-line values left to fill in.
    """

    def __init__(
        self, ids: _Ids, schemas: SchemaCache, endpoint: str, body: Mapping[str, Any]
    ) -> None:
        """Prepare to answer lines on ``endpoint`` whose body is ``body`` but for the prompt."""
        model = body.get("model")
        self._model = model if isinstance(model, str) else ""
        instructions = body.get("instructions")
        if not isinstance(instructions, str):
            instructions = None
        self._extra_chars = 0 if instructions is None else len(instructions)
        self._serial = ids.serial
        self._embedder = Embedder(body) if endpoint == EMBEDDINGS else None
        self._schema = None if self._embedder is not None else requested_schema(endpoint, body)
        schema = self._schema
        structured = schema is not None and schema is not _JSON_OBJECT
        self._refusal = strict_refusal(endpoint, body) if structured else None
        if self._embedder is not None:  # a body the API refuses: every line fails
            self._refusal = self._embedder.error
        self._generate = schemas.generator(schema) if structured and self._refusal is None else None
        self._responses = endpoint == "/v1/responses"
        body_format = "%s"
        if self._embedder is None:
            body_format = _body_format(endpoint, ids, self._model, instructions)
        self._ok = _line_format(ids, "200", body_format)
        self._fail = _line_format(ids, "%d", "%s")

    def content(self, prompt: str, fault: LineFault | None) -> str:
        """The assistant's reply text for ``prompt`` under ``fault``."""
        schema = self._schema
        if fault == "schema_mismatch":
            return _mismatch(schema)
        if schema is _JSON_OBJECT:
            text = _encode({"echo": prompt})
        elif self._generate is not None:
            text = self._generate(Entropy.for_text(prompt))
        elif fault == "invalid_json":
            text = _encode({"text": "Echo: " + prompt})
        else:
            text = "Echo: " + prompt
        return _truncate(text) if fault == "invalid_json" else text

    def answer(self, custom_id_json: str, prompt: str, fault: LineFault | None, now: int) -> Answer:
        """Answer one request line (``custom_id_json``: its custom_id as a JSON literal)."""
        serial = self._serial()
        if self._refusal is not None:  # a body the API refuses: every line fails
            return self._fail % (serial, custom_id_json, 400, serial, self._refusal), True, 0, 0
        if fault is None and self._generate is not None:
            text = self._generate(Entropy.for_text(prompt))
        elif fault is not None and fault in _ERRORS:
            status, body = self._error_body(fault)
            return self._fail % (serial, custom_id_json, status, serial, body), True, 0, 0
        elif self._embedder is not None:
            return self._embedding(self._embedder, serial, custom_id_json, prompt, fault)
        else:
            text = self.content(prompt, fault)
        # The usual rough estimate: one token per four characters, at least one.
        input_tokens = (len(prompt) + self._extra_chars) // 4 or 1
        output_tokens = len(text) // 4 or 1
        total = input_tokens + output_tokens
        if self._responses:
            values: tuple[Any, ...] = (
                serial, custom_id_json, serial, serial, now, serial, _quote(text),
                input_tokens, output_tokens, total,
            )  # fmt: skip
        else:
            values = (
                serial, custom_id_json, serial, serial, now, _quote(text),
                input_tokens, output_tokens, total,
            )  # fmt: skip
        return self._ok % values, False, input_tokens, output_tokens

    def _error_body(self, fault: str) -> tuple[int, str]:
        status, kind, code, message = _ERRORS[fault]
        error = {
            "message": message.format(model=self._model or "the model"),
            "type": kind,
            "param": None,
            "code": code,
        }
        return status, _encode({"error": error})

    def _embedding(
        self,
        embedder: Embedder,
        serial: str,
        custom_id_json: str,
        prompt: str,
        fault: LineFault | None,
    ) -> Answer:
        status, body, input_tokens = embedder.reply(prompt, fault)
        if status != 200:
            return self._fail % (serial, custom_id_json, status, serial, body), True, 0, 0
        return self._ok % (serial, custom_id_json, serial, body), False, input_tokens, 0


class ReplyFactory:
    """Build output lines; holds the per-emulator schema cache and id generator."""

    def __init__(self) -> None:
        """Create a factory with an empty schema cache."""
        self._schemas = SchemaCache()
        self._ids = _Ids()

    def renderer(self, endpoint: str, body: Mapping[str, Any]) -> Renderer:
        """A `Renderer` for lines on ``endpoint`` with ``body`` (the prompt aside)."""
        return Renderer(self._ids, self._schemas, endpoint, body)

    def unexecuted(self, custom_id_json: str, code: str, message: str) -> str:
        """The error-file line of a request never executed (batch expired or cancelled)."""
        error = _encode({"code": code, "message": message})
        return (
            f'{{"id":"batch_req_{self._ids.line}{self._ids.serial()}","custom_id":'
            f'{custom_id_json},"response":null,"error":{error}}}'
        )
