"""Signed webhook events from the emulator, as OpenAI sends them.

When a batch ends, OpenAI POSTs a ``batch.completed``, ``batch.failed``, ``batch.expired``
or ``batch.cancelled`` event to each configured endpoint, signed by the Standard Webhooks
scheme the ``openai`` SDK verifies: headers ``webhook-id`` (the same on every retry of a
delivery), ``webhook-timestamp`` (the attempt's time, Unix seconds) and
``webhook-signature`` (``v1,`` then the base64 HMAC-SHA256 of ``"{id}.{timestamp}.{body}"``
keyed by the base64-decoded part of the ``whsec_...`` secret). A delivery not answered
2xx is retried with backoff. Standard library only.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchor.testing.emulator.stats import EmulatorStats

_log = logging.getLogger(__name__)

EVENT_TYPES: dict[str, str] = {
    "completed": "batch.completed",
    "failed": "batch.failed",
    "expired": "batch.expired",
    "cancelled": "batch.cancelled",
}
"""The event sent when a batch ends in each status."""

USER_AGENT = "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"
"""The ``user-agent`` OpenAI's deliveries carry."""


def new_webhook_secret() -> str:
    """A fresh signing secret in OpenAI's form: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def _key(secret: str) -> bytes:
    """The HMAC key of a secret, decoded as the ``openai`` SDK decodes it."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_") :])
    return secret.encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header of ``body``: ``v1,<base64 HMAC-SHA256>``."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(
    secret: str, body: bytes, *, webhook_id: str | None = None, timestamp: int | None = None
) -> dict[str, str]:
    """The headers of one delivery of ``body``: a new ``webhook-id`` unless given, the
    current time unless given, and the signature."""
    webhook_id = webhook_id or "wh_" + os.urandom(16).hex()
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, webhook_id, timestamp, body),
    }


def batch_event(batch: Mapping[str, Any]) -> dict[str, Any] | None:
    """The event for a batch (its API JSON dict) that has just ended, or None if it has
    not ended."""
    status = str(batch.get("status"))
    kind = EVENT_TYPES.get(status)
    if kind is None:
        return None
    return {
        "object": "event",
        "id": "evt_" + os.urandom(16).hex(),
        "type": kind,
        "created_at": int(batch.get(f"{status}_at") or time.time()),
        "data": {"id": batch["id"]},
    }


@dataclass
class _Delivery:
    webhook_id: str
    kind: str
    body: bytes
    attempt: int = 0


class WebhookSender:
    """Posts batch events to one URL from a background thread, one delivery at a time,
    retrying one not answered 2xx (a connection refused included) after ``retry_seconds``,
    doubled each time, up to ``attempts`` attempts.

    Args:
        url: Where to POST.
        secret: The signing secret (``whsec_...``).
        stats: Where deliveries are counted.
        attempts: Attempts per event, the first included.
        retry_seconds: Pause before the first retry.
        timeout: Seconds to wait for an answer.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        stats: EmulatorStats,
        *,
        attempts: int = 5,
        retry_seconds: float = 0.1,
        timeout: float = 30.0,
    ) -> None:
        """Configure the sender; nothing is sent until `start`."""
        self.url = url
        self._secret = secret
        self._stats = stats
        self._attempts = max(1, attempts)
        self._retry = retry_seconds
        self._timeout = timeout
        self._queue: list[tuple[float, int, _Delivery]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name="batch-emulator-webhooks", daemon=True
        )
        # Straight to the URL: a proxy from the environment has no business with loopback.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def start(self) -> None:
        """Start the sending thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sending (deliveries not made yet are dropped)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=self._timeout + 1)

    def batch_ended(self, batch: Mapping[str, Any]) -> None:
        """Queue the event of a batch (its API JSON dict) that has just ended."""
        event = batch_event(batch)
        if event is None:
            return
        body = json.dumps(event, separators=(",", ":")).encode()
        delivery = _Delivery("wh_" + os.urandom(16).hex(), event["type"], body)
        with self._cond:
            heapq.heappush(self._queue, (time.monotonic(), next(self._seq), delivery))
            self._cond.notify()

    def _next(self) -> _Delivery | None:
        with self._cond:
            while not self._stopping:
                if not self._queue:
                    self._cond.wait()
                    continue
                delay = self._queue[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                return heapq.heappop(self._queue)[2]
            return None

    def _run(self) -> None:
        while (delivery := self._next()) is not None:
            delivery.attempt += 1
            status = self._post(delivery)
            delivered = status is not None and 200 <= status < 300
            self._stats.record_webhook(delivery.kind, delivered)
            if delivered or delivery.attempt >= self._attempts:
                if not delivered:
                    _log.warning("webhook %s to %s given up", delivery.webhook_id, self.url)
                continue
            due = time.monotonic() + self._retry * 2 ** (delivery.attempt - 1)
            with self._cond:
                heapq.heappush(self._queue, (due, next(self._seq), delivery))

    def _post(self, delivery: _Delivery) -> int | None:
        """One attempt: the HTTP status answered, or None without an answer."""
        headers = signed_headers(self._secret, delivery.body, webhook_id=delivery.webhook_id)
        request = urllib.request.Request(self.url, data=delivery.body, headers=headers)
        try:
            with self._opener.open(request, timeout=self._timeout) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return int(exc.code)
        except OSError as exc:
            _log.info("webhook %s to %s: no answer: %s", delivery.webhook_id, self.url, exc)
            return None
