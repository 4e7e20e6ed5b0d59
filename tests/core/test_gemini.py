"""The Gemini Batch Mode provider, end to end through the real ``google-genai`` SDK against the
Gemini emulator (the Files API's resumable uploads, ``batchGenerateContent``, the batch
operations and the output file's download)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, BinaryIO, Final

import orjson
import pytest

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    ConfigurationError,
    ItemStatus,
    PromptParts,
    ProviderAuthError,
    RetryPolicy,
    RunStatus,
)
from batchor.engine import lookup
from batchor.engine.submit import upload_filename
from batchor.errors import ProviderError
from batchor.items import BatchItem
from batchor.providers.base import TransientProviderError
from batchor.providers.gemini import GeminiProviderConfig
from batchor.providers.gemini import tags as gemini_tags
from batchor.providers.gemini.codec import GeminiCodec
from batchor.providers.gemini.config import GEMINI_LIMITS
from batchor.providers.gemini.transport import MISSING_SDK, GeminiTransport
from batchor.providers.registry import config_from_record
from batchor.structured import strict_json_schema
from batchor.testing.gemini import GeminiBatchEmulator
from batchor.testing.gemini import routes as r

from .conftest import Sentiment, make_items, prompt

genai = pytest.importorskip("google.genai")  # the provider's optional extra

from google.genai import types as genai_types  # noqa: E402

MODEL: Final = "gemini-2.5-flash"
SYSTEM: Final = "Label the sentiment."
CREATE: Final = ("POST", r.CREATE)
UPLOAD: Final = ("POST", r.UPLOAD)
LIST: Final = ("GET", r.BATCHES)
VARIABLES: Final = ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL")


@pytest.fixture(autouse=True)
def _no_gemini_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def emu(gemini_emulator: GeminiBatchEmulator) -> GeminiBatchEmulator:
    return gemini_emulator


def gemini_config(emu: GeminiBatchEmulator, **overrides: Any) -> GeminiProviderConfig:
    settings: dict[str, Any] = {
        "model": MODEL,
        "api_key": emu.api_key,
        "base_url": emu.base_url,
        **overrides,
    }
    return GeminiProviderConfig(**settings)


def gemini_job(
    config: GeminiProviderConfig,
    n: int = 12,
    *,
    max_requests: int | None = None,
    structured: type[Sentiment] | None = Sentiment,
    max_attempts: int = 3,
    items: list[BatchItem] | None = None,
) -> BatchJob:
    return BatchJob(
        items=items if items is not None else make_items(n),
        build_prompt=prompt,
        provider_config=config,
        structured_output=structured,
        retry_policy=RetryPolicy(max_attempts=max_attempts),
        limits=BatchLimits(max_requests=max_requests),
    )


def run_to_end(runner: BatchRunner, job: BatchJob, run_id: str, timeout: float = 60) -> Any:
    run = runner.start(job, run_id)
    run.wait(timeout, poll_interval=0.02, max_poll_interval=0.2)
    return run


def sent_lines(emu: GeminiBatchEmulator) -> list[dict[str, Any]]:
    """Every request line of the batch input files the emulator holds (uploaded files can
    not be downloaded through the API, so they are read where the emulator keeps them)."""
    assert emu.data_dir is not None
    lines: list[dict[str, Any]] = []
    for stored in emu.files():
        if stored["source"] == "UPLOADED":
            path = emu.data_dir / ("file-" + stored["name"].removeprefix("files/"))
            lines += [json.loads(line) for line in path.read_text().splitlines()]
    return lines


def display_names(emu: GeminiBatchEmulator) -> Counter[str]:
    return emu.stats.batches_by_metadata("display_name")


def batch_keys(emu: GeminiBatchEmulator) -> Counter[str]:
    """How many provider batches carry each batch key (read back from display names)."""
    found: Counter[str] = Counter()
    for name, count in display_names(emu).items():
        tag = gemini_tags.read_display_name(name)
        assert isinstance(tag, dict), name
        found[tag[gemini_tags.META_BATCH_KEY]] += count
    return found


def expected_input_tokens(text: str) -> int:
    return (len(text) + len(SYSTEM)) // 4 or 1  # the emulator's count: characters / 4


def assert_typed_and_complete(results: list[Any], n: int) -> None:
    assert [res.item_id for res in results] == [f"item-{i}" for i in range(n)]
    assert {res.status for res in results} == {ItemStatus.COMPLETED}
    assert all(isinstance(res.output, Sentiment) for res in results)


# -- runs through the real google-genai client --------------------------------------------------


def test_a_structured_job_completes_typed_with_its_usage(
    runner: BatchRunner, emu: GeminiBatchEmulator
) -> None:
    config = gemini_config(emu, request_params={"temperature": 0.2, "max_output_tokens": 200})
    run = run_to_end(runner, gemini_job(config, max_requests=5), "gm1")
    summary = run.summary()
    assert summary.status is RunStatus.COMPLETED
    results = list(run.results())
    assert_typed_and_complete(results, 12)
    for i, res in enumerate(results):
        assert res.attempts == 1
        assert res.usage.input_tokens == expected_input_tokens(f"review {i}")
        assert res.usage.output_tokens == (len(res.output_text or "") // 4 or 1)
    assert summary.usage.input_tokens == sum(res.usage.input_tokens for res in results)
    assert summary.usage.output_tokens == sum(res.usage.output_tokens for res in results)
    # One upload and one batch job per batch key; the display names carry the keys.
    assert batch_keys(emu) == {f"gm1/{i:06d}": 1 for i in range(3)}
    assert emu.stats.calls[CREATE] == 3
    assert emu.stats.calls[UPLOAD] == 3
    assert {b["metadata"]["model"] for b in emu.batches()} == {f"models/{MODEL}"}
    assert {b.provider_batch_id for b in run.batches()} == {b["name"] for b in emu.batches()}
    assert emu.stats.calls[LIST] == 1  # the one look-up before the first create
    # The request lines, as the emulator received them.
    lines = sorted(sent_lines(emu), key=lambda line: int(line["key"]))
    assert len({line["key"] for line in lines}) == 12  # keyed by each item's sequence number
    by_text = {line["request"]["contents"][0]["parts"][0]["text"]: line for line in lines}
    assert by_text["review 3"]["request"] == {
        "contents": [{"role": "user", "parts": [{"text": "review 3"}]}],
        "system_instruction": {"parts": [{"text": SYSTEM}]},
        "generation_config": {
            "temperature": 0.2,
            "max_output_tokens": 200,
            "response_mime_type": "application/json",
            "response_json_schema": strict_json_schema(Sentiment),
        },
    }


def test_a_text_job_with_a_system_prompt(runner: BatchRunner, emu: GeminiBatchEmulator) -> None:
    job = gemini_job(gemini_config(emu), 5, structured=None)
    run = run_to_end(runner, job, "gm-text")
    assert run.summary().status is RunStatus.COMPLETED
    assert [res.output for res in run.results()] == [f"Echo: review {i}" for i in range(5)]
    requests = [line["request"] for line in sent_lines(emu)]
    assert requests[0] == {
        "contents": [{"role": "user", "parts": [{"text": "review 0"}]}],
        "system_instruction": {"parts": [{"text": SYSTEM}]},
    }
    assert all("generation_config" not in request for request in requests)


def test_line_errors_are_retried_or_failed_by_their_code(
    runner: BatchRunner, emu: GeminiBatchEmulator
) -> None:
    faulted: dict[str, str] = {
        "review 1": "server_error",  # INTERNAL (13): retried
        "review 2": "rate_limit",  # RESOURCE_EXHAUSTED (8): retried
        "review 3": "bad_request",  # INVALID_ARGUMENT (3): fails at once
        "review 4": "invalid_json",  # a reply that is not JSON: retried
    }
    seen: Counter[str] = Counter()

    def fault(_key: str, request: Any) -> Any:
        text = request["contents"][0]["parts"][0]["text"]
        seen[text] += 1
        return faulted.get(text) if text == "review 3" or seen[text] == 1 else None

    emu.faults.line_fault = fault
    run = run_to_end(runner, gemini_job(gemini_config(emu), 6), "gm-lines")
    results = {res.item_id: res for res in run.results()}
    assert run.summary().status is RunStatus.COMPLETED_WITH_FAILURES
    for item in ("item-1", "item-2", "item-4"):
        assert (results[item].status, results[item].attempts) == (ItemStatus.COMPLETED, 2)
    failed = results["item-3"]
    assert (failed.status, failed.attempts) == (ItemStatus.FAILED, 1)
    assert failed.error is not None
    assert failed.error.error_class == "invalid_request"
    assert failed.error.message.startswith("INVALID_ARGUMENT: ")
    assert not failed.error.retryable
    assert {results[i].attempts for i in ("item-0", "item-5")} == {1}


def test_a_reply_cut_off_at_the_token_limit_fails_incomplete(
    runner: BatchRunner, emu: GeminiBatchEmulator
) -> None:
    config = gemini_config(emu, request_params={"max_output_tokens": 2})
    run = run_to_end(runner, gemini_job(config, 3), "gm-cut")
    results = list(run.results())
    assert {res.status for res in results} == {ItemStatus.FAILED}
    assert {(res.error.error_class, res.attempts) for res in results if res.error} == {
        ("incomplete", 1)
    }


@pytest.mark.parametrize("keep_output", [False, True])
def test_an_expired_batch_requeues_its_unanswered_items_free(
    runner: BatchRunner, emu: GeminiBatchEmulator, keep_output: bool
) -> None:
    emu.faults.expire_count = 1
    emu.faults.expire_keeps_output = keep_output
    run = run_to_end(runner, gemini_job(gemini_config(emu), 10), "gm-exp")
    assert run.summary().status is RunStatus.COMPLETED
    results = list(run.results())
    assert_typed_and_complete(results, 10)
    assert {res.attempts for res in results} == {1}  # nothing charged for the expiry
    assert [b.provider_status for b in run.batches()] == ["expired", "completed"]
    # With its output kept, the half it answered is collected from it and not sent again.
    assert [b.requests for b in run.batches()] == [10, 5 if keep_output else 10]
    assert emu.stats.calls[CREATE] == 2


def test_a_batch_cancelled_at_the_provider_requeues_its_unanswered_items_free(
    runner: BatchRunner,
) -> None:
    with GeminiBatchEmulator(phase_seconds=0.6) as emu:
        run = runner.start(gemini_job(gemini_config(emu), 200), "gm-cancel")
        client = genai.Client(
            api_key=emu.api_key, http_options=genai_types.HttpOptions(base_url=emu.base_url)
        )
        (first,) = run.batches()
        assert first.provider_batch_id is not None
        while client.batches.get(name=first.provider_batch_id).state != (
            genai_types.JobState.JOB_STATE_RUNNING
        ):
            time.sleep(0.01)
        time.sleep(0.25)
        client.batches.cancel(name=first.provider_batch_id)  # someone cancels it by hand
        run.wait(60, poll_interval=0.02, max_poll_interval=0.2)
        assert run.summary().status is RunStatus.COMPLETED
        results = list(run.results())
        assert_typed_and_complete(results, 200)
        assert {res.attempts for res in results} == {1}
        cancelled, second = run.batches()
        assert cancelled.provider_status == "cancelled"
        assert 0 < second.requests < 200  # only what the cancelled batch left unanswered


def test_a_failed_batch_charges_its_items_and_they_are_retried(
    runner: BatchRunner, emu: GeminiBatchEmulator
) -> None:
    emu.faults.fail_batch_count = 1
    run = run_to_end(runner, gemini_job(gemini_config(emu), 4), "gm-fail")
    assert run.summary().status is RunStatus.COMPLETED
    assert {res.attempts for res in run.results()} == {2}
    assert [b.provider_status for b in run.batches()] == ["failed", "completed"]


def test_the_enqueued_token_limit_requeues_free(
    runner: BatchRunner, emu: GeminiBatchEmulator
) -> None:
    emu.faults.fail_token_limit_count = 1  # RESOURCE_EXHAUSTED: the account, not the items
    run = run_to_end(runner, gemini_job(gemini_config(emu), 4), "gm-tokens")
    assert run.summary().status is RunStatus.COMPLETED
    assert {res.attempts for res in run.results()} == {1}


def test_transient_http_errors_are_retried(runner: BatchRunner, emu: GeminiBatchEmulator) -> None:
    emu.faults.route_unavailable_counts[f"GET {r.BATCH}"] = 2
    emu.faults.route_rate_limit_counts[f"POST {r.CREATE}"] = 1
    emu.faults.route_server_error_counts[f"GET {r.DOWNLOAD}"] = 1
    emu.faults.output_file_delay = 0.2  # the output file answers 403 for a moment
    run = run_to_end(runner, gemini_job(gemini_config(emu), 4), "gm-5xx")
    assert run.summary().status is RunStatus.COMPLETED
    assert_typed_and_complete(list(run.results()), 4)
    assert emu.stats.calls[CREATE] == 2  # the one refused 429, then the one that ran
    assert len(emu.batches()) == 1


# -- exactly once ----------------------------------------------------------------------------


class _SlowCreates(GeminiTransport):
    """The real transport with a short create timeout."""

    def __init__(self, emu: GeminiBatchEmulator) -> None:
        super().__init__(api_key=emu.api_key, base_url=emu.base_url, create_timeout=0.3)


@pytest.mark.parametrize("fault", ["dropped", "slow"])
def test_a_create_that_lands_unanswered_is_adopted_by_its_display_name(
    tmp_path: Path, emu: GeminiBatchEmulator, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    store, artifacts = f"sqlite:///{tmp_path}/s.db", tmp_path / "a"
    if fault == "dropped":
        emu.faults.create_drop_connection_count = 1  # recorded, then the connection closes
    else:
        emu.faults.create_response_delay = 1.0  # recorded, answered after the client gave up
    transport = _SlowCreates(emu)
    job = gemini_job(gemini_config(emu), 6, max_requests=3)
    with BatchRunner(store, artifacts, provider=transport) as first:
        started = first.start(job, "gm-lost")
        # The first create's answer was lost (a slow answer: every create's): its batch
        # exists, its id is not recorded.
        lost = [b.provider_batch_id is None for b in started.batches()]
        assert lost == ([True, False] if fault == "dropped" else [True, True])
    emu.faults.create_response_delay = 0.0
    assert len(emu.batches()) == 2
    monkeypatch.setenv("GEMINI_API_KEY", emu.api_key)  # the stored config holds no key
    with BatchRunner(store, artifacts) as second:  # a fresh runner: the config's transport
        run = second.get_run("gm-lost")
        assert run.wait(60, poll_interval=0.02).status is RunStatus.COMPLETED
        assert_typed_and_complete(list(run.results()), 6)
        assert {res.attempts for res in run.results()} == {1}
        adopted = {b.batch_key: b.provider_batch_id for b in run.batches()}
    assert batch_keys(emu) == {"gm-lost/000000": 1, "gm-lost/000001": 1}
    assert emu.stats.calls[CREATE] == 2
    names = {b["name"]: b["metadata"]["displayName"] for b in emu.batches()}
    assert {key: names[pid].split(" ")[1] for key, pid in adopted.items() if pid} == {
        key: key for key in adopted
    }


def test_a_lost_create_of_a_long_run_id_is_adopted_through_its_input_file(
    runner: BatchRunner, emu: GeminiBatchEmulator
) -> None:
    run_id = "long-" + "r" * 150  # its batch keys do not fit in 128 characters
    emu.faults.create_drop_connection_count = 1
    run = run_to_end(runner, gemini_job(gemini_config(emu), 3), run_id)
    assert run.summary().status is RunStatus.COMPLETED
    (name,) = display_names(emu)
    assert len(name) <= gemini_tags.MAX_DISPLAY_NAME
    assert name.startswith("batchor ~")
    assert emu.stats.calls[CREATE] == 1
    assert [b.provider_batch_id for b in run.batches()] == [b["name"] for b in emu.batches()]


def test_an_upload_whose_answer_was_lost_is_adopted(
    runner: BatchRunner, emu: GeminiBatchEmulator
) -> None:
    class LosesFirstUploadAnswer(GeminiTransport):
        lost = 0

        def upload_file(self, content: BinaryIO, filename: str) -> str:
            file_id = super().upload_file(content, filename)
            if not self.lost:
                self.lost += 1
                raise TransientProviderError("connection reset before the answer")
            return file_id

    transport = LosesFirstUploadAnswer(api_key=emu.api_key, base_url=emu.base_url)
    with BatchRunner(runner.store, runner.artifacts, provider=transport) as wrapped:
        run = run_to_end(wrapped, gemini_job(gemini_config(emu), 4), "gm-upload")
    assert run.summary().status is RunStatus.COMPLETED
    assert transport.lost == 1
    uploads = [f for f in emu.files() if f["source"] == "UPLOADED"]
    assert len(uploads) == 1  # adopted, not uploaded again
    assert emu.stats.calls[UPLOAD] == 1
    assert [b["metadata"]["inputConfig"]["fileName"] for b in emu.batches()] == [uploads[0]["name"]]


def test_a_lost_store_adopts_the_batches_by_their_display_names(
    tmp_path: Path, emu: GeminiBatchEmulator
) -> None:
    db = tmp_path / "store" / "s.db"
    store, artifacts = f"sqlite:///{db}", tmp_path / "artifacts"
    job = gemini_job(gemini_config(emu), 6, max_requests=3)
    with BatchRunner(store, artifacts) as first:
        first.start(job, "gm-store")
    for leftover in db.parent.glob(db.name + "*"):
        leftover.unlink()
    with BatchRunner(store, tmp_path / "artifacts2") as second:
        run = run_to_end(second, gemini_job(gemini_config(emu), 6, max_requests=3), "gm-store")
        assert run.summary().completed == 6
    assert emu.stats.calls[CREATE] == 2  # the two batches were adopted, not bought again
    assert batch_keys(emu) == {"gm-store/000000": 1, "gm-store/000001": 1}


# -- keys, settings and the stored run --------------------------------------------------------


@pytest.mark.parametrize("blank", [False, True], ids=["unset", "blank"])
def test_a_missing_key_is_one_line_before_any_run_exists(
    runner: BatchRunner, emu: GeminiBatchEmulator, monkeypatch: pytest.MonkeyPatch, blank: bool
) -> None:
    if blank:
        monkeypatch.setenv("GEMINI_API_KEY", " ")
    config = GeminiProviderConfig(model=MODEL, base_url=emu.base_url)
    with pytest.raises(ProviderAuthError) as info:
        runner.start(gemini_job(config), "gm-nokey")
    message = str(info.value)
    assert "\n" not in message
    assert "GEMINI_API_KEY" in message
    assert "GeminiProviderConfig(api_key=...)" in message
    assert runner.store.get_run("gm-nokey") is None
    assert emu.stats.calls == {}


@pytest.mark.parametrize("variable", ["GEMINI_API_KEY", "GOOGLE_API_KEY"])
def test_the_key_and_base_url_come_from_the_environment(
    runner: BatchRunner, emu: GeminiBatchEmulator, monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.setenv(variable, emu.api_key)
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emu.base_url)
    run = run_to_end(runner, gemini_job(GeminiProviderConfig(model=MODEL), 3), "gm-env")
    assert run.summary().status is RunStatus.COMPLETED
    stored = runner.store.get_run("gm-env")
    assert stored is not None
    assert stored.config["base_url"] is None  # read from the environment in each process


def test_the_gemini_key_wins_over_the_google_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with GeminiBatchEmulator(api_key="right") as strict:
        monkeypatch.setenv("GEMINI_API_KEY", "right")
        monkeypatch.setenv("GOOGLE_API_KEY", "wrong")
        transport = GeminiTransport(base_url=strict.base_url)
        assert list(transport.list_batches(0)) == []


def test_a_wrong_key_is_an_auth_error_that_never_shows_the_key() -> None:
    with GeminiBatchEmulator(api_key="right") as emu:
        transport = GeminiTransport(api_key="wrong-secret-key", base_url=emu.base_url)
        with pytest.raises(ProviderAuthError) as info:
            list(transport.list_batches(0))
        assert "API key not valid" in str(info.value)
        assert "wrong-secret-key" not in str(info.value)


def test_the_runner_openai_key_and_base_url_never_reach_a_gemini_job(
    tmp_path: Path, emu: GeminiBatchEmulator
) -> None:
    with BatchRunner(
        f"sqlite:///{tmp_path}/s.db",
        tmp_path / "a",
        api_key="sk-openai-not-for-gemini",
        base_url="http://127.0.0.1:9/v1",
    ) as runner:
        keyless = GeminiProviderConfig(model=MODEL, base_url=emu.base_url)
        with pytest.raises(ProviderAuthError, match="GEMINI_API_KEY"):
            runner.start(gemini_job(keyless, 3), "gm-keyless")
        run = run_to_end(runner, gemini_job(gemini_config(emu), 3), "gm-runner")
        assert run.summary().status is RunStatus.COMPLETED
        assert runner.get_run("gm-runner").summary().completed == 3


def test_the_stored_run_holds_no_key_and_a_fresh_runner_collects_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "gemini-secret-0123456789"
    store, artifacts = f"sqlite:///{tmp_path}/store/batchor.db", tmp_path / "artifacts"
    with GeminiBatchEmulator(api_key=secret, phase_seconds=0.2) as emu:
        config = gemini_config(emu, request_params={"temperature": 0.5})
        with BatchRunner(store, artifacts) as first:
            first.start(gemini_job(config), "gm-fresh")
            record = first.store.get_run("gm-fresh")
            assert record is not None
            stored = record.config
        assert secret not in json.dumps(stored)
        assert {k: stored[k] for k in ("provider", "model", "endpoint", "base_url")} == {
            "provider": "gemini",
            "model": MODEL,
            "endpoint": "batchGenerateContent",
            "base_url": emu.base_url,
        }
        for path in (tmp_path / "store").glob("batchor.db*"):
            assert secret.encode() not in path.read_bytes()
        for path in artifacts.rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes()
        assert config_from_record(stored) == gemini_config(
            emu, api_key=None, request_params={"temperature": 0.5}
        )
        monkeypatch.setenv("GEMINI_API_KEY", secret)  # a fresh process: the key in its env
        with BatchRunner(store, artifacts) as second:
            run = second.get_run("gm-fresh")
            assert run.wait(timeout=60, poll_interval=0.05).status is RunStatus.COMPLETED
            assert_typed_and_complete(list(run.results()), 12)
        assert emu.stats.calls[CREATE] == 1


def test_the_core_imports_and_builds_jobs_without_the_sdk(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['google.genai'] = None\n"
        "from batchor import BatchJob, PromptParts, estimate_job\n"
        "from batchor.providers.gemini import GeminiProviderConfig\n"
        "from batchor.errors import ConfigurationError\n"
        "config = GeminiProviderConfig(model='gemini-2.5-flash', api_key='k')\n"
        "job = BatchJob(items=[], build_prompt=lambda i: PromptParts(prompt='x'),"
        " provider_config=config)\n"
        "try:\n"
        "    config.transport().check_credentials()\n"
        "except ConfigurationError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == MISSING_SDK
    assert MISSING_SDK == (
        "the gemini provider needs the google-genai SDK: pip install 'batchor[gemini]'"
    )


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"model": " "}, "model must be a non-empty model name"),
        ({"request_params": {"response_schema": {}}}, "may not set response_schema"),
        ({"request_params": {"responseMimeType": "x"}}, "may not set responseMimeType"),
        ({"request_params": {"system_instruction": "x"}}, "may not set system_instruction"),
        ({"request_params": {"contents": []}}, "may not set contents"),
        ({"enqueued_token_limit": 0}, "enqueued_token_limit must be a positive number"),
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        GeminiProviderConfig(**{"model": MODEL, **settings})


def test_the_key_is_never_shown() -> None:
    config = GeminiProviderConfig(model=MODEL, api_key="AIza-hidden")
    assert "AIza-hidden" not in repr(config)
    assert "AIza-hidden" not in json.dumps(config.record())
    assert (config.provider_name, config.endpoint) == ("gemini", "batchGenerateContent")


def test_limits_and_packing(emu: GeminiBatchEmulator) -> None:
    config = gemini_config(emu)
    assert config.limits == GEMINI_LIMITS
    assert (GEMINI_LIMITS.max_requests, GEMINI_LIMITS.max_bytes) == (100_000, 2_000_000_000)
    assert GEMINI_LIMITS.lookback_seconds == 50 * 3600  # the 48 h expiry and a margin
    BatchJob(
        items=[],
        build_prompt=prompt,
        provider_config=config,
        limits=BatchLimits(max_requests=100_000, max_bytes=2_000_000_000),
    )
    with pytest.raises(ConfigurationError, match=r"between 1 and 100000 for gemini"):
        gemini_job(config, max_requests=100_001)


# -- the codec ---------------------------------------------------------------------------------


def test_request_bytes_are_compact_and_stable() -> None:
    codec = GeminiCodec(model="models/gemini-x", params={"temperature": 0})
    assert codec.endpoint == "models/gemini-x:batchGenerateContent"
    body = codec.encode_body(PromptParts(prompt='say "hi"'))
    assert body == (
        b'{"contents":[{"role":"user","parts":[{"text":"say \\"hi\\""}]}],'
        b'"generation_config":{"temperature":0}}'
    )
    assert codec.frame(7, body) == b'{"key":"7","request":' + body + b"}\n"
    assert GeminiCodec(model="gemini-x", params={}).encode_body(PromptParts(prompt="a")) == (
        b'{"contents":[{"role":"user","parts":[{"text":"a"}]}]}'
    )
    assert codec.estimate_tokens(PromptParts(prompt="x" * 9, system="y" * 2)) == 3 + 8


def _line(**payload: Any) -> bytes:
    return orjson.dumps({"key": "5", **payload})


def _response(finish: str | None = "STOP", **extra: Any) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": "ok"}], "role": "model"}}
    if finish is not None:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 3},
        **extra,
    }


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"response": _response()}, ("ok", (7, 3), None, False)),
        ({"response": _response(None)}, ("ok", (7, 3), None, False)),
        ({"response": _response("MAX_TOKENS")}, (None, (7, 3), "incomplete", False)),
        ({"response": _response("SAFETY")}, (None, (7, 3), "refusal", False)),
        ({"response": _response("RECITATION")}, (None, (7, 3), "refusal", False)),
        ({"response": _response("OTHER")}, (None, (7, 3), "invalid_response", True)),
        ({"response": {"candidates": []}}, (None, None, "invalid_response", True)),
        (
            {"response": {"promptFeedback": {"blockReason": "SAFETY"}}},
            (None, None, "refusal", False),
        ),
        ({"error": {"code": 13, "message": "x"}}, (None, None, "server_error", True)),
        ({"error": {"code": 14, "message": "x"}}, (None, None, "server_error", True)),
        ({"error": {"code": 4, "message": "x"}}, (None, None, "server_error", True)),
        ({"error": {"code": 8, "message": "x"}}, (None, None, "rate_limited", True)),
        ({"error": {"code": 3, "message": "x"}}, (None, None, "invalid_request", False)),
        ({"error": {"code": 7, "message": "x"}}, (None, None, "invalid_request", False)),
    ],
)
def test_output_lines_decode(payload: dict[str, Any], expected: tuple[Any, ...]) -> None:
    decoded = GeminiCodec(model=MODEL, params={}).decode(_line(**payload))
    assert decoded is not None
    seq, reply = decoded
    assert seq == 5
    assert reply is not None
    assert (reply.text, reply.usage, reply.error_class, reply.retryable) == expected


def test_thinking_is_billed_as_output_and_never_returned() -> None:
    response = _response()
    response["candidates"][0]["content"]["parts"] = [
        {"text": "let me think", "thought": True},
        {"text": "ans"},
        {"text": "wer"},
    ]
    response["usageMetadata"]["thoughtsTokenCount"] = 10
    decoded = GeminiCodec(model=MODEL, params={}).decode(_line(response=response))
    assert decoded is not None
    assert decoded[1] is not None
    assert (decoded[1].text, decoded[1].usage) == ("answer", (7, 13))


def test_lines_that_are_not_results() -> None:
    codec = GeminiCodec(model=MODEL, params={})
    assert codec.decode(b'{"error":{"code":3,"message":"Invalid JSON payload"}}') is None
    assert codec.decode(b"not json") is None
    assert codec.decode(b"[1]") is None
    assert codec.decode(_line(error={"code": 1, "message": "cancelled"})) == (5, None)


def test_batch_verdicts() -> None:
    codec = GeminiCodec(model=MODEL, params={})
    assert codec.batch_verdict("expired", [("DEADLINE_EXCEEDED", "x")]).charge is None
    assert codec.batch_verdict("cancelled", [("CANCELLED", "x")]).charge is None
    completed = codec.batch_verdict("completed", [])
    assert completed.charge is not None
    assert completed.charge[0] == "missing_output"
    failed = codec.batch_verdict("failed", [("INTERNAL", "boom")])
    assert failed.charge == ("batch_failed", "INTERNAL: boom")
    tokens = codec.batch_verdict("failed", [("RESOURCE_EXHAUSTED", "Enqueued token limit")])
    assert (tokens.charge, tokens.capacity, tokens.pause_reason) == (None, True, None)
    billing = codec.batch_verdict("failed", [("RESOURCE_EXHAUSTED", "check your billing")])
    assert (billing.charge, billing.pause_reason) == (
        None,
        "RESOURCE_EXHAUSTED: check your billing",
    )


# -- display names -----------------------------------------------------------------------------

SHA: Final = "ab" * 32


def test_display_names_carry_the_metadata() -> None:
    meta = {
        lookup.META_RUN_ID: "run-1",
        lookup.META_BATCH_KEY: "run-1/000003",
        lookup.META_INPUT_SHA256: SHA,
    }
    assert (gemini_tags.META_RUN_ID, gemini_tags.META_BATCH_KEY) == (
        lookup.META_RUN_ID,
        lookup.META_BATCH_KEY,
    )
    assert gemini_tags.META_INPUT_SHA256 == lookup.META_INPUT_SHA256
    name = gemini_tags.display_name(meta)
    assert name.startswith("batchor run-1/000003 ")
    assert gemini_tags.read_display_name(name) == meta
    without = {k: v for k, v in meta.items() if k != lookup.META_INPUT_SHA256}
    assert gemini_tags.read_display_name(gemini_tags.display_name(without)) == without
    for other in (None, "", "my batch", "batchor", "batchor x y z", "batchor key !!!"):
        assert gemini_tags.read_display_name(other) is None
    with pytest.raises(ValueError, match="batch key of its run id"):
        gemini_tags.display_name({**meta, lookup.META_BATCH_KEY: "other/000001"})


def test_a_long_batch_key_is_recovered_from_the_input_file_name() -> None:
    run_id = "run-" + "x-" * 60  # dashes in the run id, as in the upload filename's separator
    key = f"{run_id}/000042"
    meta = {lookup.META_RUN_ID: run_id, lookup.META_BATCH_KEY: key, lookup.META_INPUT_SHA256: SHA}
    name = gemini_tags.display_name(meta)
    assert len(name) <= gemini_tags.MAX_DISPLAY_NAME
    tag = gemini_tags.read_display_name(name)
    assert isinstance(tag, gemini_tags.KeyDigest)
    assert gemini_tags.resolve(tag, upload_filename(key, SHA)) == meta
    assert gemini_tags.resolve(tag, upload_filename(f"{run_id}/000043", SHA)) is None
    assert gemini_tags.resolve(tag, None) is None


def test_a_transport_error_is_classified() -> None:
    with GeminiBatchEmulator() as emu:
        gone = emu.base_url  # nothing listens there once the emulator stops
        transport = GeminiTransport(api_key=emu.api_key, base_url=emu.base_url, max_retries=0)
        emu.faults.route_unavailable_counts[f"GET {r.BATCHES}"] = 1
        with pytest.raises(TransientProviderError, match="HTTP 503"):
            list(transport.list_batches(0))
        with pytest.raises(ProviderError, match="HTTP 404") as info:
            transport.retrieve_batch("batches/nope")
        assert not isinstance(info.value, TransientProviderError)
        transport.delete_file("files/gone")  # already gone: fine
        with pytest.raises(TransientProviderError, match="not available yet"):
            transport.download_file("files/batch-nope", io.BytesIO())
    unreachable = GeminiTransport(api_key="k", base_url=gone, max_retries=0)
    with pytest.raises(TransientProviderError, match="provider unreachable"):
        unreachable.retrieve_batch("batches/x")


class _Writes(io.BytesIO):
    """A destination recording the size of every write."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def write(self, data: Any) -> int:
        self.sizes.append(len(data))
        return super().write(data)


def test_a_results_file_is_downloaded_in_chunks(emu: GeminiBatchEmulator) -> None:
    # Memory stays flat: the SDK streams the file into the destination a chunk at a time.
    client = genai.Client(
        api_key=emu.api_key, http_options=genai_types.HttpOptions(base_url=emu.base_url)
    )
    rows = b"".join(
        orjson.dumps({"key": f"k{i}", "request": {"contents": [{"parts": [{"text": f"p {i}"}]}]}})
        + b"\n"
        for i in range(8_000)
    )
    src = client.files.upload(file=io.BytesIO(rows), config={"mime_type": "jsonl"})
    job = client.batches.create(model=MODEL, src=src.name or "")
    deadline = time.monotonic() + 60
    while not (job := client.batches.get(name=job.name or "")).done:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job.dest is not None
    assert job.dest.file_name is not None
    whole = client.files.download(file=job.dest.file_name)
    assert len(whole) > 2 * 1024 * 1024
    dest = _Writes()
    transport = GeminiTransport(api_key=emu.api_key, base_url=emu.base_url)
    assert transport.download_file(job.dest.file_name, dest) == len(whole)
    assert dest.getvalue() == whole
    assert len(dest.sizes) > 2
    assert max(dest.sizes) <= 1024 * 1024


# -- scale -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_100000_structured_items_through_gemini_end_to_end(tmp_path: Path) -> None:
    n = 100_000
    with (
        GeminiBatchEmulator() as emu,
        BatchRunner(f"sqlite:///{tmp_path}/s.db", tmp_path / "a") as runner,
    ):
        started = time.monotonic()
        run = runner.start(gemini_job(gemini_config(emu), n), "gm-100k")
        summary = run.wait(timeout=900, poll_interval=0.2, max_poll_interval=1.0)
        elapsed = time.monotonic() - started
        assert summary.status is RunStatus.COMPLETED
        assert summary.completed == n
        assert batch_keys(emu) == {"gm-100k/000000": 1}
        completed = 0
        for res in run.results():
            assert isinstance(res.output, Sentiment)
            completed += res.status is ItemStatus.COMPLETED
        assert completed == n
        print(f"\n100,000 structured items through Gemini: {elapsed:.1f} s")
