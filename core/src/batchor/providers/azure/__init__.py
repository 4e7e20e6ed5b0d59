"""The Azure OpenAI global batch provider: `AzureOpenAIProviderConfig` (settings) and
`AzureOpenAITransport` (the Files and Batches calls, through the SDK's ``AzureOpenAI``). The
wire format is OpenAI's (`batchor.providers.openai.codec.OpenAICodec`), with the deployment
as every request's model."""

from batchor.providers.azure.config import AzureOpenAIProviderConfig

__all__ = ["AzureOpenAIProviderConfig"]
