"""A 20,000-item structured Gemini job soaked in faults, through the real ``google-genai`` SDK
and `GeminiBatchEmulator`: errored lines (``INTERNAL`` 13 and ``UNAVAILABLE`` 14, retried;
``INVALID_ARGUMENT`` 3, not), replies that fail validation (not JSON, or JSON that does not fit
the schema), a batch that expires with part of its lines answered (its output kept), a create
that lands on the server but never answers, and a storm of 500s and 503s on every route.

Every item must end completed (typed) or failed with a reason; a retryable failure is retried
up to ``max_attempts`` and no further; an invalid request is never retried; nothing answered
is bought again (per key, the batches' output files answer it exactly as many times as the
item was charged an attempt, with at most one usable answer, and the batches' input files
send it once more only where the expired batch left it unanswered); and there is exactly one
provider batch per batch key (read back from the display names). Prints a table for the
closing note (run with ``-s`` to see it). The engine's backoff is shortened
(tests/core/conftest.py), and so is the transport's own retry backoff (here), so the wall
time is the work's, not the waits'.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

import pytest

genai = pytest.importorskip("google.genai")  # the provider's optional extra

from pydantic import ValidationError  # noqa: E402

from batchor import (  # noqa: E402
    BatchJob,
    BatchLimits,
    BatchRunner,
    ItemStatus,
    RetryPolicy,
    RunStatus,
)
from batchor.providers.gemini import GeminiProviderConfig  # noqa: E402
from batchor.providers.gemini import errors as gemini_errors  # noqa: E402
from batchor.providers.gemini import tags as gemini_tags  # noqa: E402
from batchor.testing.gemini import GeminiBatchEmulator, GeminiFaults  # noqa: E402
from batchor.testing.gemini import routes as r  # noqa: E402

from .conftest import Sentiment, make_items, prompt  # noqa: E402

ITEMS: Final = 20_000
MAX_REQUESTS: Final = 5_000
MAX_ATTEMPTS: Final = 3
MODEL: Final = "gemini-2.5-flash"
ROUTES: Final = tuple(
    f"{method} {route}"
    for method, route in (
        ("GET", r.BATCHES),
        ("GET", r.BATCH),
        ("GET", r.FILES),
        ("GET", r.DOWNLOAD),
        ("POST", r.UPLOAD),
        ("POST", r.UPLOAD_BYTES),
        ("POST", r.CREATE),
    )
)
STORM: Final = 3  # per route: the first 3 calls answer 500, the next 3 answer 503
VARIABLES: Final = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL")


@pytest.fixture(autouse=True)
def _no_gemini_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _quick_transport_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # As the engine's (tests/core/conftest.py): the transport's own retries of idempotent
    # calls back off from 0.05 s instead of 0.5 s, so the storm costs the work, not the waits.
    monkeypatch.setattr(gemini_errors.retrying, "__defaults__", (0.05, 30.0))


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _bad_request(key: str) -> bool:
    """1% of the requests are malformed: refused ``INVALID_ARGUMENT`` however often sent."""
    return _digest(key)[0] < 256 * 0.01


def _faults() -> GeminiFaults:
    mismatch = random.Random(14)  # drawn only by the emulator's one worker thread

    def line_fault(key: str, _request: Any) -> str | None:
        if _bad_request(key):
            return "bad_request"
        return "schema_mismatch" if mismatch.random() < 0.02 else None

    def unavailable(line: dict[str, Any]) -> dict[str, Any]:
        # Half of the INTERNAL (13) line errors answer UNAVAILABLE (14) instead.
        error = line.get("error")
        if error and error.get("code") == 13 and _digest(line["key"])[1] & 1:
            line = {**line, "error": {**error, "code": 14, "status": "UNAVAILABLE"}}
            line["error"]["message"] = "The service is currently unavailable."
        return line

    return GeminiFaults(
        seed=14,
        # ~5% errored lines: 1% INVALID_ARGUMENT (per request: a malformed request stays
        # malformed), 4% drawn per line sent, half INTERNAL and half UNAVAILABLE.
        line_fault=line_fault,
        line_server_error_rate=0.04,
        line_rewrite=unavailable,
        # ~5% replies that fail validation: 2% JSON that does not fit the schema, 3% not JSON.
        line_invalid_json_rate=0.03,
        # The first batch made expires with half of its lines answered, its output kept.
        expire_count=1,
        expire_keeps_output=True,
        # One create lands on the server and never answers.
        create_drop_connection_count=1,
        # A storm on every route: the first calls answer 500, the next 503.
        route_server_error_counts=dict.fromkeys(ROUTES, STORM),
        route_unavailable_counts=dict.fromkeys(ROUTES, STORM),
        shuffle_output=True,
    )


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _reply(line: dict[str, Any]) -> str | None:
    """The reply text of an output line, or ``None`` for an error line."""
    if "response" not in line:
        return None
    parts = line["response"]["candidates"][0]["content"]["parts"]
    return "".join(part.get("text", "") for part in parts)


def _usable(line: dict[str, Any]) -> bool:
    """Whether an output line is a usable answer (a reply that validates into the model)."""
    text = _reply(line)
    if text is None:
        return False
    try:
        Sentiment.model_validate_json(text)
    except ValidationError:
        return False
    return True


@pytest.mark.slow
def test_a_20000_item_soak_ends_every_item_and_buys_nothing_twice(tmp_path: Path) -> None:
    faults = _faults()
    with GeminiBatchEmulator(faults=faults) as emu:
        config = GeminiProviderConfig(model=MODEL, api_key=emu.api_key, base_url=emu.base_url)
        job = BatchJob(
            items=make_items(ITEMS),
            build_prompt=prompt,
            provider_config=config,
            structured_output=Sentiment,
            retry_policy=RetryPolicy(max_attempts=MAX_ATTEMPTS),
            limits=BatchLimits(max_requests=MAX_REQUESTS),
        )
        began = time.perf_counter()
        with BatchRunner(f"sqlite:///{tmp_path}/s.db", tmp_path / "a") as runner:
            run = runner.start(job, "gm-soak")
            summary = run.wait(timeout=1800, poll_interval=0.05, max_poll_interval=0.25)
            wall = time.perf_counter() - began
            results = list(run.results())
            rows = run.batches()
        calls = emu.stats.calls
        names = emu.stats.batches_by_metadata("display_name")
        remote = [b["metadata"] for b in emu.batches()]
        assert emu.data_dir is not None
        data = emu.data_dir
        # What each batch was sent (its input file) and answered (its output file).
        sent = {
            b["name"]: _jsonl(
                data / ("file-" + b["inputConfig"]["fileName"].removeprefix("files/"))
            )
            for b in remote
        }
        answered = {
            b["name"]: _jsonl(
                data / ("file-" + b["output"]["responsesFile"].removeprefix("files/"))
            )
            for b in remote
            if "output" in b
        }

    # Every item ended: completed and typed, or failed with a reason.
    assert summary.status is RunStatus.COMPLETED_WITH_FAILURES
    assert [res.item_id for res in results] == [f"item-{i}" for i in range(ITEMS)]
    assert {res.status for res in results} == {ItemStatus.COMPLETED, ItemStatus.FAILED}
    completed = [res for res in results if res.status is ItemStatus.COMPLETED]
    failed = [res for res in results if res.status is ItemStatus.FAILED]
    assert all(isinstance(res.output, Sentiment) and res.error is None for res in completed)
    for res in failed:
        assert res.error is not None, res
        assert res.error.error_class, res
        assert res.error.message, res
        assert res.output is None
    assert (summary.completed, summary.failed) == (len(completed), len(failed))

    # Attempts: never past the policy; a retryable failure only once they are spent; an
    # invalid request fails on its first attempt and is never sent again.
    assert all(1 <= res.attempts <= MAX_ATTEMPTS for res in results)
    key_of = {res.item_id: str(i + 1) for i, res in enumerate(results)}  # keys: 1-based seq
    bad = {item for item, key in key_of.items() if _bad_request(key)}
    for res in failed:
        assert res.error is not None
        if res.item_id in bad:
            assert (res.error.error_class, res.error.retryable, res.attempts) == (
                "invalid_request",
                False,
                1,
            ), res
            assert res.error.message.startswith("INVALID_ARGUMENT: "), res
        else:
            assert res.error.retryable, res
            assert res.attempts == MAX_ATTEMPTS, res
    assert bad <= {res.item_id for res in failed}

    # Nothing answered was bought twice: per key, the output files answer it exactly as many
    # times as the item was charged an attempt, at most once usably (and that once is the
    # item's output); the input files send it once more only where the expired batch did
    # not answer it.
    (expired,) = [b for b in remote if b["state"] == "BATCH_STATE_EXPIRED"]
    lines = [line for batch in answered.values() for line in batch]
    answers = Counter(line["key"] for line in lines)
    sends = Counter(line["key"] for batch in sent.values() for line in batch)
    expired_sent = {line["key"] for line in sent[expired["name"]]}
    expired_answered = {line["key"] for line in answered[expired["name"]]}
    unanswered = expired_sent - expired_answered
    assert 0 < len(expired_answered) < len(expired_sent)
    attempts = {key_of[res.item_id]: res.attempts for res in results}
    assert answers == attempts
    assert sends == {key: attempts[key] + (key in unanswered) for key in attempts}
    usable = Counter(line["key"] for line in lines if _usable(line))
    assert max(usable.values()) == 1
    assert set(usable) == {key_of[res.item_id] for res in completed}
    answer_of = {line["key"]: _reply(line) for line in lines if _usable(line)}
    for res in completed:
        assert res.output_text == answer_of[key_of[res.item_id]], res.item_id
    codes = Counter(line["error"]["code"] for line in lines if "error" in line)
    assert set(codes) == {3, 13, 14}

    # Exactly one provider batch per batch key (read back from the display names), and every
    # provider batch is a batch row's.
    keys: Counter[str] = Counter()
    for name, count in names.items():
        tag = gemini_tags.read_display_name(name)
        assert isinstance(tag, dict), name
        keys[tag[gemini_tags.META_BATCH_KEY]] += count
    assert keys == {row.batch_key: 1 for row in rows}
    assert sorted(row.provider_batch_id or "" for row in rows) == sorted(b["name"] for b in remote)
    assert len(rows) >= ITEMS // MAX_REQUESTS
    # Every planned fault fired: the storm on every route, the expiry, the create that never
    # answered (adopted: every provider batch is a row's above).
    assert faults.route_server_error_counts == dict.fromkeys(ROUTES, 0)
    assert faults.route_unavailable_counts == dict.fromkeys(ROUTES, 0)
    assert (faults.expire_count, faults.create_drop_connection_count) == (0, 0)

    print("\n" + _table(results, rows, remote, calls, sends, unanswered, codes, wall, expired))


def _table(
    results: list[Any],
    rows: list[Any],
    remote: list[dict[str, Any]],
    calls: Counter[tuple[str, str]],
    sends: Counter[str],
    unanswered: set[str],
    codes: Counter[int],
    wall: float,
    expired: dict[str, Any],
) -> str:
    failed = Counter(
        res.error.error_class for res in results if res.status is ItemStatus.FAILED and res.error
    )
    done = sum(1 for res in results if res.status is ItemStatus.COMPLETED)
    histogram = Counter(res.attempts for res in results)
    statuses = Counter(row.provider_status for row in rows)
    stats = expired["batchStats"]
    expired_answered = int(stats.get("successfulRequestCount", 0)) + int(
        stats.get("failedRequestCount", 0)
    )
    out = [
        f"| Gemini soak ({ITEMS:,} structured items, max_attempts {MAX_ATTEMPTS}, "
        f"max_requests {MAX_REQUESTS:,}) | |",
        "|---|---|",
        f"| items completed (typed) | {done:,} |",
        f"| items failed | {sum(failed.values()):,} ("
        + ", ".join(f"{k} {v:,}" for k, v in sorted(failed.items()))
        + ") |",
        "| attempts histogram | "
        + ", ".join(f"{k}: {v:,}" for k, v in sorted(histogram.items()))
        + " |",
        f"| requests sent | {sum(sends.values()):,} (= attempts charged "
        f"{sum(res.attempts for res in results):,} + unanswered by the expiry "
        f"{len(unanswered):,}) |",
        "| line errors answered | "
        + ", ".join(f"code {k}: {v:,}" for k, v in sorted(codes.items()))
        + " |",
        f"| provider batches / batch rows / batch keys | {len(remote)} / {len(rows)} / "
        f"{len({row.batch_key for row in rows})} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
        + ") |",
        f"| expired batch | {expired_answered:,} of {int(stats['requestCount']):,} answered |",
        f"| HTTP calls | {sum(calls.values()):,} ("
        + ", ".join(f"{m} {route} {n:,}" for (m, route), n in sorted(calls.items()))
        + ") |",
        "| faults | errored lines ~5% (INVALID_ARGUMENT 1% of requests; INTERNAL 2%, "
        "UNAVAILABLE 2% of lines sent), replies failing validation ~5% (schema mismatch 2%, "
        f"not JSON 3%), 1 batch expired at 50% (output kept), 1 create answered by a dropped "
        f"connection, the first {STORM} calls of each of {len(ROUTES)} routes 500 then "
        f"{STORM} 503 |",
        f"| wall time | {wall:.1f} s |",
    ]
    return "\n".join(out)
