"""`webhook_app`: the webhook receiver as a plain ASGI application, to mount in any ASGI
server or framework (uvicorn, hypercorn, Starlette, FastAPI, ...)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from batchor.webhooks.receiver import MAX_BODY_BYTES, WebhookReceiver, WebhookResponse

if TYPE_CHECKING:
    from batchor.runner import BatchRunner

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class WebhookApp:
    """An ASGI 3 application around a `WebhookReceiver`: every path it is mounted at takes
    POSTed deliveries; the blocking work (store, provider calls) runs on a worker thread.

    Args:
        receiver: What handles each delivery.
    """

    def __init__(self, receiver: WebhookReceiver) -> None:
        """Wrap ``receiver``."""
        self.receiver = receiver
        """The receiver (its `WebhookReceiver.outcomes` count the deliveries)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection: ``http`` requests, and the ``lifespan`` protocol."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise RuntimeError(f"the webhook app serves HTTP only, not {scope['type']}")
        method = str(scope.get("method", "GET"))
        body = b""
        if method.upper() == "POST":
            read = await _body(receive)
            if read is None:
                await _reply(send, self.receiver.too_large())
                return
            body = read
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in scope.get("headers", [])
        }
        import anyio.to_thread  # the SDK's dependency; runs under asyncio and trio alike

        response = await anyio.to_thread.run_sync(self.receiver.handle, method, body, headers)
        await _reply(send, response, head=method.upper() == "HEAD")


def webhook_app(runner: BatchRunner, *, secret: str | None = None) -> WebhookApp:
    """An ASGI application that receives OpenAI's ``batch.*`` webhooks for ``runner``'s
    runs: mount it, e.g. ``app.mount("/webhooks/openai", webhook_app(runner))`` in
    Starlette or FastAPI, or serve it alone with ``uvicorn module:app``.

    Each delivery is checked with the ``openai`` SDK against the signing secret (400 when
    forged, stale, replayed or missing its headers; nothing is written); a valid batch event
    takes one reconcile step of the run that owns the batch (500 if that fails, so the
    provider retries); anything else is answered 200. See `WebhookReceiver`.

    Args:
        runner: The runner whose store holds the runs.
        secret: The signing secret; default ``$OPENAI_WEBHOOK_SECRET``.

    Raises:
        ConfigurationError: no secret, or a malformed one.
    """
    return WebhookApp(WebhookReceiver(runner, secret=secret))


async def _body(receive: Receive) -> bytes | None:
    """The request body, or None once it passes `MAX_BODY_BYTES`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _reply(send: Send, response: WebhookResponse, *, head: bool = False) -> None:
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers
    ]
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else response.body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown (there is nothing to open or close)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
