"""The OpenAI Batch API provider: `OpenAIProviderConfig` (settings), `OpenAICodec` (the wire
format) and `OpenAITransport` (the Files and Batches calls, through the ``openai`` SDK)."""

from batchor.providers.openai.config import OpenAIProviderConfig

__all__ = ["OpenAIProviderConfig"]
