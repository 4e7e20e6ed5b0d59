"""The OpenAI Batch API's wire format (also Azure OpenAI's): request lines for the Responses,
Chat Completions and Embeddings endpoints, result lines, and what a failed batch means."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from batchor.errors import ConfigurationError
from batchor.items import PromptParts
from batchor.providers.base import BatchVerdict, Reply
from batchor.providers.openai.endpoints import endpoint_kind
from batchor.providers.openai.replies import read_reply, single_text, usage_of
from batchor.providers.openai.tokens import estimate_tokens

# Error codes of lines the provider never ran: the item goes back without an attempt charged.
_NOT_RUN_CODES = frozenset({"batch_expired", "batch_cancelled"})
# Whole-batch failures that say nothing about the items: requeue without charge.
_UNCHARGED_BATCH_ERRORS = frozenset({"token_limit_exceeded", "insufficient_quota"})

# A Reply built without its __new__ wrapper's call (a tuple of all five fields).
_new_reply = tuple.__new__


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


class OpenAICodec:
    """Request and result lines of one job.

    The parts shared by every request (model, parameters, the JSON schema) are serialised
    once; per item only the prompt is encoded. Output is compact JSON with a fixed key order,
    so the same prompt always gives the same bytes (and the same hash).

    Args:
        model: The model (for Azure, the deployment) named in every request.
        endpoint: The endpoint path, as batches are created for it and lines name it
            (``/v1/responses``, ``/v1/chat/completions``, ``/v1/embeddings``; Azure's
            spellings without ``/v1`` work the same).
        params: Extra body parameters.
        schema: The structured-output JSON schema, if any.
        schema_name: Its name.

    Raises:
        ConfigurationError: a schema with the embeddings endpoint.
    """

    def __init__(
        self,
        *,
        model: str,
        endpoint: str,
        params: Mapping[str, Any],
        schema: dict[str, Any] | None = None,
        schema_name: str = "output",
    ) -> None:
        self.endpoint = endpoint
        self.kind = endpoint_kind(endpoint)
        self.output_kind = "vector" if self.kind == "embeddings" else "text"
        shared: dict[str, Any] = dict(params)
        if schema is not None:
            if self.kind == "embeddings":
                raise ConfigurationError(
                    f"structured output cannot be used with {endpoint}: an embeddings job "
                    "returns vectors; drop BatchJob.structured_output"
                )
            if self.kind == "chat":
                shared["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": schema_name, "schema": schema, "strict": True},
                }
            else:
                shared["text"] = {
                    "format": {
                        "type": "json_schema",
                        "name": schema_name,
                        "schema": schema,
                        "strict": True,
                    }
                }
        self._head = b'{"model":' + _dumps(model)
        self._tail = b"".join(b"," + _dumps(k) + b":" + _dumps(v) for k, v in shared.items())
        self._tail += b"}"
        self._middle = f'","method":"POST","url":"{endpoint}","body":'.encode()

    def encode_body(self, parts: PromptParts) -> bytes:
        """The JSON body of one request (UTF-8).

        Raises:
            ConfigurationError: a system prompt for the embeddings endpoint.
        """
        if self.kind == "chat":
            messages = []
            if parts.system is not None:
                messages.append({"role": "system", "content": parts.system})
            messages.append({"role": "user", "content": parts.prompt})
            middle = b',"messages":' + _dumps(messages)
        elif self.kind == "embeddings":
            if parts.system is not None:
                raise ConfigurationError(
                    f"{self.endpoint} takes no system prompt: build_prompt must return "
                    "PromptParts(prompt=...) only, the text to embed"
                )
            middle = b',"input":' + _dumps(parts.prompt)
        else:
            middle = b',"input":' + _dumps(parts.prompt)
            if parts.system is not None:
                middle += b',"instructions":' + _dumps(parts.system)
        return self._head + middle + self._tail

    def frame(self, seq: int, body: bytes) -> bytes:
        """The batch input line of item ``seq`` (its custom id is the seq)."""
        return b'{"custom_id":"%d%s%s}\n' % (seq, self._middle, body)

    def decode(self, line: bytes) -> tuple[int, Reply | None] | None:
        """One output or error file line: ``(seq, reply)``; ``(seq, None)`` for a request
        the batch never ran (expired or cancelled before it); ``None`` if not a result."""
        try:
            parsed = orjson.loads(line)
            seq = int(parsed["custom_id"])
        except (ValueError, KeyError, TypeError):
            return None
        response = parsed.get("response")
        if (
            self.kind == "responses"
            and type(response) is dict
            and response.get("status_code") == 200
        ):
            # The usual line, a completed reply: read here, as read_reply would read it.
            body = response.get("body")
            if type(body) is dict and body.get("status") == "completed":
                text = single_text(body)
                if text is not None:
                    usage = usage_of(body.get("usage"), "input_tokens", "output_tokens")
                    return seq, _new_reply(Reply, (text, usage, None, "", False))
        if not isinstance(response, dict):
            error = parsed.get("error") or {}
            code = str(error.get("code") or "provider_error") if isinstance(error, dict) else ""
            if code in _NOT_RUN_CODES:
                return seq, None
            message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
            return seq, Reply(None, None, "provider_error", f"{code}: {message}", retryable=True)
        status = response.get("status_code", 0)
        return seq, read_reply(self.kind, int(status or 0), response.get("body"))

    def batch_verdict(self, status: str, errors: list[tuple[str, str]]) -> BatchVerdict:
        """An expired or cancelled batch never ran its unanswered items (free requeue); a
        completed one should have answered them all; a failed batch charges them unless its
        errors say nothing about the items (the account's quota or token limit), which also
        pause the run or back packing off."""
        codes = {code for code, _ in errors}
        pause = next((f"{c}: {m}" for c, m in errors if c == "insufficient_quota"), None)
        capacity = "token_limit_exceeded" in codes
        charge: tuple[str, str] | None
        if status in ("expired", "cancelled"):
            charge = None
        elif status == "completed":
            charge = ("missing_output", "the provider's completed batch has no line for this item")
        elif codes and codes <= _UNCHARGED_BATCH_ERRORS:
            charge = None
        else:
            message = "; ".join(f"{code}: {msg}" for code, msg in errors) or f"batch {status}"
            charge = ("batch_failed", message[:2000])
        return BatchVerdict(charge=charge, pause_reason=pause, capacity=capacity)

    def estimate_tokens(self, parts: PromptParts) -> int:
        """Estimated input tokens (see `batchor.providers.openai.tokens`)."""
        return estimate_tokens(parts)
