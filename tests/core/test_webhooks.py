"""Webhooks: the emulator posts OpenAI's signed ``batch.*`` events to the receiver (the
``batchor webhooks serve`` server, or the ASGI app under uvicorn), the real ``openai`` SDK
verifies them, and each valid one takes one step of the run that owns the batch. Nobody
polls: every ``GET /v1/batches/{id}`` the emulator sees is one the webhooks caused. Forged,
stale and replayed deliveries are refused and change nothing."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai.types.webhooks import (
    BatchCancelledWebhookEvent,
    BatchCompletedWebhookEvent,
    BatchExpiredWebhookEvent,
    BatchFailedWebhookEvent,
)

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    BatchStatus,
    ConfigurationError,
    ItemStatus,
    OpenAIProviderConfig,
    RunStatus,
    WaitTimeout,
)
from batchor.cli.main import cli
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator
from batchor.testing.emulator.service import DEFAULT_API_KEY
from batchor.testing.emulator.webhooks import batch_event, new_webhook_secret, signed_headers
from batchor.webhooks import (
    TOLERANCE_SECONDS,
    WEBHOOK_SECRET_ENV,
    SeenWebhooks,
    WebhookServer,
    webhook_app,
)

from .conftest import make_items, prompt

GET_BATCH = ("GET", "/v1/batches/{id}")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _job(emu: OpenAIBatchEmulator, n: int, *, max_requests: int = 50_000) -> BatchJob:
    return BatchJob(
        items=make_items(n),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
        ),
        limits=BatchLimits(max_requests=max_requests),
    )


def _store(tmp_path: Path) -> tuple[str, Path]:
    return f"sqlite:///{tmp_path}/store/batchor.db", tmp_path / "artifacts"


def _receiver_runner(tmp_path: Path, api_key: str | None = DEFAULT_API_KEY) -> BatchRunner:
    """A second runner on the test's store, as a receiver process has (the job's key is
    never stored: the receiver brings its own)."""
    store, artifacts = _store(tmp_path)
    return BatchRunner(store=store, artifacts=artifacts, api_key=api_key)


def _post(url: str, body: bytes, headers: dict[str, str], method: str = "POST") -> int:
    request = urllib.request.Request(url, data=body or None, headers=headers, method=method)
    try:
        with _DIRECT.open(request, timeout=30) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)


def _settle(
    runner: BatchRunner, emu: OpenAIBatchEmulator, run_id: str, events: int, within: float = 20
) -> None:
    """Wait (reading the store and the stats, never the provider) until the run is terminal
    and ``events`` deliveries were answered."""
    stop = time.monotonic() + within
    while time.monotonic() < stop:
        record = runner.store.get_run(run_id)
        assert record is not None
        delivered = sum(emu.stats.webhooks_delivered.values())
        if record.status.is_terminal and delivered >= events:
            return
        time.sleep(0.02)
    raise AssertionError(
        f"run {run_id} still {record.status.value} with {delivered}/{events} webhooks delivered"
    )


def _event_body(batch_id: str, kind: str = "batch.completed") -> bytes:
    event = {
        "object": "event",
        "id": "evt_" + os.urandom(8).hex(),
        "type": kind,
        "created_at": int(time.time()),
        "data": {"id": batch_id},
    }
    return json.dumps(event).encode()


# ---- webhooks drive runs ---------------------------------------------------------------


def test_webhooks_drive_a_run_to_completion_with_no_polling(
    runner: BatchRunner, tmp_path: Path
) -> None:
    # The first batch expires half answered (a batch.expired event): its step keeps the
    # answers and sends the rest in a second batch, whose batch.completed ends the run.
    secret = new_webhook_secret()
    with (
        _receiver_runner(tmp_path) as receiving,
        WebhookServer(receiving, secret=secret) as server,
        OpenAIBatchEmulator(
            phase_seconds=0.05,
            faults=EmulatorFaults(expire_count=1),
            webhook_url=server.url,
            webhook_secret=secret,
        ) as emu,
    ):
        runner.start(_job(emu, 6), "hooked")
        assert emu.stats.calls[GET_BATCH] == 0  # started: batch sent, never polled
        _settle(runner, emu, "hooked", events=2)

        run = runner.get_run("hooked")
        summary = run.summary()
        assert summary.status is RunStatus.COMPLETED
        assert summary.completed == 6
        results = list(run.results())
        assert [r.item_id for r in results] == [f"item-{i}" for i in range(6)]
        assert all(r.status is ItemStatus.COMPLETED for r in results)
        assert emu.stats.webhooks_delivered == {"batch.expired": 1, "batch.completed": 1}
        assert emu.stats.webhooks_sent == emu.stats.webhooks_delivered  # no retries
        # One step per event, each polling the one batch its event announced.
        assert server.receiver.outcomes == {"refreshed": 2}
        assert emu.stats.calls[GET_BATCH] == 2
        record = runner.store.get_run("hooked")
        assert record is not None
        assert record.webhook_at is not None
        assert abs(record.webhook_at - time.time()) < 60
        calls = emu.stats.calls
        time.sleep(0.3)
        assert emu.stats.calls == calls  # nothing polls behind the webhooks' back


def test_the_asgi_app_under_uvicorn_drives_a_run(runner: BatchRunner, tmp_path: Path) -> None:
    uvicorn = pytest.importorskip("uvicorn")
    secret = new_webhook_secret()
    with _receiver_runner(tmp_path) as receiving:
        app = webhook_app(receiving, secret=secret)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{sock.getsockname()[1]}/webhooks/openai"
            with OpenAIBatchEmulator(
                phase_seconds=0.05, webhook_url=url, webhook_secret=secret
            ) as emu:
                runner.start(_job(emu, 6, max_requests=2), "asgi")  # three batches at once
                assert emu.stats.calls[GET_BATCH] == 0
                _settle(runner, emu, "asgi", events=3)
                summary = runner.get_run("asgi").summary()
                assert summary.status is RunStatus.COMPLETED
                assert summary.completed == 6
                assert emu.stats.webhooks_delivered == {"batch.completed": 3}
                assert app.receiver.outcomes == {"refreshed": 3}
                # Each step polls the batches still live in the store: each batch once when
                # ended, and at most the two later ones once before.
                assert 3 <= emu.stats.calls[GET_BATCH] <= 6
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            sock.close()


# ---- refused deliveries ----------------------------------------------------------------


@pytest.fixture
def live(runner: BatchRunner, tmp_path: Path) -> Iterator[tuple[OpenAIBatchEmulator, str]]:
    """An emulator (sending no webhooks) with the run ``live`` started: one batch, live
    for a few seconds; yields the emulator and the batch's provider id."""
    with OpenAIBatchEmulator(phase_seconds=2.0) as emu:
        runner.start(_job(emu, 3), "live")
        record = runner.store.get_run("live")
        assert record is not None
        (batch,) = runner.store.batches(record.pk, [BatchStatus.SUBMITTED])
        assert batch.provider_batch_id is not None
        yield emu, batch.provider_batch_id


def _snapshot(runner: BatchRunner, emu: OpenAIBatchEmulator) -> tuple[Any, ...]:
    """Everything a delivery could change: the run's row, its batches, its items, and the
    provider calls made."""
    record = runner.store.get_run("live")
    assert record is not None
    return (
        record,
        runner.store.batches(record.pk, list(BatchStatus)),
        runner.store.item_counts(record.pk),
        emu.stats.calls,
    )


def test_forged_stale_and_replayed_deliveries_change_nothing(
    runner: BatchRunner, tmp_path: Path, live: tuple[OpenAIBatchEmulator, str]
) -> None:
    emu, batch_id = live
    secret = new_webhook_secret()
    body = _event_body(batch_id)
    now = int(time.time())
    refused = {
        "forged": (body, signed_headers(new_webhook_secret(), body)),
        "tampered": (body, signed_headers(secret, _event_body(batch_id, "batch.failed"))),
        "stale": (body, signed_headers(secret, body, timestamp=now - TOLERANCE_SECONDS - 30)),
        "ahead": (body, signed_headers(secret, body, timestamp=now + TOLERANCE_SECONDS + 30)),
        "unsigned": (
            body,
            {k: v for k, v in signed_headers(secret, body).items() if k != "webhook-signature"},
        ),
        "not json": (b"{oops", signed_headers(secret, b"{oops")),
    }
    with _receiver_runner(tmp_path) as receiving, WebhookServer(receiving, secret=secret) as server:
        before = _snapshot(runner, emu)
        for name, (payload, headers) in refused.items():
            assert _post(server.url, payload, headers) == 400, name
            assert _snapshot(runner, emu) == before, name
        assert _post(server.url, b"", {}, method="GET") == 405
        assert _snapshot(runner, emu) == before
        assert before[0].webhook_at is None

        valid = signed_headers(secret, body)
        assert _post(server.url, body, valid) == 200
        after = _snapshot(runner, emu)
        assert after[0].webhook_at is not None
        assert after[3][GET_BATCH] == before[3][GET_BATCH] + 1  # the one step it took

        assert _post(server.url, body, valid) == 400  # the same delivery again: a replay
        assert _snapshot(runner, emu) == after
        assert server.receiver.outcomes == {
            "rejected": len(refused),
            "not_allowed": 1,
            "refreshed": 1,
            "replayed": 1,
        }


def test_events_of_no_run_are_acknowledged_and_do_nothing(
    runner: BatchRunner, tmp_path: Path, live: tuple[OpenAIBatchEmulator, str]
) -> None:
    emu, batch_id = live
    secret = new_webhook_secret()
    with _receiver_runner(tmp_path) as receiving, WebhookServer(receiving, secret=secret) as server:
        before = _snapshot(runner, emu)
        for body in (
            _event_body("batch_not_ours"),
            _event_body("resp_123", "response.completed"),
            _event_body(batch_id, "fine_tuning.job.succeeded"),
        ):
            assert _post(server.url, body, signed_headers(secret, body)) == 200
        assert _snapshot(runner, emu) == before
        assert server.receiver.outcomes == {"ignored": 3}


def test_a_failed_step_answers_500_and_the_providers_retry_is_taken(
    runner: BatchRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = new_webhook_secret()
    with OpenAIBatchEmulator(phase_seconds=2.0, api_key="sk-the-right-key") as emu:
        runner.start(_job(emu, 2), "keyed")
        record = runner.store.get_run("keyed")
        assert record is not None
        (batch,) = runner.store.batches(record.pk, [BatchStatus.SUBMITTED])
        assert batch.provider_batch_id is not None
        body = _event_body(batch.provider_batch_id)
        with (
            _receiver_runner(tmp_path, api_key=None) as receiving,  # key from the environment
            WebhookServer(receiving, secret=secret) as server,
        ):
            monkeypatch.setenv("OPENAI_API_KEY", "sk-a-wrong-key")
            first = signed_headers(secret, body)
            assert _post(server.url, body, first) == 500
            assert server.receiver.outcomes == {"failed": 1}
            assert "ProviderAuthError" in caplog.text
            assert secret not in caplog.text
            assert "sk-a-wrong-key" not in caplog.text

            # The provider retries the same delivery (same webhook-id, a new timestamp).
            monkeypatch.setenv("OPENAI_API_KEY", "sk-the-right-key")
            retry = signed_headers(secret, body, webhook_id=first["webhook-id"])
            assert _post(server.url, body, retry) == 200
            assert server.receiver.outcomes == {"failed": 1, "refreshed": 1}


# ---- wait backs off while webhooks flow ------------------------------------------------


def test_wait_polls_at_its_longest_interval_while_webhooks_flow(runner: BatchRunner) -> None:
    with OpenAIBatchEmulator(phase_seconds=1.5) as emu:  # the batch lives 4.5 s
        run = runner.start(_job(emu, 2), "waiting")

        def steps() -> int:
            seen: list[object] = []
            with pytest.raises(WaitTimeout):
                run.wait(1.0, poll_interval=0.02, max_poll_interval=0.5, on_progress=seen.append)
            return len(seen)

        polled = steps()
        record = runner.store.get_run("waiting")
        assert record is not None
        assert record.webhook_at is None
        runner.store.note_webhook(record.pk, time.time())
        hooked = steps()
        assert polled >= 5  # 0, .02, .06, .14, .30, .62, 1.0 s
        assert hooked <= 3  # 0, .5, 1.0 s


# ---- the parts -------------------------------------------------------------------------


def test_the_secret_is_required_and_never_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(WEBHOOK_SECRET_ENV, raising=False)
    with BatchRunner(store="memory://", artifacts=tmp_path) as runner:
        with pytest.raises(ConfigurationError, match=WEBHOOK_SECRET_ENV):
            webhook_app(runner)
        with pytest.raises(ConfigurationError, match=WEBHOOK_SECRET_ENV):
            WebhookServer(runner)
        bad = "whsec_not*base64*at*all"
        monkeypatch.setenv(WEBHOOK_SECRET_ENV, bad)
        with pytest.raises(ConfigurationError, match=WEBHOOK_SECRET_ENV) as caught:
            webhook_app(runner)
        assert bad not in str(caught.value)
        monkeypatch.setenv(WEBHOOK_SECRET_ENV, new_webhook_secret())
        app = webhook_app(runner)
        assert "whsec_" not in repr(app.receiver)


def _asgi(app: Any, method: str, body: bytes = b"", headers: dict[str, str] | None = None) -> int:
    """One HTTP request through the ASGI interface; returns the status answered."""
    sent: list[dict[str, Any]] = []
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": "/",
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    asyncio.run(app(scope, receive, send))
    assert sent[-1]["type"] == "http.response.body"
    return int(sent[0]["status"])


def test_the_asgi_app_refuses_what_is_not_a_signed_post(tmp_path: Path) -> None:
    secret = new_webhook_secret()
    with BatchRunner(store="memory://", artifacts=tmp_path) as runner:
        app = webhook_app(runner, secret=secret)
        body = _event_body("batch_x")
        assert _asgi(app, "GET") == 405
        assert _asgi(app, "POST", body, signed_headers(new_webhook_secret(), body)) == 400
        assert _asgi(app, "POST", b"x" * (2 << 20)) == 413
        assert _asgi(app, "POST", body, signed_headers(secret, body)) == 200  # not ours
        assert app.receiver.outcomes == {
            "not_allowed": 1,
            "rejected": 2,
            "ignored": 1,
        }


@pytest.mark.parametrize(
    ("status", "model"),
    [
        ("completed", BatchCompletedWebhookEvent),
        ("failed", BatchFailedWebhookEvent),
        ("expired", BatchExpiredWebhookEvent),
        ("cancelled", BatchCancelledWebhookEvent),
    ],
)
def test_the_emulators_events_are_openais(status: str, model: type[Any]) -> None:
    batch = {"id": "batch_abc", "status": status, f"{status}_at": 1_750_000_000}
    event = batch_event(batch)
    assert event is not None
    parsed = model.model_validate(event, strict=True)
    assert parsed.data.id == "batch_abc"
    assert parsed.created_at == 1_750_000_000
    secret = new_webhook_secret()
    body = json.dumps(event).encode()
    client = openai.OpenAI(api_key="unused", webhook_secret=secret)
    unwrapped = client.webhooks.unwrap(body, signed_headers(secret, body))
    assert isinstance(unwrapped, model)
    assert batch_event({"id": "batch_abc", "status": "in_progress"}) is None


def test_seen_webhooks_forget_after_their_window_and_past_their_bound() -> None:
    now = [0.0]
    seen = SeenWebhooks(keep_seconds=10, max_ids=3, clock=lambda: now[0])
    assert seen.claim("a")
    assert not seen.claim("a")
    seen.release("a")
    assert seen.claim("a")
    now[0] = 11.0
    assert seen.claim("a")  # outside the window: forgotten
    for name in ("b", "c", "d"):
        assert seen.claim(name)
    assert len(seen) == 3
    assert seen.claim("a")


# ---- the command -----------------------------------------------------------------------


def test_serve_without_a_secret_exits_2_before_opening_the_store(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from click.testing import CliRunner

    monkeypatch.delenv(WEBHOOK_SECRET_ENV, raising=False)
    result = CliRunner().invoke(cli, ["webhooks", "serve", "--port", "0"])
    assert result.exit_code == 2
    assert WEBHOOK_SECRET_ENV in result.stderr
    assert not (tmp_path / ".batchor").exists()


@pytest.mark.slow
def test_batchor_webhooks_serve_drives_a_run(runner: BatchRunner, tmp_path: Path) -> None:
    secret = new_webhook_secret()
    store, artifacts = _store(tmp_path)
    env = {
        **os.environ,
        WEBHOOK_SECRET_ENV: secret,
        "OPENAI_API_KEY": DEFAULT_API_KEY,
        "BATCHOR_STORE": store,
        "BATCHOR_ARTIFACTS": str(artifacts),
    }
    code = "from batchor.cli.main import main; main()"
    command = [sys.executable, "-c", code, "webhooks", "serve", "--port", "0"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("receiving webhooks on http://127.0.0.1:"), line
        url = line.split()[-1]
        with OpenAIBatchEmulator(phase_seconds=0.05, webhook_url=url, webhook_secret=secret) as emu:
            runner.start(_job(emu, 4), "served")
            _settle(runner, emu, "served", events=1)
            assert runner.get_run("served").summary().completed == 4
            assert emu.stats.calls[GET_BATCH] == 1
        body = _event_body("batch_x")
        assert _post(url, body, signed_headers(new_webhook_secret(), body)) == 400
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
