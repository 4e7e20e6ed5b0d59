"""Finishing the stragglers on Anthropic (issue #19, `FinishSync`): the emulator's
synchronous ``POST /v1/messages`` through the real ``anthropic`` SDK (a typed Message, the
``anthropic-ratelimit-*`` headers, a 429 with ``retry-after`` over the per-minute limit,
each request answered as a batch answers it), the transport's `send_sync` judged by the
codec, and a run whose batch the emulator holds open finished synchronously: one cancel,
the held batch's answers kept, the rest answered once each at the standard price."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pytest

anthropic = pytest.importorskip("anthropic")

from anthropic.types import Message  # noqa: E402

from batchor import (  # noqa: E402
    AnthropicProviderConfig,
    BatchJob,
    BatchLimits,
    BatchRunner,
    FinishSync,
    ItemStatus,
    PromptParts,
    RunStatus,
    Usage,
)
from batchor.errors import ProviderAuthError  # noqa: E402
from batchor.providers.anthropic.codec import AnthropicCodec  # noqa: E402
from batchor.providers.anthropic.transport import AnthropicTransport  # noqa: E402
from batchor.structured import strict_json_schema  # noqa: E402
from batchor.testing.anthropic import (  # noqa: E402
    AnthropicBatchEmulator,
    AnthropicEmulatorFaults,
    AnthropicEmulatorLimits,
)

from .conftest import Sentiment, make_items, prompt  # noqa: E402

MODEL: Final = "claude-haiku-4-5"
#: Anthropic's standard (synchronous) price of the model, USD per million input and output
#: tokens (its model page: $1 / $5); the price table holds the Batch API's, half of it.
STANDARD: Final = (1.0, 5.0)
MESSAGES: Final = "/v1/messages"
CANCEL: Final = ("POST", "/v1/messages/batches/{id}/cancel")
ITEMS, PER_BATCH = 30, 10
HELD_ANSWERED = PER_BATCH // 2  # the held batch answers half of its requests
STRAGGLERS = PER_BATCH - HELD_ANSWERED
RATE_HEADERS: Final = ("requests", "input-tokens", "output-tokens", "tokens")


@pytest.fixture(autouse=True)
def _no_anthropic_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def emu() -> Iterator[AnthropicBatchEmulator]:
    with AnthropicBatchEmulator(api_key="sk-ant-secret", phase_seconds=0.05) as emulator:
        yield emulator


def _client(emu: AnthropicBatchEmulator, **options: Any) -> Any:
    return anthropic.Anthropic(api_key=emu.api_key, base_url=emu.base_url, **options)


def _params(text: str = "review 1", **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": text}],
        **extra,
    }


def _codec(structured: bool = True) -> AnthropicCodec:
    schema = strict_json_schema(Sentiment) if structured else None
    return AnthropicCodec(
        model=MODEL, max_tokens=256, params={}, schema=schema, schema_name="Sentiment"
    )


def _without_ids(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in block.items() if k != "id"} for block in blocks]


def _wait_ended(emu: AnthropicBatchEmulator, batch_id: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        batch = next(b for b in emu.batches() if b["id"] == batch_id)
        if batch["processing_status"] == "ended":
            return
        time.sleep(0.02)
    raise AssertionError(f"batch {batch_id} did not end")


# -- the endpoint, through the real SDK ----------------------------------------------------------


def test_the_sdk_gets_a_typed_message_with_the_rate_limit_headers(
    emu: AnthropicBatchEmulator,
) -> None:
    client = _client(emu, max_retries=0)
    raw = client.messages.with_raw_response.create(**_params("hello there"))
    message = raw.parse()
    assert isinstance(message, Message)
    assert message.model == MODEL
    assert message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Echo: hello there"
    assert message.stop_reason == "end_turn"
    assert message.usage.service_tier == "standard"  # not a batch's
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    limits = AnthropicEmulatorLimits()
    headers = raw.headers
    assert headers["anthropic-ratelimit-requests-limit"] == str(limits.requests_per_minute)
    assert headers["anthropic-ratelimit-requests-remaining"] == str(limits.requests_per_minute - 1)
    for name in RATE_HEADERS:
        for part in ("limit", "remaining"):
            assert headers[f"anthropic-ratelimit-{name}-{part}"].isdigit()
        reset = datetime.fromisoformat(headers[f"anthropic-ratelimit-{name}-reset"])
        assert abs(reset.timestamp() - time.time()) <= 61
    assert "retry-after" not in headers
    assert emu.stats.sync_answered == {MESSAGES: 1}
    assert emu.stats.sync_tokens == (message.usage.input_tokens, message.usage.output_tokens)
    assert emu.stats.calls[("POST", MESSAGES)] == 1


def test_a_synchronous_answer_is_the_batch_result_for_the_same_request(
    emu: AnthropicBatchEmulator,
) -> None:
    client = _client(emu, max_retries=0)
    tool = {"name": "Sentiment", "input_schema": strict_json_schema(Sentiment)}
    requests = [
        _params("review 7", system="Label the sentiment."),
        _params("review 8", tools=[tool], tool_choice={"type": "tool", "name": "Sentiment"}),
        _params("a review that runs long", max_tokens=2),  # cut off at max_tokens
    ]
    batch = client.messages.batches.create(
        requests=[{"custom_id": str(i), "params": p} for i, p in enumerate(requests)]
    )
    _wait_ended(emu, batch.id)
    in_batch = {r["custom_id"]: r["result"]["message"] for r in emu.results(batch.id)}
    assert in_batch["1"]["content"][0]["type"] == "tool_use"
    assert in_batch["2"]["stop_reason"] == "max_tokens"
    for i, params in enumerate(requests):
        answered = client.messages.create(**params).model_dump(exclude_none=True)
        expected = in_batch[str(i)]
        # The same reply (only the ids, fresh for every message, differ).
        assert _without_ids(answered["content"]) == _without_ids(expected["content"])
        assert answered["stop_reason"] == expected["stop_reason"]
        usage = {k: v for k, v in answered["usage"].items() if k != "service_tier"}
        assert usage == {
            k: v for k, v in expected["usage"].items() if k != "service_tier" and v is not None
        }
    # A request the API refuses: the 400's error is the batch's errored result.
    bad = _params(max_tokens=0)
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(**bad)
    batch = client.messages.batches.create(requests=[{"custom_id": "bad", "params": bad}])
    _wait_ended(emu, batch.id)
    [errored] = emu.results(batch.id)
    assert errored["result"]["type"] == "errored"
    assert info.value.body["error"] == errored["result"]["error"]["error"]
    assert info.value.body["type"] == "error"
    assert info.value.body["request_id"]
    assert emu.stats.sync_answered == {MESSAGES: len(requests)}  # the refused one is not


def test_over_the_per_minute_limit_the_sdk_gets_a_429_with_retry_after(
    emu: AnthropicBatchEmulator,
) -> None:
    emu.limits = AnthropicEmulatorLimits(requests_per_minute=2)
    client = _client(emu, max_retries=0)
    for _ in range(2):
        client.messages.create(**_params())
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(**_params())
    response = info.value.response
    assert response.status_code == 429
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert response.headers["anthropic-ratelimit-requests-limit"] == "2"
    assert emu.stats.sync_answered == {MESSAGES: 2}
    assert emu.stats.sync_rate_limited == 1
    # The SDK waits as retry-after says, then the refilled limit lets the request through.
    emu.limits = AnthropicEmulatorLimits(requests_per_minute=1, rate_window=0.3)
    retrying = _client(emu, max_retries=2)
    retrying.messages.create(**_params())
    started = time.monotonic()
    retrying.messages.create(**_params())
    assert time.monotonic() - started >= 0.9  # retry-after: 1 (whole seconds)
    assert emu.stats.sync_answered == {MESSAGES: 4}
    assert emu.stats.sync_rate_limited == 2


def test_the_endpoint_authenticates_and_injects_faults_as_the_other_routes(
    emu: AnthropicBatchEmulator,
) -> None:
    with pytest.raises(anthropic.AuthenticationError) as info:
        anthropic.Anthropic(api_key="wrong", base_url=emu.base_url).messages.create(**_params())
    assert info.value.body["error"]["type"] == "authentication_error"
    emu.faults = AnthropicEmulatorFaults(
        line_fault=lambda _, params: (
            "overloaded_error" if params["messages"][0]["content"] == "busy" else None
        ),
        route_rate_limit_counts={f"POST {MESSAGES}": 1},
    )
    client = _client(emu, max_retries=0)
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(**_params())
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        client.messages.create(**_params("busy"))
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"
    assert client.messages.create(**_params("fine")).content[0].text == "Echo: fine"
    # Answered (one faulted), not counting the refused ones.
    assert emu.stats.sync_answered == {MESSAGES: 2}


# -- the transport ---------------------------------------------------------------------------


def test_send_sync_answers_a_batch_line_as_the_codec_reads_a_result(
    emu: AnthropicBatchEmulator,
) -> None:
    transport = AnthropicTransport(api_key=emu.api_key, base_url=emu.base_url, max_retries=0)
    assert transport.sync_requests
    codec = _codec()
    line = codec.frame(7, codec.encode_body(PromptParts("review 7", system="Label it.")))
    result = transport.send_sync(line)
    assert result.wait == 0.0
    seq, reply = codec.decode(result.line) or (0, None)
    assert seq == 7
    assert reply is not None
    assert reply.error_class is None
    assert Sentiment.model_validate_json(reply.text or "")
    assert reply.usage == emu.stats.sync_tokens
    # A faulted answer comes back as the errored result a batch would hold: retried.
    emu.faults = AnthropicEmulatorFaults(line_fault=lambda _, __: "api_error")
    seq, reply = codec.decode(transport.send_sync(line).line) or (0, None)
    assert seq == 7
    assert reply is not None
    assert (reply.error_class, reply.retryable) == ("server_error", True)
    # The last request of the minute: hold off until the limit refills.
    emu.faults = AnthropicEmulatorFaults()
    emu.limits = AnthropicEmulatorLimits(requests_per_minute=1, rate_window=30.0)
    result = transport.send_sync(line)
    assert 20.0 < result.wait <= 30.0
    over = transport.send_sync(line)  # refused 429: the retryable result, the same hold-off
    seq, reply = codec.decode(over.line) or (0, None)
    assert reply is not None
    assert (reply.error_class, reply.retryable) == ("rate_limited", True)
    assert 20.0 < over.wait <= 30.0
    # A refused key stops the sending.
    refused = AnthropicTransport(api_key="wrong", base_url=emu.base_url, max_retries=0)
    with pytest.raises(ProviderAuthError) as info:
        refused.send_sync(line)
    assert "wrong" not in str(info.value)


# -- a run finished synchronously ----------------------------------------------------------------


def test_the_stragglers_of_a_held_batch_are_answered_synchronously_once(
    tmp_path: Path,
) -> None:
    faults = AnthropicEmulatorFaults(hold_count=1)
    with (
        AnthropicBatchEmulator(phase_seconds=0.05, faults=faults) as emu,
        BatchRunner(f"sqlite:///{tmp_path}/store/batchor.db", tmp_path / "artifacts") as runner,
    ):
        job = BatchJob(
            items=make_items(ITEMS),
            build_prompt=prompt,
            provider_config=AnthropicProviderConfig(
                model=MODEL, max_tokens=256, api_key=emu.api_key, base_url=emu.base_url
            ),
            structured_output=Sentiment,
            limits=BatchLimits(max_requests=PER_BATCH),
            finish_sync=FinishSync(when_remaining_at_most=PER_BATCH, after=timedelta(seconds=0.3)),
        )
        run = runner.start(job, "finish")
        summary = run.wait(60, poll_interval=0.05, max_poll_interval=0.25)
        assert summary.status is RunStatus.COMPLETED
        # The held batch was cancelled once and ended with its answers kept.
        assert emu.stats.calls[CANCEL] == 1
        batches = emu.batches()
        assert len(batches) == ITEMS // PER_BATCH  # no batch for the stragglers
        held = batches[0]
        assert held["cancel_initiated_at"] is not None
        assert held["request_counts"]["succeeded"] == HELD_ANSWERED
        assert held["request_counts"]["canceled"] == STRAGGLERS
        assert {b.status for b in run.batches()} == {"collected"}
        # Every batch request answered once, the stragglers synchronously, once each.
        assert set(emu.stats.lines_answered.values()) == {1}
        assert sum(emu.stats.lines_answered.values()) == ITEMS - STRAGGLERS
        assert emu.stats.sync_answered == {MESSAGES: STRAGGLERS}
        assert summary.sync_answered == STRAGGLERS
        assert summary.duplicate_answers == 0
        results = list(run.results())
        assert [r.status for r in results] == [ItemStatus.COMPLETED] * ITEMS
        assert {r.attempts for r in results} == {1}
        assert all(isinstance(r.output, Sentiment) for r in results)
        # Usage: the batches' as their results billed it, the synchronous requests' apart.
        billed = [0, 0]
        for batch in batches:
            for line in emu.results(batch["id"]):
                if line["result"]["type"] == "succeeded":
                    usage = line["result"]["message"]["usage"]
                    billed[0] += usage["input_tokens"]
                    billed[1] += usage["output_tokens"]
        assert (summary.usage.input_tokens, summary.usage.output_tokens) == tuple(billed)
        sync = (summary.sync_usage.input_tokens, summary.sync_usage.output_tokens)
        assert sync == emu.stats.sync_tokens
        assert sync[0] > 0
        assert sync[1] > 0
        items = Counter[str]()
        for r in results:
            assert r.usage is not None
            items.update({"in": r.usage.input_tokens, "out": r.usage.output_tokens})
        assert (items["in"], items["out"]) == (billed[0] + sync[0], billed[1] + sync[1])
        # Costs: the batches at the table's Batch API price, the synchronous requests at
        # Anthropic's standard price, which is twice it.
        price = runner.prices.price(MODEL)
        assert price is not None
        assert summary.cost_usd == pytest.approx(price.cost(Usage(*billed)))
        standard = (sync[0] * STANDARD[0] + sync[1] * STANDARD[1]) / 1e6
        assert summary.sync_cost_usd == pytest.approx(standard)
        assert summary.sync_cost_usd == pytest.approx(2 * price.cost(Usage(*sync)))
