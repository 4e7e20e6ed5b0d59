"""Reading one Message Batch result's ``result``: a ``succeeded`` Message, an ``errored``
request (classified by its error type), or a request that was never run (``canceled``,
``expired``)."""

from __future__ import annotations

from typing import Any

import orjson

from batchor.providers.base import Reply

#: Error types of an ``errored`` result that a later attempt may not meet, and the failure
#: class each is recorded as (API reference, "Errors": 500 ``api_error``, 504
#: ``timeout_error``, 529 ``overloaded_error``, 429 ``rate_limit_error``).
RETRYABLE_ERRORS = {
    "overloaded_error": "server_error",
    "api_error": "server_error",
    "timeout_error": "server_error",
    "rate_limit_error": "rate_limited",
}
#: Error types that say the request itself is wrong: failed at once, under this class. Every
#: other type (``authentication_error``, ``permission_error``, ``billing_error``,
#: ``not_found_error``, ...) is permanent too, as ``provider_error``.
PERMANENT_ERRORS = {
    "invalid_request_error": "invalid_request",
    "request_too_large": "request_too_large",
}
#: Stop reasons of a reply cut short by a token limit: its output is incomplete.
_CUT_OFF = frozenset({"max_tokens", "model_context_window_exceeded"})


def read_result(result: Any, tool: str | None) -> Reply | None:
    """The reply a result holds, or ``None`` for a request the batch never ran (``canceled``
    or ``expired``: requeued without an attempt charged).

    Args:
        result: The line's ``result`` object.
        tool: The forced tool's name when the job has structured output: its ``tool_use``
            input is the reply (as compact JSON).
    """
    if not isinstance(result, dict):
        return Reply(None, None, "invalid_response", "result line has no result object", True)
    kind = result.get("type")
    if kind == "succeeded":
        return _message_reply(result.get("message"), tool)
    if kind == "errored":
        return _error_reply(result.get("error"))
    if kind in ("canceled", "expired"):
        return None
    return Reply(None, None, "invalid_response", f"unknown result type {kind!r}", True)


def usage_of(raw: Any) -> tuple[int, int] | None:
    """``(input, output)`` tokens of a Message's usage. Input counts every input token billed:
    the uncached ones plus those written to and read from the prompt cache (their prices
    differ; the cost is reckoned from these totals)."""
    if not isinstance(raw, dict):
        return None
    tokens_in = (
        int(raw.get("input_tokens") or 0)
        + int(raw.get("cache_creation_input_tokens") or 0)
        + int(raw.get("cache_read_input_tokens") or 0)
    )
    return tokens_in, int(raw.get("output_tokens") or 0)


def _message_reply(message: Any, tool: str | None) -> Reply:
    if not isinstance(message, dict):
        return Reply(None, None, "invalid_response", "succeeded result has no message", True)
    usage = usage_of(message.get("usage"))
    stop = message.get("stop_reason")
    if stop in _CUT_OFF:
        return Reply(
            None,
            usage,
            "incomplete",
            f"reply cut off ({stop}): raise AnthropicProviderConfig.max_tokens",
            False,
        )
    if stop == "refusal":
        return Reply(None, usage, "refusal", "the model declined to answer (refusal)", False)
    content = message.get("content")
    if type(content) is not list:
        return Reply(None, usage, "invalid_response", "reply has no content", True)
    texts: list[str] = []
    for block in content:
        if type(block) is not dict:
            continue
        kind = block.get("type")
        if tool is not None and kind == "tool_use" and block.get("name") == tool:
            return Reply(orjson.dumps(block.get("input")).decode(), usage)
        if kind == "text" and type(block.get("text")) is str:
            texts.append(block["text"])
    if texts:
        # A structured job whose reply is text (the tool not called) is validated as JSON,
        # and retried if it is not.
        return Reply("".join(texts), usage)
    what = f"no call of the tool {tool}" if tool is not None else "no text"
    return Reply(None, usage, "invalid_response", f"reply has {what}", True)


def _error_reply(error: Any) -> Reply:
    """An ``errored`` result: its ``error`` is the API's error body, ``{"type": "error",
    "error": {"type": ..., "message": ...}}``."""
    inner = error.get("error") if isinstance(error, dict) else None
    if not isinstance(inner, dict):
        inner = error if isinstance(error, dict) else {}
    kind = str(inner.get("type") or "unknown_error")
    message = f"{kind}: {inner.get('message') or ''}".rstrip(": ")
    if kind in RETRYABLE_ERRORS:
        return Reply(None, None, RETRYABLE_ERRORS[kind], message, True)
    return Reply(None, None, PERMANENT_ERRORS.get(kind, "provider_error"), message, False)
