"""Finishing the stragglers synchronously on Gemini (issue #19, `FinishSync`): the emulator's
``generateContent`` through the real ``google-genai`` SDK (a typed answer, the same as a batch
line's, the Gemini API's 429 with its ``RetryInfo``), the transport's `send_sync` (the answer
as the batch's results line, a rate limit waited out), and a run whose last batch the
emulator holds open, finished through the synchronous endpoint with a real SQLite file."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, cast

import orjson
import pytest

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    FinishSync,
    ItemStatus,
    ModelPrice,
    ProviderAuthError,
    Run,
    RunStatus,
    RunSummary,
    Usage,
)
from batchor.engine.sync_send import SYNC_PRICE_FACTOR
from batchor.pricing import DEFAULT_PRICES
from batchor.providers.gemini import GeminiProviderConfig
from batchor.providers.gemini.codec import GeminiCodec
from batchor.providers.gemini.transport import GeminiTransport
from batchor.testing.gemini import GeminiBatchEmulator, GeminiFaults, gemini_limits
from batchor.testing.gemini import routes as r

from .conftest import make_items, prompt
from .drivers import drive_in_processes

genai = pytest.importorskip("google.genai")  # the provider's optional extra

from google.genai import errors as genai_errors  # noqa: E402
from google.genai import types as genai_types  # noqa: E402

MODEL: Final = "gemini-2.5-flash"
GENERATE: Final = r.GENERATE
CANCEL: Final = ("POST", r.CANCEL)
PRICES: Final = {MODEL: ModelPrice(10.0, 20.0)}  # USD per million tokens
ITEMS, PER_BATCH = 30, 10
HELD_ANSWERED = PER_BATCH // 2  # the held batch answers half of its lines
STRAGGLERS = PER_BATCH - HELD_ANSWERED
VARIABLES: Final = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL")


@pytest.fixture(autouse=True)
def _no_gemini_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _client(emu: GeminiBatchEmulator) -> Any:
    options = genai_types.HttpOptions(base_url=emu.base_url)
    return genai.Client(vertexai=False, api_key=emu.api_key, http_options=options)


def _transport(emu: GeminiBatchEmulator, **kw: Any) -> GeminiTransport:
    return GeminiTransport(api_key=emu.api_key, base_url=emu.base_url, model=MODEL, **kw)


def _lines(codec: GeminiCodec, n: int) -> list[bytes]:
    """``n`` request lines as the codec frames them (keys 1..n)."""
    return [
        codec.frame(i + 1, codec.encode_body(prompt(item))) for i, item in enumerate(make_items(n))
    ]


def _batch_answers(emu: GeminiBatchEmulator, lines: list[bytes]) -> dict[str, Any]:
    """Each line's results line in a batch, by key (through the real SDK)."""
    client = _client(emu)
    upload = genai_types.UploadFileConfig(mime_type="jsonl")
    uploaded = client.files.upload(file=io.BytesIO(b"".join(lines)), config=upload)
    job = client.batches.create(model=MODEL, src=uploaded.name)
    deadline = time.monotonic() + 20
    while job.state != genai_types.JobState.JOB_STATE_SUCCEEDED:
        assert time.monotonic() < deadline
        time.sleep(0.02)
        job = client.batches.get(name=job.name)
    assert job.dest is not None
    assert job.dest.file_name is not None
    out = client.files.download(file=job.dest.file_name)
    rows = [json.loads(line) for line in out.splitlines()]
    return {row["key"]: row for row in rows}


def _without_ids(row: dict[str, Any]) -> dict[str, Any]:
    response = dict(row.get("response") or {})
    response.pop("responseId", None)
    return {**row, "response": response} if "response" in row else row


def test_generate_content_answers_as_a_batch_line_through_the_sdk() -> None:
    with GeminiBatchEmulator() as emu:
        client = _client(emu)
        config = genai_types.GenerateContentConfig(
            system_instruction="Label the sentiment.", max_output_tokens=64
        )
        answer = client.models.generate_content(
            model=MODEL, contents="great product", config=config
        )
        # A typed answer: the SDK parses the emulator's GenerateContentResponse.
        assert isinstance(answer, genai_types.GenerateContentResponse)
        assert answer.text == "Echo: great product"
        assert answer.usage_metadata is not None
        assert answer.usage_metadata.prompt_token_count == (13 + 20) // 4
        assert answer.candidates is not None
        assert answer.candidates[0].finish_reason == genai_types.FinishReason.STOP
        # The Gemini API sends no rate-limit headers, nor does the emulator.
        assert answer.sdk_http_response is not None
        headers = {k.lower(): v for k, v in (answer.sdk_http_response.headers or {}).items()}
        assert headers["content-type"].startswith("application/json")
        assert not [h for h in headers if h.startswith("x-ratelimit") or h == "retry-after"]
        assert emu.stats.sync_answered == {GENERATE: 1}
        usage = answer.usage_metadata
        assert emu.stats.sync_tokens == (usage.prompt_token_count, usage.candidates_token_count)

        # Each request is answered exactly as a batch line carrying it.
        codec = GeminiCodec(model=MODEL, params={"max_output_tokens": 2})
        lines = [*_lines(codec, 4), b'{"key":"9","request":{"contents":[],"bogus":1}}\n']
        batch = _batch_answers(emu, lines)
        transport = _transport(emu, max_retries=0)
        for line in lines:
            sync = orjson.loads(transport.send_sync(line).line)
            assert _without_ids(sync) == _without_ids(batch[sync["key"]])
            assert codec.decode(orjson.dumps(sync)) == codec.decode(
                orjson.dumps(batch[sync["key"]])
            )
        assert batch["1"]["response"]["candidates"][0]["finishReason"] == "MAX_TOKENS"
        assert batch["9"]["error"]["code"] == 3  # INVALID_ARGUMENT, the same message both ways


def test_a_request_over_the_per_minute_limit_is_answered_429_with_a_retry_delay() -> None:
    limits = gemini_limits(requests_per_minute=2, rate_window=60)
    with GeminiBatchEmulator(limits=limits) as emu:
        client = _client(emu)
        for text in ("one", "two"):
            client.models.generate_content(model=MODEL, contents=text)
        with pytest.raises(genai_errors.ClientError) as info:
            client.models.generate_content(model=MODEL, contents="three")
        error = info.value
        assert (error.code, error.status) == (429, "RESOURCE_EXHAUSTED")
        assert error.message is not None
        assert "exceeded your current quota" in error.message
        details = {d["@type"].rsplit(".", 1)[-1]: d for d in error.details["error"]["details"]}
        delay = details["RetryInfo"]["retryDelay"]
        assert delay.endswith("s")
        assert 0 < float(delay[:-1]) <= 30
        violation = details["QuotaFailure"]["violations"][0]
        assert violation["quotaValue"] == "2"
        assert violation["quotaDimensions"]["model"] == MODEL
        assert "PerMinute" in violation["quotaId"]
        headers = {k.lower() for k in error.response.headers}
        assert "retry-after" not in headers  # the API sends the delay in the body only
        assert emu.stats.sync_answered == {GENERATE: 2}
        assert emu.stats.sync_rate_limited == 1


def test_send_sync_waits_a_rate_limit_out_and_refuses_a_wrong_key() -> None:
    limits = gemini_limits(requests_per_minute=2, rate_window=1.0)  # 2 requests a second
    with GeminiBatchEmulator(limits=limits, api_key="the-right-key") as emu:
        codec = GeminiCodec(model=MODEL, params={})
        lines = _lines(codec, 4)
        transport = _transport(emu)
        started = time.monotonic()
        answers = [codec.decode(transport.send_sync(line).line) for line in lines]
        took = time.monotonic() - started
        assert [a[0] for a in answers if a is not None] == [1, 2, 3, 4]
        assert all(a is not None and a[1] is not None and a[1].text for a in answers)
        assert emu.stats.sync_rate_limited >= 1  # 429s were answered and waited out...
        assert emu.stats.sync_answered == {GENERATE: 4}  # ...each request answered once
        assert 0.4 < took < 5
        # Out of retries, the 429 is the batch's error line and asks to hold off.
        result = _transport(emu, max_retries=0).send_sync(lines[0])
        decoded = codec.decode(result.line)
        assert decoded is not None
        assert decoded[1] is not None
        assert decoded[1].error_class == "rate_limited"
        assert decoded[1].retryable
        assert 0 < result.wait <= 1.0
        secret = "wrong-secret-key"
        wrong = GeminiTransport(api_key=secret, base_url=emu.base_url, model=MODEL)
        with pytest.raises(ProviderAuthError) as refused:
            wrong.send_sync(lines[0])
        assert secret not in str(refused.value)


def test_a_faulted_synchronous_request_is_the_error_line_a_batch_would_hold() -> None:
    faults = GeminiFaults(line_fault=lambda key, request: "server_error")
    with GeminiBatchEmulator(faults=faults) as emu:
        codec = GeminiCodec(model=MODEL, params={})
        result = _transport(emu, max_retries=0).send_sync(_lines(codec, 1)[0])
        line = orjson.loads(result.line)
        assert line["key"] == "1"
        assert line["error"]["code"] == 13
        decoded = codec.decode(result.line)
        assert decoded is not None
        assert decoded[1] is not None
        assert (decoded[1].error_class, decoded[1].retryable) == ("server_error", True)


# -- a run finished synchronously -----------------------------------------------------------


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[BatchRunner]:
    store = f"sqlite:///{tmp_path}/store/batchor.db"
    with BatchRunner(store, tmp_path / "artifacts", prices=PRICES) as r:
        yield r


def _job(emu: GeminiBatchEmulator, **params: Any) -> BatchJob:
    config = GeminiProviderConfig(
        model=MODEL, api_key=emu.api_key, base_url=emu.base_url, request_params=params
    )
    return BatchJob(
        items=make_items(ITEMS),
        build_prompt=prompt,
        provider_config=config,
        limits=BatchLimits(max_requests=PER_BATCH),
        finish_sync=FinishSync(
            when_remaining_at_most=PER_BATCH, after=timedelta(seconds=0.3), max_concurrency=8
        ),
    )


def _wait(run: Run, timeout: float = 60) -> RunSummary:
    return run.wait(timeout, poll_interval=0.05, max_poll_interval=0.25)


def _batch_billed(emu: GeminiBatchEmulator) -> tuple[int, int]:
    """The tokens every batch billed: the usage of each line of their results files."""
    transport = _transport(emu)
    billed = [0, 0]
    for stored in emu.files():
        if stored["source"] == "GENERATED":
            out = io.BytesIO()
            transport.download_file(stored["name"], out)
            for line in out.getvalue().splitlines():
                usage = json.loads(line).get("response", {}).get("usageMetadata", {})
                billed[0] += usage.get("promptTokenCount", 0)
                billed[1] += usage.get("candidatesTokenCount", 0)
    return billed[0], billed[1]


def _cost(tokens: tuple[int, int]) -> float:
    return PRICES[MODEL].cost(Usage(*tokens))


def test_the_stragglers_of_a_held_gemini_batch_are_answered_synchronously_once(
    runner: BatchRunner,
) -> None:
    faults = GeminiFaults(hold_count=1)  # the first batch answers half its lines, then hangs
    with GeminiBatchEmulator(phase_seconds=0.05, faults=faults) as emu:
        run = runner.start(_job(emu), "finish")
        summary = _wait(run)
        assert summary.status is RunStatus.COMPLETED
        # The held batch was cancelled once, and ended with the lines it had answered.
        assert emu.stats.calls[CANCEL] == 1
        states = Counter(b["metadata"]["state"] for b in emu.batches())
        assert states == {"BATCH_STATE_CANCELLED": 1, "BATCH_STATE_SUCCEEDED": 2}
        held = next(b for b in emu.batches() if b["metadata"]["state"].endswith("CANCELLED"))
        assert held["metadata"]["batchStats"]["successfulRequestCount"] == str(HELD_ANSWERED)
        assert emu.stats.batches_created == ITEMS // PER_BATCH  # no batch for the stragglers
        assert {b.status for b in run.batches()} == {"collected"}
        # Each item answered once: by a batch line, or by exactly one synchronous request.
        batch_lines = emu.stats.lines_answered
        assert set(batch_lines.values()) == {1}
        assert sum(batch_lines.values()) == ITEMS - STRAGGLERS
        assert emu.stats.sync_answered == {GENERATE: STRAGGLERS}
        assert summary.sync_answered == STRAGGLERS
        assert summary.duplicate_answers == 0
        results = list(run.results())
        assert [x.status for x in results] == [ItemStatus.COMPLETED] * ITEMS
        assert {x.attempts for x in results} == {1}
        # Usage: the batches' as their results files billed it, the synchronous apart.
        billed = _batch_billed(emu)
        assert (summary.usage.input_tokens, summary.usage.output_tokens) == billed
        sync = (summary.sync_usage.input_tokens, summary.sync_usage.output_tokens)
        assert sync == emu.stats.sync_tokens
        assert sync[0] > 0
        assert sync[1] > 0
        items_in = sum(x.usage.input_tokens for x in results if x.usage is not None)
        items_out = sum(x.usage.output_tokens for x in results if x.usage is not None)
        assert (items_in, items_out) == (billed[0] + sync[0], billed[1] + sync[1])
        # Costs: batches at the table's (batch) price, synchronous requests at twice it.
        assert summary.cost_usd == pytest.approx(_cost(billed))
        assert summary.sync_cost_usd == pytest.approx(2 * _cost(sync))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2], ids=["fresh-process", "two-workers"])
def test_the_gemini_stragglers_are_finished_once_from_fresh_processes(
    store_url: str, tmp_path: Path, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    faults = GeminiFaults(hold_count=1)
    with (
        GeminiBatchEmulator(phase_seconds=0.05, faults=faults) as emu,
        BatchRunner(store_url, tmp_path / "artifacts", prices=PRICES) as runner,
    ):
        runner.start(_job(emu), "finish")  # created and submitted here
        monkeypatch.setenv("GEMINI_API_KEY", emu.api_key)  # the workers' key: never stored
        finals = drive_in_processes(
            cast(Any, emu), store_url, tmp_path, "finish", workers, prices={MODEL: (10.0, 20.0)}
        )
        assert {s["status"] for s in finals} == {"completed"}
        assert {s["sync_answered"] for s in finals} == {STRAGGLERS}
        # Each straggler was sent once: the endpoint answered exactly that many requests.
        assert emu.stats.sync_answered == {GENERATE: STRAGGLERS}
        assert emu.stats.calls[CANCEL] == 1
        assert set(emu.stats.lines_answered.values()) == {1}
        summary = runner.get_run("finish").summary()
        assert summary.items[ItemStatus.COMPLETED] == ITEMS
        sync = (summary.sync_usage.input_tokens, summary.sync_usage.output_tokens)
        assert sync == emu.stats.sync_tokens
        assert summary.sync_cost_usd == pytest.approx(2 * _cost(sync))


def test_gemini_standard_prices_are_twice_the_batch_prices_the_table_holds() -> None:
    # The Gemini API's standard (synchronous) prices per million tokens, prompts up to
    # 200k tokens (ai.google.dev/gemini-api/docs/pricing, as the price table's batch ones).
    standard = {
        "gemini-2.5-pro": (1.25, 10.0),
        "gemini-2.5-flash": (0.30, 2.50),
        "gemini-2.5-flash-lite": (0.10, 0.40),
    }
    for model, (input_price, output_price) in standard.items():
        batch = DEFAULT_PRICES[model]
        assert SYNC_PRICE_FACTOR * batch.input_per_million == pytest.approx(input_price)
        assert SYNC_PRICE_FACTOR * batch.output_per_million == pytest.approx(output_price)


def test_a_low_gemini_rate_limit_is_waited_out_during_a_run(runner: BatchRunner) -> None:
    faults = GeminiFaults(hold_count=1)
    limits = gemini_limits(requests_per_minute=2, rate_window=1.0)  # 2 requests a second
    with GeminiBatchEmulator(phase_seconds=0.05, faults=faults, limits=limits) as emu:
        summary = _wait(runner.start(_job(emu), "limited"))
        assert summary.status is RunStatus.COMPLETED
        assert emu.stats.sync_rate_limited > 0  # 429s were answered...
        assert emu.stats.sync_answered == {GENERATE: STRAGGLERS}  # ...and each item sent once
        assert summary.sync_answered == STRAGGLERS
        results = list(runner.get_run("limited").results())
        assert {x.attempts for x in results} == {1}
