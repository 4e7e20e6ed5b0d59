"""The OpenAI Batch API's endpoints and the kind of request each takes."""

from __future__ import annotations

from typing import Literal

Endpoint = Literal["/v1/responses", "/v1/chat/completions", "/v1/embeddings"]
ENDPOINTS: tuple[str, ...] = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings")
#: The kind of request each endpoint takes, by the last part of its path.
KINDS = {"responses": "responses", "completions": "chat", "embeddings": "embeddings"}


def endpoint_kind(endpoint: str) -> str:
    """``responses``, ``chat`` or ``embeddings`` for an endpoint path."""
    return KINDS[endpoint.rstrip("/").rsplit("/", 1)[-1]]
