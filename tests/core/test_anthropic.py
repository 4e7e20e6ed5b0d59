"""The Anthropic Message Batches provider, end to end through the real ``anthropic`` SDK
against `AnthropicBatchEmulator` (requests inline in the create call, batches without
metadata, results fetched by batch id)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

anthropic = pytest.importorskip("anthropic")

from anthropic.types.messages import MessageBatch  # noqa: E402

from batchor import (  # noqa: E402
    BatchItem,
    BatchJob,
    BatchLimits,
    BatchRunner,
    ConfigurationError,
    ItemStatus,
    PromptParts,
    ProviderAuthError,
    ProviderCredentials,
    RetryPolicy,
    RunStatus,
)
from batchor.errors import ProviderError, ProviderQuotaError  # noqa: E402
from batchor.providers.anthropic import AnthropicProviderConfig  # noqa: E402
from batchor.providers.anthropic import transport as anthropic_transport  # noqa: E402
from batchor.providers.anthropic.codec import AnthropicCodec  # noqa: E402
from batchor.providers.anthropic.transport import (  # noqa: E402
    MISSING_SDK,
    AnthropicTransport,
    _to_provider_batch,
    _translated,
)
from batchor.providers.base import Reply, TransientProviderError  # noqa: E402
from batchor.providers.registry import config_from_record  # noqa: E402
from batchor.structured import strict_json_schema  # noqa: E402
from batchor.testing.anthropic import (  # noqa: E402
    AnthropicBatchEmulator,
    AnthropicEmulatorFaults,
)

from .conftest import Sentiment, make_items, prompt  # noqa: E402

MODEL: Final = "claude-sonnet-4-5"
CREATE: Final = ("POST", "/v1/messages/batches")
LIST: Final = ("GET", "/v1/messages/batches")
VARIABLES: Final = ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN")
QUICK: Final = {"poll_interval": 0.05, "max_poll_interval": 0.2}


@pytest.fixture(autouse=True)
def _no_anthropic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def config(emu: AnthropicBatchEmulator, **overrides: Any) -> AnthropicProviderConfig:
    settings: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 512,
        "api_key": emu.api_key,
        "base_url": emu.base_url,
        **overrides,
    }
    return AnthropicProviderConfig(**settings)


def job(
    provider: AnthropicProviderConfig,
    n: int = 12,
    *,
    max_requests: int | None = None,
    structured: type[Sentiment] | None = Sentiment,
    build: Callable[[BatchItem], PromptParts] = prompt,
    max_attempts: int = 3,
) -> BatchJob:
    return BatchJob(
        items=make_items(n),
        build_prompt=build,
        provider_config=provider,
        structured_output=structured,
        retry_policy=RetryPolicy(max_attempts=max_attempts),
        limits=BatchLimits(max_requests=max_requests),
    )


def sent(emu: AnthropicBatchEmulator) -> list[dict[str, Any]]:
    """Every request the emulator was sent, as it stored them, oldest batch first."""
    assert emu.data_dir is not None
    lines: list[dict[str, Any]] = []
    for batch in emu.batches():
        spool = emu.data_dir / f"{batch['id']}.requests.jsonl"
        lines += [json.loads(line) for line in spool.read_text().splitlines()]
    return lines


def by_item(run: Any) -> dict[str, Any]:
    return {r.item_id: r for r in run.results()}


def held_batches(run: Any) -> list[str]:
    return sorted(b.provider_batch_id for b in run.batches())


# -- runs through the real SDK ------------------------------------------------------------------


def test_a_structured_job_completes_typed_with_usage(
    runner: BatchRunner, anthropic_emulator: AnthropicBatchEmulator
) -> None:
    emu = anthropic_emulator
    provider = config(emu, request_params={"temperature": 0.2, "metadata": {"user_id": "u1"}})
    run = runner.start(job(provider, 12, max_requests=5), "anth-structured")
    summary = run.wait(timeout=60, **QUICK)
    assert summary.status is RunStatus.COMPLETED
    results = list(run.results())
    assert [r.item_id for r in results] == [f"item-{i}" for i in range(12)]
    assert {r.status for r in results} == {ItemStatus.COMPLETED}
    assert all(isinstance(r.output, Sentiment) for r in results)
    assert {r.attempts for r in results} == {1}
    # Usage: the run's totals are the replies' own, read from the results lines.
    answered = [line for b in emu.batches() for line in emu.results(b["id"])]
    usages = [line["result"]["message"]["usage"] for line in answered]
    assert summary.usage.input_tokens == sum(u["input_tokens"] for u in usages) > 0
    assert summary.usage.output_tokens == sum(u["output_tokens"] for u in usages) > 0
    assert all(r.usage is not None and r.usage.input_tokens > 0 for r in results)
    # Three batches (5 + 5 + 2), each created once, inline: nothing uploaded, nothing listed.
    assert [b["request_counts"]["succeeded"] for b in emu.batches()] == [5, 5, 2]
    assert emu.stats.calls[CREATE] == 3
    assert emu.stats.calls[LIST] == 0
    assert held_batches(run) == sorted(b["id"] for b in emu.batches())
    # The requests as the emulator received them: the forced tool carries the schema.
    lines = sent(emu)
    # Each request's custom id is its item's seq (1-based): item-i is seq i + 1.
    assert [line["custom_id"] for line in lines] == [str(i + 1) for i in range(12)]
    schema = strict_json_schema(Sentiment)
    for i, line in enumerate(lines):
        assert line["params"] == {
            "model": MODEL,
            "max_tokens": 512,
            "system": "Label the sentiment.",
            "messages": [{"role": "user", "content": f"review {i}"}],
            "temperature": 0.2,
            "metadata": {"user_id": "u1"},
            "tools": [
                {
                    "name": "Sentiment",
                    "description": line["params"]["tools"][0]["description"],
                    "input_schema": schema,
                }
            ],
            "tool_choice": {"type": "tool", "name": "Sentiment"},
        }
    reply = answered[0]["result"]["message"]["content"][0]
    assert reply["type"] == "tool_use"
    first = next(r for r in results if r.item_id == f"item-{int(answered[0]['custom_id']) - 1}")
    assert json.loads(first.output_text or "") == reply["input"]


def test_a_text_job_with_a_system_prompt_and_prompt_caching(
    runner: BatchRunner, anthropic_emulator: AnthropicBatchEmulator
) -> None:
    emu = anthropic_emulator
    system = "You label reviews. " + "Here is a long style guide. " * 250  # past 1,024 tokens
    cache = {"type": "ephemeral"}
    provider = config(
        emu, request_params={"cache_control": cache, "temperature": 0.0, "stop_sequences": ["##"]}
    )

    def build(item: BatchItem) -> PromptParts:
        return PromptParts(prompt=str(item.payload["text"]), system=system)

    run = runner.start(job(provider, 6, structured=None, build=build), "anth-text")
    summary = run.wait(timeout=60, **QUICK)
    assert summary.status is RunStatus.COMPLETED
    results = by_item(run)
    assert results["item-3"].output == "Echo: review 3"
    for line in sent(emu):
        params = line["params"]
        # The breakpoint is on the shared system prompt, not the top-level parameter.
        assert "cache_control" not in params
        assert params["system"] == [{"type": "text", "text": system, "cache_control": cache}]
        assert "tools" not in params
        assert params["stop_sequences"] == ["##"]
    # The first request wrote the prefix, the others read it; cache tokens count as input.
    (batch,) = emu.batches()
    usage = {
        line["custom_id"]: line["result"]["message"]["usage"] for line in emu.results(batch["id"])
    }
    assert usage["1"]["cache_creation_input_tokens"] > 1024
    assert all(usage[str(seq)]["cache_read_input_tokens"] > 1024 for seq in range(2, 7))
    for i in range(6):
        u = usage[str(i + 1)]
        whole = u["input_tokens"] + u["cache_creation_input_tokens"] + u["cache_read_input_tokens"]
        billed = results[f"item-{i}"].usage
        assert billed is not None
        assert billed.input_tokens == whole > 1024


def test_errored_requests_are_retried_or_failed_by_error_type(
    runner: BatchRunner, anthropic_emulator: AnthropicBatchEmulator
) -> None:
    emu = anthropic_emulator
    planned = {
        "review 0": ["overloaded_error"],
        "review 1": ["api_error"],
        "review 2": ["invalid_request_error"],
        "review 4": ["invalid_json"],  # a tool input that does not fit the schema
    }

    def fault(custom_id: str, params: dict[str, Any]) -> str | None:
        queue = planned.get(params["messages"][0]["content"])
        return queue.pop(0) if queue else None

    limited: list[str] = []

    def rewrite(line: dict[str, Any]) -> dict[str, Any]:
        if line["custom_id"] == "4" and not limited:  # item-3, on its first attempt
            limited.append("4")
            error = {"type": "rate_limit_error", "message": "Number of requests has exceeded"}
            return {
                **line,
                "result": {"type": "errored", "error": {"type": "error", "error": error}},
            }
        return line

    emu.faults = AnthropicEmulatorFaults(line_fault=fault, line_rewrite=rewrite)
    run = runner.start(job(config(emu), 6), "anth-errors")
    summary = run.wait(timeout=60, **QUICK)
    assert summary.status is RunStatus.COMPLETED_WITH_FAILURES
    results = by_item(run)
    assert {k: (r.status.value, r.attempts) for k, r in results.items()} == {
        "item-0": ("completed", 2),
        "item-1": ("completed", 2),
        "item-2": ("failed", 1),
        "item-3": ("completed", 2),
        "item-4": ("completed", 2),
        "item-5": ("completed", 1),
    }
    error = results["item-2"].error
    assert error is not None
    assert (error.error_class, error.retryable) == ("invalid_request", False)
    assert error.message.startswith("invalid_request_error: ")
    assert all(isinstance(r.output, Sentiment) for k, r in results.items() if k != "item-2")
    assert emu.stats.calls[CREATE] == 2


def test_canceled_and_expired_requests_are_requeued_without_an_attempt(
    runner: BatchRunner, anthropic_emulator: AnthropicBatchEmulator
) -> None:
    emu = anthropic_emulator
    canceled: list[str] = []

    def cancel_one(line: dict[str, Any]) -> dict[str, Any]:
        if not canceled:  # the first answered request comes back canceled instead
            canceled.append(line["custom_id"])
            return {"custom_id": line["custom_id"], "result": {"type": "canceled"}}
        return line

    emu.faults = AnthropicEmulatorFaults(expire_count=1, line_rewrite=cancel_one)
    run = runner.start(job(config(emu), 10), "anth-expired")
    summary = run.wait(timeout=60, **QUICK)
    assert summary.status is RunStatus.COMPLETED
    results = list(run.results())
    assert {r.status for r in results} == {ItemStatus.COMPLETED}
    assert {r.attempts for r in results} == {1}  # nothing charged for what never ran
    first, second = emu.batches()
    assert first["request_counts"]["expired"] == 5
    # The 5 expired and the 1 canceled went again, in one new batch.
    assert second["request_counts"]["succeeded"] == 6
    assert [b.provider_status for b in run.batches()] == ["expired", "completed"]


def test_a_create_whose_answer_is_lost_is_adopted_not_bought_again(
    runner: BatchRunner, anthropic_emulator: AnthropicBatchEmulator
) -> None:
    emu = anthropic_emulator
    emu.faults.create_drop_connection_count = 2  # both creates land, neither answer arrives
    run = runner.start(job(config(emu), 5, max_requests=3), "anth-dropped")
    summary = run.wait(timeout=60, **QUICK)
    assert summary.status is RunStatus.COMPLETED
    assert summary.completed == 5
    assert {r.attempts for r in run.results()} == {1}
    assert emu.stats.batches_created == 2  # one per batch key
    assert emu.stats.calls[CREATE] == 2
    assert emu.stats.calls[LIST] >= 2  # each lost create settled by a listing
    assert held_batches(run) == sorted(b["id"] for b in emu.batches())


def test_a_timed_out_create_is_adopted_by_a_fresh_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, artifacts = f"sqlite:///{tmp_path}/store/batchor.db", tmp_path / "artifacts"
    with AnthropicBatchEmulator() as emu:
        emu.faults.create_response_delay = 1.0
        slow = AnthropicTransport(api_key=emu.api_key, base_url=emu.base_url, create_timeout=0.3)
        with BatchRunner(store, artifacts, provider=slow) as first:
            started = first.start(job(config(emu), 5, max_requests=3), "anth-timeout")
            assert [b.provider_batch_id for b in started.batches()] == [None, None]
        assert emu.stats.batches_created == 1  # the second waits for the first to settle
        emu.faults.create_response_delay = 0.0
        monkeypatch.setenv("ANTHROPIC_API_KEY", emu.api_key)
        with BatchRunner(store, artifacts) as second:
            run = second.get_run("anth-timeout")
            summary = run.wait(timeout=60, **QUICK)
            assert summary.status is RunStatus.COMPLETED
            assert summary.completed == 5
            assert all(isinstance(r.output, Sentiment) for r in run.results())
            assert {r.attempts for r in run.results()} == {1}
            batches = run.batches()
        assert emu.stats.batches_created == 2  # the timed-out one adopted, the other made
        assert emu.stats.calls[CREATE] == 2
        created = emu.batches()
        assert [b.provider_batch_id for b in batches] == [b["id"] for b in created]
        assert [b["request_counts"]["succeeded"] for b in created] == [3, 2]


# -- keys, settings and the stored run ----------------------------------------------------------


def test_a_missing_key_is_one_line_before_any_run_exists(
    runner: BatchRunner, anthropic_emulator: AnthropicBatchEmulator
) -> None:
    emu = anthropic_emulator
    keyless = AnthropicProviderConfig(model=MODEL, max_tokens=64, base_url=emu.base_url)
    with pytest.raises(ProviderAuthError) as info:
        runner.start(job(keyless, 3), "anth-keyless")
    message = str(info.value)
    assert "\n" not in message
    assert "ANTHROPIC_API_KEY" in message
    assert "AnthropicProviderConfig(api_key=...)" in message
    assert runner.store.get_run("anth-keyless") is None
    assert emu.stats.calls == {}


def test_a_blank_key_in_the_environment_counts_as_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "  ")
    transport = AnthropicProviderConfig(model=MODEL, max_tokens=64).transport()
    with pytest.raises(ProviderAuthError, match="ANTHROPIC_API_KEY"):
        transport.check_credentials()
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-x")
    transport.check_credentials()


def test_without_the_sdk_the_run_is_refused_naming_the_extra(
    runner: BatchRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "anthropic", None)  # import anthropic -> ImportError
    provider = AnthropicProviderConfig(model=MODEL, max_tokens=64, api_key="sk-ant-x")
    built = job(provider, 3)  # a job is built (and its codec made) without the SDK
    with pytest.raises(ConfigurationError) as info:
        runner.start(built, "anth-no-sdk")
    assert str(info.value) == MISSING_SDK
    assert str(info.value) == (
        "the anthropic provider needs the anthropic SDK: pip install 'batchor[anthropic]'"
    )
    assert runner.store.get_run("anth-no-sdk") is None


def test_the_core_imports_and_builds_jobs_without_the_sdk() -> None:
    code = (
        "import sys; sys.modules['anthropic'] = None\n"
        "import batchor, batchor.providers.registry\n"
        "from batchor.providers.anthropic import AnthropicProviderConfig\n"
        "c = AnthropicProviderConfig(model='m', max_tokens=8)\n"
        "c.codec({'type': 'object', 'properties': {}}, 'x').encode_body(batchor.PromptParts('p'))\n"
        "c.transport()\n"
        "assert 'anthropic' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_stored_run_holds_no_key_and_a_fresh_runner_collects_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-ant-secret-0123456789"
    store, artifacts = f"sqlite:///{tmp_path}/store/batchor.db", tmp_path / "artifacts"
    with AnthropicBatchEmulator(api_key=secret, phase_seconds=0.3) as emu:
        provider = config(emu, request_params={"cache_control": {"type": "ephemeral"}})
        with BatchRunner(store, artifacts) as first:
            started = first.start(job(provider, 8), "anth-fresh")
            assert all(b.provider_batch_id is not None for b in started.batches())
            record = first.store.get_run("anth-fresh")
            assert record is not None
            stored = record.config
        assert secret not in json.dumps(stored)
        assert {k: stored[k] for k in ("provider", "model", "max_tokens", "endpoint")} == {
            "provider": "anthropic",
            "model": MODEL,
            "max_tokens": 512,
            "endpoint": "/v1/messages",
        }
        assert stored["base_url"] == emu.base_url
        for path in (tmp_path / "store").glob("batchor.db*"):
            assert secret.encode() not in path.read_bytes()
        for path in artifacts.rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes()
        # The config rebuilds from the record alone (but the key); a runner's base URL for
        # Anthropic moves it, one for OpenAI (below) does not.
        assert config_from_record(stored) == config(
            emu, api_key=None, request_params={"cache_control": {"type": "ephemeral"}}
        )
        moved = config_from_record(stored, base_url="http://127.0.0.1:9")
        assert isinstance(moved, AnthropicProviderConfig)
        assert moved.base_url == "http://127.0.0.1:9"
        # A fresh process knows only the store, the artifacts and the key in its environment.
        monkeypatch.setenv("ANTHROPIC_API_KEY", secret)
        with BatchRunner(store, artifacts, base_url="http://127.0.0.1:9/v1") as second:
            run = second.get_run("anth-fresh")
            assert run.wait(timeout=60, **QUICK).status is RunStatus.COMPLETED
            results = list(run.results())
            assert [r.item_id for r in results] == [f"item-{i}" for i in range(8)]
            assert all(isinstance(r.output, Sentiment) for r in results)
            assert run.model == MODEL
        assert emu.stats.calls[CREATE] == 1


def test_the_runner_openai_key_and_base_url_never_reach_anthropic(tmp_path: Path) -> None:
    with (
        AnthropicBatchEmulator(api_key="sk-ant-right") as emu,
        BatchRunner(
            f"sqlite:///{tmp_path}/s.db",
            tmp_path / "a",
            api_key="sk-openai-not-for-anthropic",
            base_url="http://127.0.0.1:9/v1",
        ) as runner,
    ):
        keyless = AnthropicProviderConfig(model=MODEL, max_tokens=64, base_url=emu.base_url)
        with pytest.raises(ProviderAuthError, match="ANTHROPIC_API_KEY"):
            runner.start(job(keyless, 3), "anth-keyless")
        assert emu.stats.total_calls == 0
        run = runner.start(job(config(emu, api_key="sk-ant-right"), 3), "anth-runner")
        assert run.wait(timeout=60, **QUICK).status is RunStatus.COMPLETED
        assert emu.stats.calls[CREATE] == 1


def test_the_runner_credentials_for_anthropic_reach_it_in_every_step(tmp_path: Path) -> None:
    """A key given to the runner (as an orchestrator's connection, resource or block gives
    it) drives the run from start to collect in fresh processes; it goes only to Anthropic,
    and it is never stored."""
    secret = "sk-ant-only-in-the-runner-42"
    store, artifacts = f"sqlite:///{tmp_path}/store/batchor.db", tmp_path / "artifacts"
    with AnthropicBatchEmulator(api_key=secret, phase_seconds=0.3) as emu:
        keyless = AnthropicProviderConfig(model=MODEL, max_tokens=64)  # no key, no URL
        reach = {"anthropic": ProviderCredentials(api_key=secret, base_url=emu.base_url)}
        # An OpenAI key is not an Anthropic one: refused before anything is stored or sent.
        with (
            BatchRunner(store, artifacts, api_key=secret, base_url=emu.base_url) as openai,
            pytest.raises(ProviderAuthError) as info,
        ):
            openai.start(job(keyless, 6), "anth-reach")
        assert "credentials={'anthropic': ...}" in str(info.value)
        assert secret not in str(info.value)
        assert emu.stats.total_calls == 0
        with BatchRunner(store, artifacts, credentials=reach) as first:
            assert first.store.get_run("anth-reach") is None
            started = first.start(job(keyless, 6), "anth-reach")
            assert len(started.batches()) == 1
        # A later step without them has no key: one line naming the variable and the way.
        with BatchRunner(store, artifacts) as bare, pytest.raises(ProviderAuthError) as info:
            bare.get_run("anth-reach").wait(timeout=30, **QUICK)
        assert "ANTHROPIC_API_KEY" in str(info.value)
        with BatchRunner(store, artifacts, credentials=reach) as later:
            run = later.get_run("anth-reach")
            assert run.wait(timeout=60, **QUICK).status is RunStatus.COMPLETED
            assert sorted(by_item(run)) == sorted(f"item-{i}" for i in range(6))
        assert emu.stats.calls[CREATE] == 1
    for path in [*(tmp_path / "store").glob("batchor.db*"), *artifacts.rglob("*")]:
        assert not path.is_file() or secret.encode() not in path.read_bytes()


def test_a_refused_key_is_an_auth_error_without_the_key() -> None:
    with AnthropicBatchEmulator(api_key="sk-ant-right") as emu:
        transport = AnthropicTransport(api_key="sk-ant-wrong-123", base_url=emu.base_url)
        with pytest.raises(ProviderAuthError) as info:
            transport.retrieve_batch("msgbatch_x")
        assert "sk-ant-wrong-123" not in str(info.value)
        assert "401" in str(info.value)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"model": " "}, "model must be a non-empty string"),
        ({"max_tokens": 0}, "max_tokens must be a positive whole number"),
        ({"max_tokens": True}, "max_tokens must be a positive whole number"),
        ({"request_params": {"system": "x"}}, "request_params may not set system"),
        ({"request_params": {"tools": []}}, "request_params may not set tools"),
        ({"request_params": {"stream": True}}, "request_params may not set stream"),
        (
            {"request_params": {"output_config": {"format": {}}}},
            "request_params may not set output_config.format",
        ),
        ({"request_params": {"cache_control": "ephemeral"}}, "cache_control must be an object"),
        ({"enqueued_token_limit": 0}, "enqueued_token_limit must be a positive number"),
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        AnthropicProviderConfig(**{"model": MODEL, "max_tokens": 64, **settings})


def test_the_config_shows_no_key_and_has_the_batch_limits() -> None:
    provider = AnthropicProviderConfig(
        model=MODEL,
        max_tokens=64,
        api_key="sk-ant-hidden",
        base_url="https://user:pw@proxy.example:8443/anthropic?token=t",
        request_params={"output_config": {"effort": "low"}},
    )
    assert "sk-ant-hidden" not in repr(provider)
    record = provider.record()
    assert "sk-ant-hidden" not in json.dumps(record)
    assert record["base_url"] == "https://proxy.example:8443/anthropic"
    assert (provider.provider_name, provider.endpoint) == ("anthropic", "/v1/messages")
    limits = provider.limits
    assert limits.max_requests == 100_000
    # 256 MB for the create call's body: the packed file leaves room for its envelope.
    assert limits.max_bytes == 256_000_000 - len('{"requests":[]}') + 1
    with pytest.raises(ConfigurationError, match="between 1 and 100000 for anthropic"):
        BatchJob(
            items=[],
            build_prompt=prompt,
            provider_config=provider,
            limits=BatchLimits(max_requests=100_001),
        )


# -- the codec ----------------------------------------------------------------------------------


def codec(schema: bool = True, **params: Any) -> AnthropicCodec:
    return AnthropicCodec(
        model=MODEL,
        max_tokens=64,
        params=params,
        schema=strict_json_schema(Sentiment) if schema else None,
        schema_name="Sentiment",
    )


def body(c: AnthropicCodec, prompt_text: str, system: str | None = None) -> dict[str, Any]:
    raw = c.encode_body(PromptParts(prompt=prompt_text, system=system))
    assert raw == c.encode_body(PromptParts(prompt=prompt_text, system=system))
    parsed: dict[str, Any] = json.loads(raw)
    return parsed


def test_cache_control_goes_on_the_shared_prefix() -> None:
    cache = {"type": "ephemeral", "ttl": "1h"}
    with_system = body(codec(cache_control=cache), "p", "sys")
    assert with_system["system"] == [{"type": "text", "text": "sys", "cache_control": cache}]
    assert "cache_control" not in with_system["tools"][0]
    no_system = body(codec(cache_control=cache), "p")
    assert "system" not in no_system
    assert no_system["tools"][0]["cache_control"] == cache
    plain = body(codec(False, cache_control=cache), "p")
    assert "cache_control" not in json.dumps(plain)  # nothing shared: nothing marked
    assert body(codec(False), "p", "sys")["system"] == "sys"
    assert "system" not in body(codec(False), "p", "")  # an empty system prompt is none


def test_the_request_line_frames_the_seq_as_custom_id() -> None:
    c = codec(False)
    line = c.frame(42, c.encode_body(PromptParts(prompt="hi")))
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    parsed = json.loads(line)
    assert parsed["custom_id"] == "42"
    assert parsed["params"]["messages"] == [{"role": "user", "content": "hi"}]


def test_a_schema_with_extended_thinking_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="extended thinking"):
        codec(thinking={"type": "enabled", "budget_tokens": 1024})
    codec(thinking={"type": "disabled"})
    codec(False, thinking={"type": "enabled", "budget_tokens": 1024})


def message(content: list[dict[str, Any]], stop: str = "end_turn", **usage: int) -> bytes:
    counts = {"input_tokens": 10, "output_tokens": 5, **usage}
    line = {
        "custom_id": "7",
        "result": {
            "type": "succeeded",
            "message": {"content": content, "stop_reason": stop, "usage": counts},
        },
    }
    return json.dumps(line).encode()


def errored(kind: str) -> bytes:
    error = {"type": "error", "error": {"type": kind, "message": "boom"}}
    return json.dumps({"custom_id": "7", "result": {"type": "errored", "error": error}}).encode()


def test_result_lines_are_decoded_by_type() -> None:
    tool = codec()
    text = codec(False)
    call = {"type": "tool_use", "id": "t", "name": "Sentiment", "input": {"label": "positive"}}
    assert tool.decode(message([call], "tool_use")) == (7, Reply('{"label":"positive"}', (10, 5)))
    blocks = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    cached = message(blocks, cache_creation_input_tokens=100, cache_read_input_tokens=1000)
    assert text.decode(cached) == (7, Reply("ab", (1110, 5)))
    cut = text.decode(message(blocks, "max_tokens"))
    assert cut is not None
    assert cut[1] is not None
    assert (cut[1].error_class, cut[1].retryable) == ("incomplete", False)
    refused = text.decode(message([], "refusal"))
    assert refused is not None
    assert refused[1] is not None
    assert (refused[1].error_class, refused[1].retryable) == ("refusal", False)
    empty = tool.decode(message([]))
    assert empty is not None
    assert empty[1] is not None
    assert (empty[1].error_class, empty[1].retryable) == ("invalid_response", True)
    expected = {
        "overloaded_error": ("server_error", True),
        "api_error": ("server_error", True),
        "timeout_error": ("server_error", True),
        "rate_limit_error": ("rate_limited", True),
        "invalid_request_error": ("invalid_request", False),
        "request_too_large": ("request_too_large", False),
        "permission_error": ("provider_error", False),
    }
    for kind, (error_class, retryable) in expected.items():
        decoded = text.decode(errored(kind))
        assert decoded is not None
        assert decoded[1] is not None
        assert (decoded[1].error_class, decoded[1].retryable) == (error_class, retryable), kind
        assert decoded[1].message == f"{kind}: boom"
    for kind in ("canceled", "expired"):
        line = json.dumps({"custom_id": "7", "result": {"type": kind}}).encode()
        assert text.decode(line) == (7, None)
    assert text.decode(b"not json") is None
    assert text.decode(b'{"custom_id": "x1", "result": {}}') is None


def test_batch_verdicts() -> None:
    c = codec(False)
    assert c.batch_verdict("expired", []).charge is None
    assert c.batch_verdict("cancelled", []).charge is None
    assert c.batch_verdict("completed", []).charge == (
        "missing_output",
        "the provider's ended batch has no result for this item",
    )
    charge = c.batch_verdict("rejected", [("create_rejected", "HTTP 413")]).charge
    assert charge == ("batch_failed", "create_rejected: HTTP 413")


def test_tokens_are_estimated_from_characters_and_the_tool() -> None:
    parts = PromptParts(prompt="x" * 400, system="y" * 39)
    plain = codec(False).estimate_tokens(parts)
    assert plain == 100 + 10 + 8  # 400 + 1 + 39 characters, 4 per token, rounded up; framing
    assert codec().estimate_tokens(parts) > plain + 340  # the tool and its system prompt


# -- the transport ------------------------------------------------------------------------------


def batch_json(**overrides: Any) -> Any:
    counts = {"processing": 0, "succeeded": 3, "errored": 1, "canceled": 0, "expired": 0}
    raw = {
        "id": "msgbatch_1",
        "type": "message_batch",
        "processing_status": "ended",
        "request_counts": {**counts, **overrides.pop("counts", {})},
        "created_at": "2026-01-15T10:30:00.5Z",
        "expires_at": "2026-01-16T10:30:00.5Z",
        "ended_at": "2026-01-15T11:00:00Z",
        "cancel_initiated_at": None,
        "results_url": "https://api.anthropic.com/v1/messages/batches/msgbatch_1/results",
        **overrides,
    }
    return MessageBatch.model_validate(raw)


def test_batch_states_in_the_ports_vocabulary() -> None:
    ended = _to_provider_batch(batch_json())
    assert (ended.status, ended.output_file_id, ended.request_count) == (
        "completed",
        "msgbatch_1",
        4,
    )
    assert ended.created_at == 1768473000
    assert ended.metadata == {}
    running = _to_provider_batch(
        batch_json(
            processing_status="in_progress", counts={"processing": 4, "succeeded": 0, "errored": 0}
        )
    )
    assert (running.status, running.output_file_id, running.request_count) == (
        "in_progress",
        None,
        4,
    )
    stopping = batch_json(processing_status="canceling", cancel_initiated_at="2026-01-15T10:40:00Z")
    assert _to_provider_batch(stopping).status == "cancelling"
    cancelled = batch_json(cancel_initiated_at="2026-01-15T10:40:00Z", counts={"canceled": 2})
    assert _to_provider_batch(cancelled).status == "cancelled"
    expired = _to_provider_batch(batch_json(counts={"expired": 2}))
    assert (expired.status, expired.request_count) == ("expired", 6)


def status_error(code: int, kind: str, text: str) -> Exception:
    import httpx2

    body = {"type": "error", "error": {"type": kind, "message": text}}
    response = httpx2.Response(code, request=httpx2.Request("POST", "http://x"), json=body)
    client = anthropic.Anthropic(api_key="k", base_url="http://x")
    error: Exception = client._make_status_error(text, body=body, response=response)
    return error


@pytest.mark.parametrize(
    ("code", "kind", "text", "raised"),
    [
        (400, "invalid_request_error", "Your credit balance is too low", ProviderQuotaError),
        (402, "billing_error", "Payment required", ProviderQuotaError),
        (400, "invalid_request_error", "requests: Field required", ProviderError),
        (413, "request_too_large", "Request exceeds the maximum size", ProviderError),
        (401, "authentication_error", "invalid x-api-key", ProviderAuthError),
        (403, "permission_error", "no access", ProviderAuthError),
        (408, "timeout_error", "timeout", TransientProviderError),
        (409, "conflict", "conflict", TransientProviderError),
        (429, "rate_limit_error", "slow down", TransientProviderError),
        (500, "api_error", "Internal server error", TransientProviderError),
        (529, "overloaded_error", "Overloaded", TransientProviderError),
    ],
)
def test_sdk_errors_are_classified(code: int, kind: str, text: str, raised: type) -> None:
    error = status_error(code, kind, text)

    def call() -> None:
        raise error

    with pytest.raises(ProviderError) as info:
        _translated(call)
    assert type(info.value) is raised
    assert text in str(info.value)


def test_calls_retry_through_server_errors(anthropic_emulator: AnthropicBatchEmulator) -> None:
    emu = anthropic_emulator
    transport = AnthropicTransport(api_key=emu.api_key, base_url=emu.base_url)
    emu.faults.http_overloaded_count = 2
    assert list(transport.list_batches(0)) == []
    assert emu.stats.calls[LIST] == 3
    transport = AnthropicTransport(api_key=emu.api_key, base_url=emu.base_url, max_retries=0)
    emu.faults.http_server_error_count = 1
    with pytest.raises(TransientProviderError, match="HTTP 500"):
        list(transport.list_batches(0))


def test_a_create_is_never_retried_and_its_5xx_is_transient(
    anthropic_emulator: AnthropicBatchEmulator, tmp_path: Path
) -> None:
    emu = anthropic_emulator
    transport = AnthropicTransport(api_key=emu.api_key, base_url=emu.base_url)
    emu.faults.route_overloaded_counts["POST /v1/messages/batches"] = 1
    c = codec(False)
    lines = b"".join(c.frame(i, c.encode_body(PromptParts(prompt=f"p{i}"))) for i in range(3))
    content = lambda: contextlib.nullcontext(io.BytesIO(lines))  # noqa: E731
    with pytest.raises(TransientProviderError, match="HTTP 529"):
        transport.create_batch("inline", "/v1/messages", {"a": "b"}, content)
    assert emu.stats.calls[CREATE] == 1
    created = transport.create_batch("inline", "/v1/messages", {"a": "b"}, content)
    assert (created.status, created.request_count, created.metadata) == ("in_progress", 3, {})
    assert emu.stats.calls[CREATE] == 2
    assert emu.stats.batches_created == 1


def test_a_create_too_slow_to_send_is_abandoned_before_the_server_has_it(
    anthropic_emulator: AnthropicBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = anthropic_emulator
    c = codec(False)
    lines = b"".join(c.frame(i, c.encode_body(PromptParts(prompt=f"p{i}"))) for i in range(20))

    class Slow(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            time.sleep(0.05)
            return super().read(size)

    monkeypatch.setattr(anthropic_transport, "_CHUNK", 64)
    transport = AnthropicTransport(api_key=emu.api_key, base_url=emu.base_url, create_timeout=0.3)
    with pytest.raises(
        TransientProviderError, match=r"not sent within 0\.3 s; nothing was created"
    ):
        transport.create_batch(
            "inline", "/v1/messages", {}, lambda: contextlib.nullcontext(Slow(lines))
        )
    assert emu.stats.batches_created == 0


def test_results_are_streamed_raw_and_unavailable_ones_are_transient(
    anthropic_emulator: AnthropicBatchEmulator,
) -> None:
    emu = anthropic_emulator
    transport = AnthropicTransport(api_key=emu.api_key, base_url=emu.base_url, max_retries=0)
    c = codec(False)
    lines = b"".join(c.frame(i, c.encode_body(PromptParts(prompt=f"p{i}"))) for i in range(4))
    created = transport.create_batch(
        "inline", "/v1/messages", {}, lambda: contextlib.nullcontext(io.BytesIO(lines))
    )
    deadline = time.monotonic() + 10
    while not (ended := transport.retrieve_batch(created.id)).is_terminal:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert ended.output_file_id == created.id
    dest = io.BytesIO(b"stale bytes")
    written = transport.download_file(created.id, dest)
    raw = dest.getvalue()
    assert written == len(raw)
    assert emu.data_dir is not None
    assert raw == (emu.data_dir / f"{created.id}.results.jsonl").read_bytes()
    decoded = [c.decode(line) for line in raw.splitlines()]
    assert sorted(d[0] for d in decoded if d is not None) == [0, 1, 2, 3]
    with pytest.raises(TransientProviderError, match="not available yet"):
        transport.download_file("msgbatch_unknown", io.BytesIO())
    transport.delete_file(created.id)  # nothing to delete
    assert emu.batches()[0]["id"] == created.id
    with pytest.raises(ProviderError, match="no uploads"):
        transport.upload_file(io.BytesIO(b""), "x.jsonl")


def test_results_of_a_batch_still_running_are_transient() -> None:
    with AnthropicBatchEmulator(phase_seconds=30.0) as emu:
        transport = AnthropicTransport(api_key=emu.api_key, base_url=emu.base_url, max_retries=0)
        c = codec(False)
        line = c.frame(0, c.encode_body(PromptParts(prompt="p")))
        created = transport.create_batch(
            "inline", "/v1/messages", {}, lambda: contextlib.nullcontext(io.BytesIO(line))
        )
        with pytest.raises(TransientProviderError, match="results_url"):
            transport.download_file(created.id, io.BytesIO())
        assert transport.cancel_batch(created.id).status == "cancelling"
        assert transport.cancel_batch(created.id).status == "cancelling"


# -- scale --------------------------------------------------------------------------------------


@contextlib.contextmanager
def emulator_process() -> Iterator[tuple[str, str]]:
    """The emulator in a process of its own (so the client's memory is measured alone):
    yields its base URL and key."""
    process = subprocess.Popen(
        [sys.executable, "-m", "batchor.testing.anthropic", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        settings = dict(part.split("=", 1) for part in process.stdout.readline().split())
        yield settings["ANTHROPIC_BASE_URL"], settings["ANTHROPIC_API_KEY"]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


class MeasuredTransport(AnthropicTransport):
    """Records the peak resident memory above its starting point while each create runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.create_peaks: list[int] = []
        self.create_seconds: list[float] = []

    def create_batch(self, *args: Any, **kwargs: Any) -> Any:
        import psutil

        me = psutil.Process()
        start = me.memory_info().rss
        peak = [start]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.005):
                peak[0] = max(peak[0], me.memory_info().rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        began = time.perf_counter()
        try:
            return super().create_batch(*args, **kwargs)
        finally:
            self.create_seconds.append(time.perf_counter() - began)
            done.set()
            sampler.join()
            peak[0] = max(peak[0], me.memory_info().rss)
            self.create_peaks.append(peak[0] - start)


@pytest.mark.slow
def test_100000_structured_items_through_the_sdk_and_the_emulator(tmp_path: Path) -> None:
    n = 100_000
    with emulator_process() as (base_url, key):
        transport = MeasuredTransport(api_key=key, base_url=base_url)  # default timeouts
        provider = AnthropicProviderConfig(
            model=MODEL, max_tokens=256, api_key=key, base_url=base_url
        )
        began = time.perf_counter()
        with BatchRunner(f"sqlite:///{tmp_path}/s.db", tmp_path / "a", provider=transport) as r:
            run = r.start(job(provider, n), "anth-100k")
            summary = run.wait(timeout=1200, poll_interval=0.5, max_poll_interval=2.0)
            wall = time.perf_counter() - began
            assert summary.status is RunStatus.COMPLETED
            assert summary.completed == n
            typed = sum(
                1
                for res in run.results()
                if res.status is ItemStatus.COMPLETED and isinstance(res.output, Sentiment)
            )
            assert typed == n
            (batch,) = run.batches()
        client = anthropic.Anthropic(api_key=key, base_url=base_url)
        (remote,) = client.messages.batches.list().data
        assert remote.id == batch.provider_batch_id
        assert remote.request_counts.succeeded == n
        input_bytes = (tmp_path / "a" / "runs" / "anth-100k").rglob("requests/*.jsonl")
        size = sum(p.stat().st_size for p in input_bytes)
        peak = transport.create_peaks[0]
        print(
            f"\n100,000 items: wall {wall:.1f} s; create {transport.create_seconds[0]:.1f} s "
            f"for a {size / 1e6:.1f} MB body, peak RSS +{peak / 2**20:.1f} MiB during it"
        )
        assert transport.create_peaks == [peak]  # one create, never retried
        assert peak < 64 * 2**20  # streamed: far below the body's size
