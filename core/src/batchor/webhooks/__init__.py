"""Receive OpenAI's batch webhooks: each signed ``batch.completed``, ``batch.failed``,
``batch.expired`` or ``batch.cancelled`` event takes one reconcile step of the run that owns
the batch, so a run moves on as soon as the provider is done, with polling as the fallback.

Mount `webhook_app` in an ASGI server, or run `WebhookServer` (``batchor webhooks serve``).
The signing secret comes from ``OPENAI_WEBHOOK_SECRET`` unless given. See the how-to guide
"Receive webhooks".
"""

from batchor.webhooks.asgi import WebhookApp, webhook_app
from batchor.webhooks.receiver import BATCH_EVENTS, WebhookReceiver, WebhookResponse
from batchor.webhooks.replay import SeenWebhooks
from batchor.webhooks.server import WebhookServer
from batchor.webhooks.verify import (
    TOLERANCE_SECONDS,
    WEBHOOK_SECRET_ENV,
    WebhookRejected,
    WebhookVerifier,
    webhook_secret,
)

__all__ = [
    "BATCH_EVENTS",
    "TOLERANCE_SECONDS",
    "WEBHOOK_SECRET_ENV",
    "SeenWebhooks",
    "WebhookApp",
    "WebhookReceiver",
    "WebhookRejected",
    "WebhookResponse",
    "WebhookServer",
    "WebhookVerifier",
    "webhook_app",
    "webhook_secret",
]
