"""The result line of each request: a ``succeeded`` Message, or an ``errored``, ``canceled``
or ``expired`` result.

Text requests are answered with an echo of the prompt (as the OpenAI emulator answers
them); a forced tool (``tool_choice`` of type ``tool`` or ``any``) with a ``tool_use`` block
whose ``input`` fits the tool's ``input_schema``; ``output_config.format`` (or the beta
``output_format``) with a text block of JSON fitting its schema. The JSON comes from the
OpenAI emulator's schema-satisfying generator (`batchor.testing.emulator.schema_text`).
Usage counts are estimates (a token per four characters), with prompt caching simulated
across the emulator's requests (`PromptCache`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from batchor.testing.anthropic.batches import SerialIds
from batchor.testing.anthropic.faults import LineFault
from batchor.testing.anthropic.params import (
    Breakpoint,
    breakpoints,
    check_params,
    prompt_of,
    reply_shape,
)
from batchor.testing.emulator.replies import _mismatch as json_mismatch
from batchor.testing.emulator.replies import _truncate as truncated_json
from batchor.testing.emulator.schema_text import SchemaCache
from batchor.testing.emulator.schemas import Entropy

_encode = json.JSONEncoder(separators=(",", ":")).encode
_TTL_SECONDS = {"5m": 5 * 60.0, "1h": 60 * 60.0}
_ERRORS: dict[str, str] = {
    "overloaded_error": "Overloaded",
    "api_error": "Internal server error",
    "invalid_request_error": "Invalid request: the emulator was asked to reject this request.",
}


def errored(error_type: str, message: str) -> dict[str, Any]:
    """An ``errored`` result holding the API's error shape."""
    return {
        "type": "errored",
        "error": {"type": "error", "error": {"type": error_type, "message": message}},
    }


class PromptCache:
    """Prompt-cache entries written by earlier requests, so a repeated ``cache_control``
    prefix is read from the cache (``cache_read_input_tokens``) instead of written
    (``cache_creation_input_tokens``). Entries live 5 minutes (or an hour, ``ttl: "1h"``)
    from their last use; prefixes shorter than the minimum cacheable length are not cached.
    Only the batch worker uses it."""

    def __init__(self, min_tokens: int) -> None:
        """Cache prefixes of at least ``min_tokens`` estimated tokens."""
        self._min_tokens = min_tokens
        self._expiry: dict[str, float] = {}

    def use(self, points: list[Breakpoint]) -> tuple[int, int, int, int]:
        """Look up and write the prefixes ending at ``points``: return the tokens read, the
        tokens written (total, 5-minute, 1-hour) and the length of the longest prefix."""
        eligible = [p for p in points if p.tokens >= self._min_tokens]
        if not eligible:
            return 0, 0, 0, 0
        now = time.monotonic()
        read = 0
        hit = -1
        for index, point in enumerate(eligible):
            if self._expiry.get(point.key, 0.0) > now:
                read, hit = point.tokens, index
        last = eligible[-1]
        written = last.tokens - read if hit < len(eligible) - 1 else 0
        for point in eligible:
            self._expiry[point.key] = now + _TTL_SECONDS[point.ttl]
        if len(self._expiry) > 100_000:
            self._expiry = {k: v for k, v in self._expiry.items() if v > now}
        one_hour = written if last.ttl == "1h" else 0
        return read, written, written - one_hour, one_hour


def _prompt_chars(params: Mapping[str, Any]) -> int:
    chars = 0
    for part in (params.get("system"), *(params.get("messages") or [])):
        content = part.get("content") if isinstance(part, dict) else part
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(str(b.get("text", ""))) if isinstance(b, dict) else 0 for b in content)
    tools = params.get("tools")
    if tools:
        chars += len(_encode(tools))
    return chars


def _tool_mismatch(schema: Any) -> dict[str, Any]:
    """A tool ``input`` object that does not validate against ``schema``."""
    if isinstance(schema, Mapping):
        if schema.get("required"):
            return {}
        properties = schema.get("properties")
        if isinstance(properties, Mapping) and properties:
            name, sub = next(iter(properties.items()))
            numeric = isinstance(sub, Mapping) and sub.get("type") in ("integer", "number")
            return {name: "unexpected" if numeric else 12345}
    return {"unexpected": True}


class Replier:
    """Answers the requests of every batch of one emulator (holds its schema and prompt
    caches)."""

    def __init__(self, min_cacheable_tokens: int) -> None:
        """Start with empty caches."""
        self.schemas = SchemaCache()
        """Compiled schema-reply generators."""
        self.cache = PromptCache(min_cacheable_tokens)
        """The simulated prompt cache."""
        self.ids = SerialIds()
        """The ids of messages and tool calls."""

    def answer(
        self, params: Any, fault: LineFault | None, *, cached: bool = True
    ) -> dict[str, Any]:
        """The ``result`` of one request (``cached``: whether it may hold ``cache_control``)."""
        if not isinstance(params, dict):
            return errored("invalid_request_error", "params: Input should be a valid dictionary")
        problem = check_params(params)
        if problem is not None:
            return errored("invalid_request_error", problem)
        if fault in _ERRORS:
            assert fault is not None
            return errored(fault, _ERRORS[fault])
        return {"type": "succeeded", "message": self._message(params, fault, cached)}

    def _message(self, params: Mapping[str, Any], fault: LineFault | None, cached: bool) -> Any:
        shape = reply_shape(params)
        prompt = prompt_of(params)
        stop_reason = "end_turn"
        stop_sequence: str | None = None
        content: list[dict[str, Any]]
        if shape.kind == "tool":
            if fault is None:
                text = self.schemas.generator(shape.schema)(Entropy.for_text(prompt))
                tool_input = json.loads(text)
            else:
                tool_input = _tool_mismatch(shape.schema)
                text = _encode(tool_input)
            content = [
                {
                    "type": "tool_use",
                    "id": self.ids.next("toolu"),
                    "name": shape.tool,
                    "input": tool_input,
                }
            ]
            stop_reason = "tool_use"
        else:
            if shape.kind == "json":
                text = self.schemas.generator(shape.schema)(Entropy.for_text(prompt))
            else:
                text = "Echo: " + prompt
            if fault == "schema_mismatch":
                text = json_mismatch(shape.schema)
            elif fault == "invalid_json":
                text = truncated_json(text if shape.kind == "json" else _encode({"text": text}))
            elif shape.kind == "text":
                text, stop_sequence = _apply_stop(text, params.get("stop_sequences"))
                if stop_sequence is not None:
                    stop_reason = "stop_sequence"
            budget = int(params["max_tokens"]) * 4
            if len(text) > budget:
                text, stop_reason, stop_sequence = text[:budget], "max_tokens", None
            content = [{"type": "text", "text": text}]
        output_tokens = len(text) // 4 or 1
        total = _prompt_chars(params) // 4 or 1
        read = written = five_minutes = one_hour = 0
        if cached:
            read, written, five_minutes, one_hour = self.cache.use(breakpoints(params))
        return {
            "id": self.ids.next("msg"),
            "type": "message",
            "role": "assistant",
            "model": params["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": {
                "input_tokens": max(total - read - written, 1),
                "cache_creation_input_tokens": written,
                "cache_read_input_tokens": read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": five_minutes,
                    "ephemeral_1h_input_tokens": one_hour,
                },
                "output_tokens": output_tokens,
                "service_tier": "batch",
            },
        }


def _apply_stop(text: str, stops: Any) -> tuple[str, str | None]:
    """``text`` cut before the first of ``stops`` it holds, and that stop sequence."""
    if not isinstance(stops, list):
        return text, None
    best: tuple[int, str] | None = None
    for stop in stops:
        if isinstance(stop, str) and stop:
            at = text.find(stop)
            if at >= 0 and (best is None or at < best[0]):
                best = (at, stop)
    if best is None:
        return text, None
    return text[: best[0]], best[1]
