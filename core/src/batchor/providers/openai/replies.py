"""Reading one OpenAI batch result line's ``response``: a reply of the Responses, Chat
Completions or Embeddings endpoint, or an HTTP failure."""

from __future__ import annotations

from typing import Any

import orjson

from batchor.providers.base import Reply


def read_reply(kind: str, status_code: int, body: Any) -> Reply:
    """Interpret one output or error line's ``response`` part, for an endpoint of ``kind``
    (``responses``, ``chat`` or ``embeddings``)."""
    if status_code != 200:
        return _http_failure(status_code, body)
    if not isinstance(body, dict):
        return Reply(None, None, "invalid_response", "reply body is not an object", True)
    if kind == "chat":
        return _chat_reply(body)
    if kind == "embeddings":
        return _embedding_reply(body)
    return _responses_reply(body)


def _http_failure(status_code: int, body: Any) -> Reply:
    error = body.get("error") if isinstance(body, dict) else None
    message = ""
    if isinstance(error, dict):
        message = str(error.get("message") or error.get("code") or "")
    message = f"HTTP {status_code}: {message}".rstrip(": ")
    if status_code == 429:
        return Reply(None, None, "rate_limited", message, True)
    if status_code >= 500:
        return Reply(None, None, "server_error", message, True)
    return Reply(None, None, "invalid_request", message, False)


def single_text(body: dict[str, Any]) -> str | None:
    """The text of a Responses reply made of one message with one text part (the usual
    reply, read without the general walk of `read_reply`); ``None`` for any other shape."""
    output = body.get("output")
    if type(output) is list and len(output) == 1:
        message = output[0]
        if type(message) is dict and message.get("type") == "message":
            content = message.get("content")
            if type(content) is list and len(content) == 1:
                part = content[0]
                if type(part) is dict and part.get("type") == "output_text":
                    text = part.get("text")
                    if type(text) is str:
                        return text
    return None


def usage_of(raw: Any, input_key: str, output_key: str) -> tuple[int, int] | None:
    """``(input, output)`` tokens from a reply's usage object; ``None`` if there is none."""
    if not isinstance(raw, dict):
        return None
    return int(raw.get(input_key) or 0), int(raw.get(output_key) or 0)


def _chat_reply(body: dict[str, Any]) -> Reply:
    usage = usage_of(body.get("usage"), "prompt_tokens", "completion_tokens")
    choices = body.get("choices") or []
    if not choices or not isinstance(choices[0], dict):
        return Reply(None, usage, "invalid_response", "reply has no choices", True)
    choice = choices[0]
    message = choice.get("message") or {}
    if message.get("refusal"):
        return Reply(None, usage, "refusal", str(message["refusal"]), False)
    if choice.get("finish_reason") == "length":
        return Reply(None, usage, "incomplete", "reply cut off at the token limit", False)
    content = message.get("content")
    if not isinstance(content, str):
        return Reply(None, usage, "invalid_response", "reply has no text content", True)
    return Reply(content, usage)


def _responses_reply(body: dict[str, Any]) -> Reply:
    usage = usage_of(body.get("usage"), "input_tokens", "output_tokens")
    status = body.get("status")
    if status == "completed":
        text = single_text(body)
        if text is not None:
            return Reply(text, usage)
    if status == "incomplete":
        details = body.get("incomplete_details") or {}
        reason = details.get("reason", "unknown") if isinstance(details, dict) else "unknown"
        return Reply(None, usage, "incomplete", f"reply incomplete: {reason}", False)
    if status == "failed":
        error = body.get("error") or {}
        msg = error.get("message", "response failed") if isinstance(error, dict) else str(error)
        return Reply(None, usage, "server_error", msg, True)
    texts: list[str] = []
    for out in body.get("output") or []:
        if not isinstance(out, dict) or out.get("type") != "message":
            continue
        for part in out.get("content") or []:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "refusal":
                return Reply(None, usage, "refusal", str(part.get("refusal", "")), False)
            if part.get("type") == "output_text":
                texts.append(str(part.get("text", "")))
    if not texts:
        return Reply(None, usage, "invalid_response", "reply has no output text", True)
    return Reply("".join(texts), usage)


def _embedding_reply(body: dict[str, Any]) -> Reply:
    """The one vector of an embeddings reply, as a JSON array of floats."""
    usage = usage_of(body.get("usage"), "prompt_tokens", "completion_tokens")
    data = body.get("data")
    if type(data) is list and len(data) == 1 and type(data[0]) is dict:
        vector = data[0].get("embedding")
        if type(vector) is list and vector and all(type(x) in (float, int) for x in vector):
            return Reply(orjson.dumps(vector).decode(), usage)
    return Reply(None, usage, "invalid_response", "reply has no embedding vector", True)
