"""A 20,000-item structured Anthropic job soaked in faults, through the real ``anthropic`` SDK
and `AnthropicBatchEmulator`: errored lines (overloaded, api error, invalid request), replies
that fail validation, a batch that expires with part of its requests answered, a create that
lands on the server but never answers, and a storm of 500s and 529s on every route.

Every item must end completed (typed) or failed with a reason; a retryable failure is retried
up to ``max_attempts`` and no further; an invalid request is never retried; nothing answered
is bought again (per request, the emulator was sent it exactly as many times as the item was
charged an attempt, plus the times it went unanswered); and every provider batch is one batch
row's. Prints a table for the closing note (run with ``-s`` to see it). The engine's backoff
is shortened (tests/core/conftest.py), so the wall time is the work's, not the waits'.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

import pytest

anthropic = pytest.importorskip("anthropic")

from pydantic import ValidationError  # noqa: E402

from batchor import (  # noqa: E402
    BatchJob,
    BatchLimits,
    BatchRunner,
    ItemStatus,
    RetryPolicy,
    RunStatus,
)
from batchor.providers.anthropic import AnthropicProviderConfig  # noqa: E402
from batchor.testing.anthropic import (  # noqa: E402
    AnthropicBatchEmulator,
    AnthropicEmulatorFaults,
)

from .conftest import Sentiment, make_items, prompt  # noqa: E402

ITEMS: Final = 20_000
MAX_REQUESTS: Final = 5_000
MAX_ATTEMPTS: Final = 3
PREFIX: Final = "/v1/messages/batches"
ROUTES: Final = (
    f"POST {PREFIX}",
    f"GET {PREFIX}",
    f"GET {PREFIX}/{{id}}",
    f"GET {PREFIX}/{{id}}/results",
)
STORM: Final = 4  # per route: the first 4 calls answer 500, the next 4 answer 529


def _bad_request(custom_id: str) -> bool:
    """1% of the requests are malformed: refused as an invalid request however often sent."""
    return hashlib.sha256(custom_id.encode()).digest()[0] < 256 * 0.01


def _faults() -> AnthropicEmulatorFaults:
    return AnthropicEmulatorFaults(
        seed=14,
        # 5% errored lines: 2% overloaded, 2% api_error (both drawn per request sent) and 1%
        # invalid_request_error (per request: a malformed request stays malformed).
        line_overloaded_rate=0.02,
        line_api_error_rate=0.02,
        line_fault=lambda cid, _params: "invalid_request_error" if _bad_request(cid) else None,
        # 5% replies whose tool input does not fit the schema (fail validation).
        line_invalid_json_rate=0.05,
        # The first batch made expires with 40% of its requests answered.
        expire_count=1,
        expire_fraction=0.4,
        # One create lands on the server and never answers.
        create_drop_connection_count=1,
        # A 5xx storm on every route, then a drizzle of 500s on any call.
        route_server_error_counts=dict.fromkeys(ROUTES, STORM),
        route_overloaded_counts=dict.fromkeys(ROUTES, STORM),
        http_server_error_rate=0.01,
    )


def _valid(line: dict[str, Any]) -> bool:
    """Whether a results line is a usable answer (a reply that validates into the model)."""
    result = line["result"]
    if result["type"] != "succeeded":
        return False
    try:
        Sentiment.model_validate(result["message"]["content"][0]["input"])
    except (ValidationError, KeyError, IndexError):
        return False
    return True


@pytest.mark.slow
def test_a_20000_item_soak_ends_every_item_and_buys_nothing_twice(tmp_path: Path) -> None:
    faults = _faults()
    with AnthropicBatchEmulator(faults=faults) as emu:
        provider = AnthropicProviderConfig(
            model="claude-sonnet-4-5", max_tokens=256, api_key=emu.api_key, base_url=emu.base_url
        )
        job = BatchJob(
            items=make_items(ITEMS),
            build_prompt=prompt,
            provider_config=provider,
            structured_output=Sentiment,
            retry_policy=RetryPolicy(max_attempts=MAX_ATTEMPTS),
            limits=BatchLimits(max_requests=MAX_REQUESTS),
        )
        began = time.perf_counter()
        with BatchRunner(f"sqlite:///{tmp_path}/s.db", tmp_path / "a") as runner:
            run = runner.start(job, "anth-soak")
            summary = run.wait(timeout=1800, poll_interval=0.2, max_poll_interval=1.0)
            wall = time.perf_counter() - began
            results = list(run.results())
            rows = run.batches()
        calls = emu.stats.calls
        remote = emu.batches()
        assert emu.data_dir is not None
        sends: Counter[str] = Counter()
        for batch in remote:
            spool = emu.data_dir / f"{batch['id']}.requests.jsonl"
            sends.update(json.loads(line)["custom_id"] for line in spool.read_text().splitlines())
        answers = {batch["id"]: emu.results(batch["id"]) for batch in remote}

    # Every item ended: completed and typed, or failed with a reason.
    assert summary.status is RunStatus.COMPLETED_WITH_FAILURES
    assert [r.item_id for r in results] == [f"item-{i}" for i in range(ITEMS)]
    assert {r.status for r in results} == {ItemStatus.COMPLETED, ItemStatus.FAILED}
    completed = [r for r in results if r.status is ItemStatus.COMPLETED]
    failed = [r for r in results if r.status is ItemStatus.FAILED]
    assert all(isinstance(r.output, Sentiment) and r.error is None for r in completed)
    for r in failed:
        assert r.error is not None, r
        assert r.error.error_class, r
        assert r.error.message, r
        assert r.output is None
    assert (summary.completed, summary.failed) == (len(completed), len(failed))
    # Attempts: never past the policy; a retryable failure only once they are spent; an
    # invalid request fails on its first attempt and is never sent again.
    assert all(1 <= r.attempts <= MAX_ATTEMPTS for r in results)
    bad = {f"item-{int(cid) - 1}" for cid in sends if _bad_request(cid)}
    for r in failed:
        assert r.error is not None
        if r.item_id in bad:
            assert (r.error.error_class, r.error.retryable, r.attempts) == (
                "invalid_request",
                False,
                1,
            ), r
        else:
            assert r.error.retryable, r
            assert r.attempts == MAX_ATTEMPTS, r
    refused = {r.item_id for r in failed if r.error and r.error.error_class == "invalid_request"}
    assert refused == bad

    # Nothing answered was bought twice: per request, sends = attempts charged + times it
    # went unanswered (expired or canceled), and at most one usable answer.
    lines = [line for batch in answers.values() for line in batch]
    unanswered = Counter(
        line["custom_id"] for line in lines if line["result"]["type"] in ("expired", "canceled")
    )
    usable = Counter(line["custom_id"] for line in lines if _valid(line))
    attempts = {str(i + 1): r.attempts for i, r in enumerate(results)}
    assert set(sends) == set(attempts)
    assert {cid: sends[cid] for cid in sends} == {
        cid: attempts[cid] + unanswered[cid] for cid in attempts
    }
    assert max(usable.values()) == 1
    assert set(usable) == {str(int(r.item_id.split("-")[1]) + 1) for r in completed}
    # Each completed item's output is its one usable answer.
    answer_of = {
        line["custom_id"]: line["result"]["message"]["content"][0]["input"]
        for line in lines
        if _valid(line)
    }
    for i, r in enumerate(results):
        if r.status is ItemStatus.COMPLETED:
            assert json.loads(r.output_text or "") == answer_of[str(i + 1)], r.item_id

    # One provider batch per batch row, and every provider batch is a row's.
    held = [b.provider_batch_id for b in rows]
    assert None not in held
    assert sorted(held) == sorted(b["id"] for b in remote)  # type: ignore[type-var]
    assert emu.stats.batches_created == len(remote)
    expired = [b for b in remote if b["request_counts"]["expired"]]
    assert len(expired) == 1
    assert 0 < expired[0]["request_counts"]["succeeded"] + expired[0]["request_counts"]["errored"]
    # Every planned fault fired: the storm on every route, the expiry, the create that never
    # answered (adopted: no batch unheld above).
    assert faults.route_server_error_counts == dict.fromkeys(ROUTES, 0)
    assert faults.route_overloaded_counts == dict.fromkeys(ROUTES, 0)
    assert (faults.expire_count, faults.create_drop_connection_count) == (0, 0)

    print(
        "\n"
        + _table(
            results, rows, remote, calls, sends, unanswered, wall, expired[0]["request_counts"]
        )
    )


def _table(
    results: list[Any],
    rows: list[Any],
    remote: list[dict[str, Any]],
    calls: Counter[tuple[str, str]],
    sends: Counter[str],
    unanswered: Counter[str],
    wall: float,
    expired: dict[str, int],
) -> str:
    failed = Counter(
        r.error.error_class for r in results if r.status is ItemStatus.FAILED and r.error
    )
    done = sum(1 for r in results if r.status is ItemStatus.COMPLETED)
    histogram = Counter(r.attempts for r in results)
    statuses = Counter(b.provider_status for b in rows)
    out = [
        f"| Anthropic soak ({ITEMS:,} structured items, max_attempts {MAX_ATTEMPTS}) | |",
        "|---|---|",
        f"| items completed (typed) | {done:,} |",
        f"| items failed | {sum(failed.values()):,} ("
        + ", ".join(f"{k} {v:,}" for k, v in sorted(failed.items()))
        + ") |",
        "| attempts histogram | "
        + ", ".join(f"{k}: {v:,}" for k, v in sorted(histogram.items()))
        + " |",
        f"| requests sent | {sum(sends.values()):,} (= attempts charged "
        f"{sum(r.attempts for r in results):,} + unanswered {sum(unanswered.values()):,}) |",
        f"| provider batches / batch rows | {len(remote)} / {len(rows)} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
        + ") |",
        f"| expired batch | {expired['succeeded'] + expired['errored']:,} answered, "
        f"{expired['expired']:,} expired |",
        f"| HTTP calls | {sum(calls.values()):,} ("
        + ", ".join(f"{m} {r} {n:,}" for (m, r), n in sorted(calls.items()))
        + ") |",
        f"| faults | errored lines 5% (overloaded 2%, api_error 2%, invalid_request 1% of "
        f"requests), invalid tool input 5%, 1 batch expired at 40%, 1 create answered by a "
        f"dropped connection, the first {STORM} calls of each route 500 then {STORM} 529, 1% "
        "500s on any call |",
        f"| wall time | {wall:.1f} s |",
    ]
    return "\n".join(out)
