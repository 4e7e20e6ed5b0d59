"""What a webhook delivery does: check it, find the run that owns the batch, take one
reconcile step of it. The ASGI app and the HTTP server both call `WebhookReceiver.handle`."""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchor.errors import RunNotFoundError
from batchor.webhooks.replay import SeenWebhooks
from batchor.webhooks.verify import (
    TOLERANCE_SECONDS,
    WebhookRejected,
    WebhookVerifier,
    webhook_secret,
)

if TYPE_CHECKING:
    from batchor.runner import BatchRunner

log = logging.getLogger("batchor.webhooks")

BATCH_EVENTS = frozenset({"batch.completed", "batch.failed", "batch.expired", "batch.cancelled"})
"""The event types that drive a run; any other type is acknowledged and ignored."""

MAX_BODY_BYTES = 1 << 20
"""The largest request body taken (OpenAI's events are a few hundred bytes)."""

_STRIPES = 16  # locks shared by run ids: one refresh of a run at a time in this receiver


@dataclass(frozen=True)
class WebhookResponse:
    """The HTTP answer to one delivery."""

    status: int
    """200 handled or ignored, 400 refused, 405 not a POST, 413 too large, 500 failed."""
    body: bytes
    """A small JSON document."""
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    """Response headers."""


def _answer(
    code: int, extra: tuple[tuple[str, str], ...] = (), /, **fields: Any
) -> WebhookResponse:
    body = json.dumps(fields, separators=(",", ":")).encode()
    return WebhookResponse(code, body, (("content-type", "application/json"), *extra))


class WebhookReceiver:
    """Turns OpenAI's ``batch.*`` webhook deliveries into reconcile steps of the runs that
    own the batches.

    A delivery is checked with the ``openai`` SDK (signature and timestamp, see
    `WebhookVerifier`) and its ``webhook-id`` against the ids already taken (see
    `SeenWebhooks`; per receiver process). A bad one is answered 400 with nothing written
    and no provider call. A valid ``batch.*`` event whose batch batchor submitted records
    the webhook on the run (`Run.wait` then polls at its longest interval) and takes one
    `Run.refresh` of it; any other valid event is answered 200 and ignored.

    Args:
        runner: The runner whose store holds the runs (with the provider credentials the
            refresh needs, or their environment variables).
        secret: The signing secret; default ``$OPENAI_WEBHOOK_SECRET``.

    Raises:
        ConfigurationError: no secret, or a malformed one (never shown).
    """

    def __init__(self, runner: BatchRunner, *, secret: str | None = None) -> None:
        """Check the secret and get ready; nothing is read or written yet."""
        self._verifier = WebhookVerifier(webhook_secret(secret))
        self._runner = runner
        # A copy within the SDK's tolerance of a timestamp up to the tolerance ahead.
        self._seen = SeenWebhooks(keep_seconds=2 * TOLERANCE_SECONDS + 60)
        one = threading.Lock()
        self._locks = [one if not runner.store.thread_safe else threading.Lock()]
        if runner.store.thread_safe:
            self._locks += [threading.Lock() for _ in range(_STRIPES - 1)]
        self._outcomes: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def __repr__(self) -> str:
        """Never shows the secret."""
        return f"<WebhookReceiver {dict(self.outcomes)}>"

    @property
    def outcomes(self) -> Counter[str]:
        """Deliveries so far by outcome: ``refreshed``, ``ignored``, ``rejected``,
        ``replayed``, ``failed`` (500) and ``not_allowed`` (405)."""
        with self._count_lock:
            return Counter(self._outcomes)

    def too_large(self) -> WebhookResponse:
        """The 413 answer to a body over `MAX_BODY_BYTES` (counted as ``rejected``)."""
        self._count("rejected")
        return _answer(413, error=f"request body over {MAX_BODY_BYTES} bytes")

    def _count(self, outcome: str) -> None:
        with self._count_lock:
            self._outcomes[outcome] += 1

    def handle(self, method: str, body: bytes, headers: Mapping[str, str]) -> WebhookResponse:
        """Answer one delivery: ``method``, the raw ``body`` and the request ``headers``
        (names in any case)."""
        if method.upper() != "POST":
            self._count("not_allowed")
            return _answer(405, (("allow", "POST"),), error="only POST is allowed")
        if len(body) > MAX_BODY_BYTES:
            return self.too_large()
        lowered = {name.lower(): value for name, value in headers.items()}
        try:
            event = self._verifier.unwrap(body, lowered)
        except WebhookRejected as exc:
            self._count("rejected")
            log.warning("webhook refused: %s", exc)
            return _answer(400, error="invalid webhook signature")
        webhook_id = lowered["webhook-id"]
        if not self._seen.claim(webhook_id):
            self._count("replayed")
            log.warning("webhook %s refused: already received (a replay)", webhook_id)
            return _answer(400, error="webhook already received")
        try:
            return self._event(webhook_id, event)
        except Exception as exc:
            self._seen.release(webhook_id)  # the provider retries it: take the retry
            self._count("failed")
            log.error(
                "webhook %s: handling failed, the provider will retry: %s: %s",
                webhook_id,
                type(exc).__name__,
                exc,
            )
            return _answer(500, error="the event could not be handled; retry later")

    def _event(self, webhook_id: str, event: Any) -> WebhookResponse:
        """Drive the run that owns the event's batch, if it is a batch event of batchor's."""
        kind = getattr(event, "type", None)
        batch_id = getattr(getattr(event, "data", None), "id", None)
        if kind not in BATCH_EVENTS or not isinstance(batch_id, str) or not batch_id:
            self._count("ignored")
            log.info("webhook %s: %s event ignored", webhook_id, kind)
            return _answer(200, ignored=True)
        store = self._runner.store
        run_id = store.run_of_provider_batch(batch_id)
        if run_id is None:
            self._count("ignored")
            log.info("webhook %s: %s of %s, a batch of no run here", webhook_id, kind, batch_id)
            return _answer(200, ignored=True)
        with self._locks[zlib.crc32(run_id.encode()) % len(self._locks)]:
            record = store.get_run(run_id)
            if record is None:
                self._count("ignored")
                return _answer(200, ignored=True)
            store.note_webhook(record.pk, time.time())
            try:
                summary = self._runner.get_run(run_id).refresh()
            except RunNotFoundError:  # deleted meanwhile
                self._count("ignored")
                return _answer(200, ignored=True)
        self._count("refreshed")
        log.info(
            "webhook %s: %s of %s: run %s refreshed, now %s",
            webhook_id,
            kind,
            batch_id,
            run_id,
            summary.status.value,
        )
        return _answer(200, run_id=run_id, status=summary.status.value)
