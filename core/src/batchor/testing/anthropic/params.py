"""Reading one request's ``params`` (Messages API create parameters): its validation, its
prompt, the shape of reply it asks for and its prompt-cache breakpoints.

A ``params`` the Messages API would refuse is answered as an ``errored`` result with an
``invalid_request_error`` (the batch itself is not refused: see `batches`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_encode = json.JSONEncoder(separators=(",", ":")).encode
_ROLES = ("user", "assistant")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_content(where: str, content: Any) -> str | None:
    if isinstance(content, str):
        return None
    if not isinstance(content, list):
        return f"{where}: Input should be a valid string or a valid list"
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            return f"{where}.{index}.type: Field required"
        if block["type"] == "text" and not isinstance(block.get("text"), str):
            return f"{where}.{index}.text: Field required"
    return None


def _check_tools(params: Mapping[str, Any]) -> str | None:
    tools = params.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        return "tools: Input should be a valid list"
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            return f"tools.{index}: Input should be a valid dictionary"
        if tool.get("type", "custom") != "custom":
            continue  # a server or client tool of a known type: nothing more to check here
        if not isinstance(tool.get("name"), str):
            return f"tools.{index}.custom.name: Field required"
        if not isinstance(tool.get("input_schema"), dict):
            return f"tools.{index}.custom.input_schema: Field required"
    choice = params.get("tool_choice")
    if choice is None:
        return None
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        return (
            "tool_choice: Input tag does not match any of the expected tags: "
            "'auto', 'any', 'tool', 'none'"
        )
    if choice["type"] in ("any", "tool") and not tools:
        return "tool_choice: tool_choice may only be specified while providing tools."
    if choice["type"] == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            return "tool_choice.tool.name: Field required"
        if not any(isinstance(t, dict) and t.get("name") == name for t in tools or []):
            return f"tool_choice: Tool '{name}' not found in the provided tools."
    return None


def _check_format(params: Mapping[str, Any]) -> str | None:
    config = params.get("output_config")
    if config is not None:
        if not isinstance(config, dict):
            return "output_config: Input should be a valid dictionary"
        fmt = config.get("format")
        where = "output_config.format"
    else:
        fmt = params.get("output_format")
        where = "output_format"
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return f"{where}.type: Input should be 'json_schema'"
    if not isinstance(fmt.get("schema"), dict):
        return f"{where}.schema: Field required"
    return None


def check_params(params: Mapping[str, Any]) -> str | None:
    """Why the Messages API would refuse ``params`` (its error message), or ``None``."""
    model = params.get("model")
    if model is None:
        return "model: Field required"
    if not isinstance(model, str) or not model:
        return "model: Input should be a valid string"
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        return "max_tokens: Field required"
    if not _is_int(max_tokens):
        return "max_tokens: Input should be a valid integer"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    messages = params.get("messages")
    if messages is None:
        return "messages: Field required"
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: List should have at least 1 item after validation, not 0"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{index}: Input should be a valid dictionary"
        if message.get("role") not in _ROLES:
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        if "content" not in message:
            return f"messages.{index}.content: Field required"
        problem = _check_content(f"messages.{index}.content", message["content"])
        if problem is not None:
            return problem
    system = params.get("system")
    if system is not None:
        problem = _check_content("system", system)
        if problem is not None:
            return problem
    if params.get("stream") is True:
        return "stream: Streaming is not supported in the Message Batches API."
    temperature = params.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            return "temperature: Input should be a valid number"
        if temperature < 0.0:
            return "temperature: Input should be greater than or equal to 0"
        if temperature > 1.0:
            return "temperature: Input should be less than or equal to 1"
    return _check_tools(params) or _check_format(params)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
    return ""


def prompt_of(params: Mapping[str, Any]) -> str:
    """The prompt a request asks about: the text of its last user message."""
    messages = params.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text_of(message.get("content"))
    return ""


@dataclass(frozen=True)
class ReplyShape:
    """What kind of reply a request asks for."""

    kind: str
    """``"text"`` (an echo of the prompt), ``"json"`` (a text block of JSON fitting
    `schema`: ``output_config.format``) or ``"tool"`` (a ``tool_use`` block for `tool`)."""
    schema: Any = None
    tool: str | None = None


def reply_shape(params: Mapping[str, Any]) -> ReplyShape:
    """The reply ``params`` (already checked) asks for.

    A ``tool_choice`` of type ``tool`` forces that tool, and type ``any`` the first custom
    tool; otherwise ``output_config.format`` (or the beta ``output_format``) of type
    ``json_schema`` asks for JSON text; otherwise the reply is text.
    """
    choice = params.get("tool_choice")
    tools = params.get("tools") or []
    if isinstance(choice, dict) and choice.get("type") in ("tool", "any"):
        for tool in tools:
            if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
                continue
            if choice["type"] == "any" or tool.get("name") == choice.get("name"):
                return ReplyShape("tool", tool.get("input_schema"), str(tool.get("name")))
    config = params.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else params.get("output_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return ReplyShape("json", fmt.get("schema"))
    return ReplyShape("text")


@dataclass(frozen=True)
class Breakpoint:
    """A ``cache_control`` breakpoint: the prompt prefix up to and including its block."""

    key: str
    """A digest of the model and the prefix: equal prefixes share it."""
    tokens: int
    """Estimated tokens of the prefix (one per four characters)."""
    ttl: str
    """``"5m"`` or ``"1h"``."""


def breakpoints(params: Mapping[str, Any]) -> list[Breakpoint]:
    """The ``cache_control`` breakpoints of a request, shortest prefix first.

    The prompt is read in the order the API caches it: ``tools``, then ``system``, then
    ``messages``; each block carrying ``cache_control`` ends one cached prefix.
    """
    blocks: list[Any] = []
    tools = params.get("tools")
    if isinstance(tools, list):
        blocks.extend(tools)
    system = params.get("system")
    if isinstance(system, list):
        blocks.extend(system)
    elif isinstance(system, str):
        blocks.append(system)
    for message in params.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            blocks.extend(content)
        else:
            blocks.append(content)
    digest = hashlib.sha256(str(params.get("model")).encode())
    chars = 0
    found: list[Breakpoint] = []
    for block in blocks:
        text = _encode(block)
        digest.update(text.encode("utf-8", "replace"))
        digest.update(b"\x00")
        chars += len(text)
        control = block.get("cache_control") if isinstance(block, dict) else None
        if isinstance(control, dict):
            ttl = "1h" if control.get("ttl") == "1h" else "5m"
            found.append(Breakpoint(digest.copy().hexdigest(), chars // 4, ttl))
    return found
