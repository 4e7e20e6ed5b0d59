"""The Gemini API's Batch Mode provider: `GeminiProviderConfig` (settings), `GeminiCodec` (the
wire format) and `GeminiTransport` (the Files and Batches calls, through the ``google-genai``
SDK, an optional extra: ``pip install 'batchor[gemini]'``)."""

from batchor.providers.gemini.config import GeminiProviderConfig

__all__ = ["GeminiProviderConfig"]
