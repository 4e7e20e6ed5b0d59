"""The Anthropic Message Batches provider: `AnthropicProviderConfig` (settings),
`AnthropicCodec` (the wire format: Messages API requests, structured output as a forced
tool) and `AnthropicTransport` (the Message Batches calls, through the optional ``anthropic``
SDK, imported only when a run starts)."""

from batchor.providers.anthropic.config import AnthropicProviderConfig

__all__ = ["AnthropicProviderConfig"]
