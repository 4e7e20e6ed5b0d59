"""The Anthropic Message Batches wire format: one Messages API request per line
(``{"custom_id", "params"}``), result lines, and what a batch that ended early means.

**Structured output is a forced tool.** The job's JSON schema becomes the one tool of every
request (``tools: [{"name", "description", "input_schema"}]``) and ``tool_choice: {"type":
"tool", "name": ...}`` makes the model call it; the call's ``input`` is the reply, validated
into the job's model as on OpenAI (a mismatch is retried). The Messages API's native option,
``output_config.format`` (constrained decoding, generally available since the 2025-11
structured-outputs release), was not chosen because (Structured outputs guide, "JSON Schema
limitations" and supported models):

- it is served only by the newest models (Claude Sonnet 4.5, Opus 4.5, Haiku 4.5 and later),
  while a forced tool works with every model the Batches API serves;
- it refuses schemas batchor's strict check accepts (recursive ones, ``minimum`` /
  ``maxLength`` and other constraints, more than 16 union-typed or 24 optional parameters).
  A refused schema is reported per request, after the batch ran, as an ``errored``
  ``invalid_request_error``: every item of the job would fail only hours later.

A forced tool costs the tool-use system prompt (a few hundred input tokens per request; the
tool definition is a shared prefix that prompt caching can hold), and cannot be combined
with extended thinking, which is refused when the codec is built.

**Prompt caching.** A ``cache_control`` in the config's ``request_params`` (e.g.
``{"type": "ephemeral"}`` or ``{"type": "ephemeral", "ttl": "1h"}``) is not sent as the
top-level parameter (which marks the last block of the request: the item's own prompt,
written to the cache and never read again). It goes on the prefix every request shares: the
system prompt, sent as one text block carrying it (the cache then holds the tool and the
system prompt); without a system prompt, on the structured-output tool; without either,
nothing is shared and nothing is marked. A prefix shorter than the model's minimum cacheable
length (1,024 to 4,096 tokens) is simply not cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from batchor.errors import ConfigurationError
from batchor.items import PromptParts
from batchor.providers.anthropic.replies import read_result
from batchor.providers.base import BatchVerdict, Reply

#: The one endpoint every request of a Message Batch goes to.
ANTHROPIC_ENDPOINT = "/v1/messages"

CHARS_PER_TOKEN = 4
#: Tokens around each message (role markers and separators).
_FRAMING_TOKENS = 8
#: The tool-use system prompt the API adds to a request that forces a tool: the largest count
#: the tool-use pricing page lists for ``tool_choice`` ``any`` / ``tool``.
_TOOL_PROMPT_TOKENS = 340
_TOOL_DESCRIPTION = (
    "Give your answer by calling this tool once: its input is the answer, in exactly this shape."
)


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _tail(shared: Mapping[str, Any], tools: list[dict[str, Any]]) -> bytes:
    """The request body after the messages: the parameters, then the forced tool."""
    fields = dict(shared)
    if tools:
        fields["tools"] = tools
        fields["tool_choice"] = {"type": "tool", "name": tools[0]["name"]}
    return b"".join(b"," + _dumps(k) + b":" + _dumps(v) for k, v in fields.items()) + b"}"


class AnthropicCodec:
    """Request and result lines of one job.

    The parts every request shares (model, ``max_tokens``, parameters, the tool) are
    serialised once; per item only the prompt and system prompt are encoded. Output is
    compact JSON in a fixed key order, so the same prompt always gives the same bytes.

    Args:
        model: The model every request names.
        max_tokens: Every request's ``max_tokens``.
        params: Extra Messages API parameters (``cache_control`` is placed as described in
            the module's notes).
        schema: The structured-output JSON schema, if any.
        schema_name: Its name: the forced tool's name (``^[a-zA-Z0-9_-]{1,64}$``).

    Raises:
        ConfigurationError: a schema with extended thinking on.
    """

    endpoint = ANTHROPIC_ENDPOINT
    output_kind = "text"

    def __init__(
        self,
        *,
        model: str,
        max_tokens: int,
        params: Mapping[str, Any],
        schema: dict[str, Any] | None = None,
        schema_name: str = "output",
    ) -> None:
        shared = dict(params)
        cache = shared.pop("cache_control", None)
        cache = dict(cache) if cache is not None else None
        self._cache: dict[str, Any] | None = cache
        self.tool: str | None = None
        self._extra_tokens = 0
        tools: list[dict[str, Any]] = []
        if schema is not None:
            thinking = shared.get("thinking")
            if isinstance(thinking, Mapping) and thinking.get("type") not in (None, "disabled"):
                raise ConfigurationError(
                    "structured output on Anthropic is a forced tool call, which the API does "
                    "not allow with extended thinking: drop request_params['thinking'] or "
                    "BatchJob.structured_output"
                )
            tool = {"name": schema_name, "description": _TOOL_DESCRIPTION, "input_schema": schema}
            tools = [tool]
            self.tool = schema_name
            self._extra_tokens = _TOOL_PROMPT_TOKENS + -(-len(_dumps(tool)) // CHARS_PER_TOKEN)
        self._head = b'{"model":' + _dumps(model) + b',"max_tokens":' + _dumps(max_tokens)
        self._tail = _tail(shared, tools)
        # A request without a system prompt carries the cache breakpoint on the tool.
        self._tail_no_system = self._tail
        if cache is not None and tools:
            self._tail_no_system = _tail(shared, [{**tools[0], "cache_control": cache}])

    def encode_body(self, parts: PromptParts) -> bytes:
        """The ``params`` of one request, as compact JSON (UTF-8)."""
        body = self._head
        tail = self._tail
        if parts.system:
            if self._cache is not None:
                block = {"type": "text", "text": parts.system, "cache_control": self._cache}
                body += b',"system":' + _dumps([block])
            else:
                body += b',"system":' + _dumps(parts.system)
        else:
            tail = self._tail_no_system
        body += b',"messages":[{"role":"user","content":' + _dumps(parts.prompt) + b"}]"
        return body + tail

    def frame(self, seq: int, body: bytes) -> bytes:
        """The request line of item ``seq``: its custom id is the seq (decimal digits match
        the API's ``^[a-zA-Z0-9_-]{1,64}$``)."""
        return b'{"custom_id":"%d","params":%s}\n' % (seq, body)

    def decode(self, line: bytes) -> tuple[int, Reply | None] | None:
        """One results line: ``(seq, reply)``; ``(seq, None)`` for a request the batch never
        ran (canceled or expired); ``None`` if the line is not a result."""
        try:
            parsed = orjson.loads(line)
            seq = int(parsed["custom_id"])
        except (ValueError, KeyError, TypeError):
            return None
        return seq, read_result(parsed.get("result"), self.tool)

    def batch_verdict(self, status: str, errors: list[tuple[str, str]]) -> BatchVerdict:
        """A batch that expired or was cancelled never ran its unanswered items (free
        requeue); one that completed should have answered them all; one the provider
        refused or failed charges them an attempt."""
        charge: tuple[str, str] | None
        if status in ("expired", "cancelled"):
            charge = None
        elif status == "completed":
            charge = ("missing_output", "the provider's ended batch has no result for this item")
        else:
            message = "; ".join(f"{code}: {msg}" for code, msg in errors) or f"batch {status}"
            charge = ("batch_failed", message[:2000])
        return BatchVerdict(charge=charge)

    def estimate_tokens(self, parts: PromptParts) -> int:
        """Estimated input tokens: a token per 4 characters of the prompt and system prompt
        (rounded up; no tokenizer of Claude's is public), message framing, and with a
        structured-output model the tool definition and the tool-use system prompt."""
        text = parts.prompt if not parts.system else parts.system + "\n" + parts.prompt
        return -(-len(text) // CHARS_PER_TOKEN) + _FRAMING_TOKENS + self._extra_tokens
