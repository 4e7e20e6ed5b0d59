"""The Anthropic Message Batches emulator, driven by the real ``anthropic`` client over HTTP
(no mocks). Every object the emulator answers is also checked against the SDK's types."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import anthropic
import jsonschema
import pytest
from anthropic import Anthropic
from anthropic.types import Message, TextBlock, ToolUseBlock, Usage
from anthropic.types.messages import (
    DeletedMessageBatch,
    MessageBatch,
    MessageBatchIndividualResponse,
    MessageBatchRequestCounts,
)
from pydantic import BaseModel

from batchor.testing.anthropic import (
    AnthropicBatchEmulator,
    AnthropicEmulatorFaults,
    AnthropicEmulatorLimits,
)

MODEL = "claude-sonnet-4-5"
CREATE = "POST /v1/messages/batches"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["label", "score", "tags"],
    "additionalProperties": False,
}


# -- helpers ------------------------------------------------------------------------------------


def client_for(emu: AnthropicBatchEmulator, **kwargs: Any) -> Anthropic:
    options: dict[str, Any] = {"max_retries": 0, "timeout": 30.0, **kwargs}
    return Anthropic(base_url=emu.base_url, api_key=emu.api_key, **options)


def params(prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }


def requests_for(n: int, prefix: str = "req", **extra: Any) -> list[dict[str, Any]]:
    return [
        {"custom_id": f"{prefix}-{i}", "params": params(f"prompt {i}", **extra)} for i in range(n)
    ]


def tool_params(prompt: str, schema: dict[str, Any] = SCHEMA) -> dict[str, Any]:
    return params(
        prompt,
        tools=[{"name": "record", "description": "Record it.", "input_schema": schema}],
        tool_choice={"type": "tool", "name": "record"},
    )


def wait_ended(client: Anthropic, batch_id: str, timeout: float = 30.0) -> MessageBatch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} did not end"
        time.sleep(0.02)


def run_batch(
    client: Anthropic, requests: list[dict[str, Any]]
) -> tuple[MessageBatch, dict[str, MessageBatchIndividualResponse]]:
    created = client.messages.batches.create(requests=requests)
    batch = wait_ended(client, created.id)
    results = {r.custom_id: r for r in client.messages.batches.results(batch.id)}
    return batch, results


def raw(
    emu: AnthropicBatchEmulator,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP call with exactly the given headers (default: a valid key and version)."""
    if headers is None:
        headers = {"x-api-key": emu.api_key, "anthropic-version": "2023-06-01"}
    data = None if body is None else json.dumps(body).encode()
    connection = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=30)
    try:
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def strict(model: type[BaseModel], value: dict[str, Any]) -> Any:
    """Validate ``value`` against an SDK type, refusing fields the type does not declare."""
    unknown = set(value) - set(model.model_fields)
    assert not unknown, f"{model.__name__} has no fields {unknown}"
    return model.model_validate(value)


def check_batch_json(value: dict[str, Any]) -> MessageBatch:
    strict(MessageBatchRequestCounts, value["request_counts"])
    batch = strict(MessageBatch, value)
    assert batch.id.startswith("msgbatch_")
    assert batch.expires_at - batch.created_at == timedelta(hours=24)
    assert "metadata" not in value
    return batch


def check_result_json(value: dict[str, Any]) -> MessageBatchIndividualResponse:
    result = value["result"]
    if result["type"] == "succeeded":
        message = result["message"]
        strict(Usage, message["usage"])
        for block in message["content"]:
            strict(ToolUseBlock if block["type"] == "tool_use" else TextBlock, block)
        strict(Message, message)
        assert set(result) == {"type", "message"}
    elif result["type"] == "errored":
        assert set(result) == {"type", "error"}
        assert result["error"]["type"] == "error"
        assert set(result["error"]["error"]) == {"type", "message"}
    else:
        assert set(result) == {"type"}
    return strict(MessageBatchIndividualResponse, value)


def error_of(body: bytes) -> dict[str, Any]:
    payload = json.loads(body)
    assert payload["type"] == "error"
    assert set(payload["error"]) == {"type", "message"}
    assert payload["request_id"].startswith("req_")
    return payload["error"]


@pytest.fixture
def emu() -> Iterator[AnthropicBatchEmulator]:
    with AnthropicBatchEmulator() as emulator:
        yield emulator


# -- lifecycle ----------------------------------------------------------------------------------


def test_create_retrieve_and_results(anthropic_emulator: AnthropicBatchEmulator) -> None:
    client = client_for(anthropic_emulator)
    created = client.messages.batches.create(requests=requests_for(3))
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 3
    assert created.results_url is None
    assert created.ended_at is None

    batch = wait_ended(client, created.id)
    assert batch.request_counts == MessageBatchRequestCounts(
        processing=0, succeeded=3, errored=0, canceled=0, expired=0
    )
    assert batch.ended_at is not None
    assert (
        batch.results_url == f"{anthropic_emulator.base_url}/v1/messages/batches/{batch.id}/results"
    )

    status, headers, body = raw(anthropic_emulator, "GET", f"/v1/messages/batches/{batch.id}")
    assert status == 200
    assert headers["request-id"].startswith("req_")
    check_batch_json(json.loads(body))

    results = list(client.messages.batches.results(batch.id))
    assert all(isinstance(r, MessageBatchIndividualResponse) for r in results)
    assert sorted(r.custom_id for r in results) == ["req-0", "req-1", "req-2"]
    for result in results:
        assert result.result.type == "succeeded"
        message = result.result.message
        assert message.model == MODEL
        assert message.id.startswith("msg_")
        assert message.stop_reason == "end_turn"
        assert isinstance(message.content[0], TextBlock)
        assert message.content[0].text == "Echo: prompt " + result.custom_id.split("-")[1]
        assert message.usage.output_tokens >= 1
        assert message.usage.cache_read_input_tokens == 0
        assert message.usage.service_tier == "batch"
    for value in anthropic_emulator.results(batch.id):
        check_result_json(value)
    assert anthropic_emulator.stats.batches_created == 1
    assert anthropic_emulator.stats.lines_answered == Counter({"req-0": 1, "req-1": 1, "req-2": 1})


def test_results_stream_over_raw_http(emu: AnthropicBatchEmulator) -> None:
    client = client_for(emu)
    batch, _ = run_batch(client, requests_for(5))
    status, _, body = raw(emu, "GET", f"/v1/messages/batches/{batch.id}/results")
    assert status == 200
    lines = body.decode().splitlines()
    assert len(lines) == 5
    for line in lines:
        check_result_json(json.loads(line))


def test_results_of_a_batch_still_processing_are_refused() -> None:
    with AnthropicBatchEmulator(phase_seconds=5) as emu:
        client = client_for(emu)
        batch = client.messages.batches.create(requests=requests_for(2))
        with pytest.raises(anthropic.AnthropicError, match="results_url"):
            list(client.messages.batches.results(batch.id))
        status, _, body = raw(emu, "GET", f"/v1/messages/batches/{batch.id}/results")
        assert status == 400
        assert error_of(body)["type"] == "invalid_request_error"


def test_list_pages_newest_first(emu: AnthropicBatchEmulator) -> None:
    client = client_for(emu)
    ids = [client.messages.batches.create(requests=requests_for(1)).id for _ in range(5)]
    newest_first = ids[::-1]
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first

    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert page.has_more is True
    assert (page.first_id, page.last_id) == (newest_first[0], newest_first[1])

    older = client.messages.batches.list(limit=2, after_id=newest_first[1])
    assert [b.id for b in older.data] == newest_first[2:4]
    newer = client.messages.batches.list(limit=2, before_id=newest_first[3])
    assert [b.id for b in newer.data] == newest_first[1:3]
    assert newer.has_more is True
    last = client.messages.batches.list(limit=10, after_id=newest_first[2])
    assert [b.id for b in last.data] == newest_first[3:]
    assert last.has_more is False

    status, _, body = raw(emu, "GET", "/v1/messages/batches?limit=3")
    listing = json.loads(body)
    assert status == 200
    assert set(listing) == {"data", "has_more", "first_id", "last_id"}
    for value in listing["data"]:
        check_batch_json(value)
    for query in ("limit=0", "limit=1001", "limit=x", f"after_id={ids[0]}&before_id={ids[1]}"):
        status, _, body = raw(emu, "GET", f"/v1/messages/batches?{query}")
        assert status == 400, query
        assert error_of(body)["type"] == "invalid_request_error"


def test_cancel_ends_with_unanswered_requests_canceled() -> None:
    with AnthropicBatchEmulator(phase_seconds=2.0) as emu:
        client = client_for(emu)
        created = client.messages.batches.create(requests=requests_for(40))
        assert client.messages.batches.retrieve(created.id).processing_status == "in_progress"
        canceling = client.messages.batches.cancel(created.id)
        assert canceling.processing_status == "canceling"
        assert canceling.cancel_initiated_at is not None
        assert canceling.request_counts.processing == 40
        again = client.messages.batches.cancel(created.id)  # idempotent while canceling
        assert again.cancel_initiated_at == canceling.cancel_initiated_at

        batch = wait_ended(client, created.id)
        counts = batch.request_counts
        assert counts.canceled >= 1
        assert counts.succeeded + counts.canceled == 40
        assert counts.processing == counts.errored == counts.expired == 0
        assert batch.ended_at is not None
        assert batch.ended_at - batch.cancel_initiated_at >= timedelta(seconds=1.9)
        results = list(client.messages.batches.results(batch.id))
        assert Counter(r.result.type for r in results) == Counter(
            {"succeeded": counts.succeeded, "canceled": counts.canceled}
        )
        assert sum(emu.stats.lines_answered.values()) == counts.succeeded

        with pytest.raises(anthropic.BadRequestError) as caught:
            client.messages.batches.cancel(batch.id)
        assert caught.value.status_code == 400


def test_delete_only_an_ended_batch() -> None:
    with AnthropicBatchEmulator(phase_seconds=0.5) as emu:
        client = client_for(emu)
        created = client.messages.batches.create(requests=requests_for(2))
        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.delete(created.id)
        wait_ended(client, created.id)
        deleted = client.messages.batches.delete(created.id)
        assert deleted == DeletedMessageBatch(id=created.id, type="message_batch_deleted")
        with pytest.raises(anthropic.NotFoundError) as caught:
            client.messages.batches.retrieve(created.id)
        assert caught.value.body["error"]["type"] == "not_found_error"
        status, _, _ = raw(emu, "GET", f"/v1/messages/batches/{created.id}/results")
        assert status == 404
        assert emu.batches() == []


def test_unknown_batch_and_route_are_not_found(emu: AnthropicBatchEmulator) -> None:
    client = client_for(emu)
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve("msgbatch_01nope")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.cancel("msgbatch_01nope")
    status, _, body = raw(emu, "GET", "/v1/nothing-here")
    assert status == 404
    assert error_of(body)["type"] == "not_found_error"


def test_phase_seconds_keeps_a_batch_in_progress() -> None:
    with AnthropicBatchEmulator(phase_seconds=0.6) as emu:
        client = client_for(emu)
        started = time.monotonic()
        created = client.messages.batches.create(requests=requests_for(10))
        batch = wait_ended(client, created.id)
        assert time.monotonic() - started >= 0.55
        assert batch.request_counts.succeeded == 10


# -- replies ------------------------------------------------------------------------------------


def test_forced_tool_reply_fits_the_input_schema(emu: AnthropicBatchEmulator) -> None:
    requests = [{"custom_id": f"t{i}", "params": tool_params(f"review {i}")} for i in range(20)]
    requests.append(
        {"custom_id": "any", "params": {**tool_params("x"), "tool_choice": {"type": "any"}}}
    )
    _, results = run_batch(client_for(emu), requests)
    inputs = []
    for result in results.values():
        assert result.result.type == "succeeded"
        message = result.result.message
        assert message.stop_reason == "tool_use"
        (block,) = message.content
        assert isinstance(block, ToolUseBlock)
        assert block.name == "record"
        assert block.id.startswith("toolu_")
        jsonschema.validate(block.input, SCHEMA)
        inputs.append(json.dumps(block.input, sort_keys=True))
    assert len(set(inputs)) > 1  # replies vary with the prompt
    again = run_batch(client_for(emu), requests[:1])[1]["t0"]
    first_block = results["t0"].result.message.content[0]
    assert again.result.message.content[0].input == first_block.input


def test_output_config_json_schema_reply(emu: AnthropicBatchEmulator) -> None:
    structured = params(
        "judge", output_config={"format": {"type": "json_schema", "schema": SCHEMA}}
    )
    beta = params("judge", output_format={"type": "json_schema", "schema": SCHEMA})
    _, results = run_batch(
        client_for(emu),
        [{"custom_id": "ga", "params": structured}, {"custom_id": "beta", "params": beta}],
    )
    for result in results.values():
        message = result.result.message
        assert message.stop_reason == "end_turn"
        (block,) = message.content
        assert isinstance(block, TextBlock)
        jsonschema.validate(json.loads(block.text), SCHEMA)


def test_stop_sequences_and_max_tokens(emu: AnthropicBatchEmulator) -> None:
    requests = [
        {"custom_id": "stop", "params": params("one STOP two", stop_sequences=["STOP"])},
        {"custom_id": "short", "params": {**params("a long prompt " * 20), "max_tokens": 3}},
    ]
    _, results = run_batch(client_for(emu), requests)
    stopped = results["stop"].result.message
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", "STOP")
    assert stopped.content[0].text == "Echo: one "
    short = results["short"].result.message
    assert short.stop_reason == "max_tokens"
    assert short.usage.output_tokens == 3
    assert len(short.content[0].text) == 12


def test_repeated_cache_control_prefix_is_read_from_the_cache(emu: AnthropicBatchEmulator) -> None:
    system = [
        {"type": "text", "text": "You review books."},
        {"type": "text", "text": "A long book. " * 400, "cache_control": {"type": "ephemeral"}},
    ]
    short = [{"type": "text", "text": "Too short.", "cache_control": {"type": "ephemeral"}}]
    requests = [
        {"custom_id": "first", "params": params("themes?", system=system)},
        {"custom_id": "second", "params": params("summary?", system=system)},
        {"custom_id": "short-1", "params": params("a", system=short)},
        {"custom_id": "short-2", "params": params("b", system=short)},
    ]
    _, results = run_batch(client_for(emu), requests)
    usage = {cid: r.result.message.usage for cid, r in results.items()}
    assert usage["first"].cache_creation_input_tokens > 1024
    assert usage["first"].cache_read_input_tokens == 0
    assert usage["first"].cache_creation.ephemeral_5m_input_tokens > 1024
    assert usage["second"].cache_read_input_tokens == usage["first"].cache_creation_input_tokens
    assert usage["second"].cache_creation_input_tokens == 0
    for cid in ("short-1", "short-2"):  # under the minimum cacheable length
        assert usage[cid].cache_creation_input_tokens == usage[cid].cache_read_input_tokens == 0


def test_invalid_params_come_back_as_errored_results(emu: AnthropicBatchEmulator) -> None:
    no_max = params("x")
    del no_max["max_tokens"]
    cases = {
        "no-max-tokens": (no_max, "max_tokens: Field required"),
        "no-messages": ({**params("x"), "messages": []}, "messages: List should have at least 1"),
        "no-model": (
            {k: v for k, v in params("x").items() if k != "model"},
            "model: Field required",
        ),
        "bad-role": ({**params("x"), "messages": [{"role": "robot", "content": "x"}]}, "role"),
        "stream": ({**params("x"), "stream": True}, "stream"),
        "bad-tool": (
            {**params("x"), "tools": [{"name": "t"}], "tool_choice": {"type": "tool", "name": "t"}},
            "input_schema: Field required",
        ),
        "unknown-tool": ({**tool_params("x"), "tool_choice": {"type": "tool", "name": "n"}}, "'n'"),
    }
    requests = [{"custom_id": cid, "params": body} for cid, (body, _) in cases.items()]
    requests.append({"custom_id": "fine", "params": params("fine")})
    batch, results = run_batch(client_for(emu), requests)
    assert batch.request_counts.errored == len(cases)
    assert batch.request_counts.succeeded == 1
    for cid, (_, message) in cases.items():
        result = results[cid].result
        assert result.type == "errored"
        assert result.error.error.type == "invalid_request_error"
        assert message in result.error.error.message, cid


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knob", "error_type"),
    [
        ("line_overloaded_rate", "overloaded_error"),
        ("line_api_error_rate", "api_error"),
        ("line_invalid_request_rate", "invalid_request_error"),
    ],
)
def test_line_error_faults(knob: str, error_type: str) -> None:
    faults = AnthropicEmulatorFaults(**{knob: 1.0})
    with AnthropicBatchEmulator(faults=faults) as emu:
        batch, results = run_batch(client_for(emu), requests_for(4))
        assert batch.request_counts.errored == 4
        for result in results.values():
            assert result.result.type == "errored"
            assert result.result.error.error.type == error_type
        for value in emu.results(batch.id):
            check_result_json(value)
        assert sum(emu.stats.lines_answered.values()) == 4


def test_line_fault_rates_are_seeded() -> None:
    def errored_ids() -> set[str]:
        faults = AnthropicEmulatorFaults(seed=7, line_api_error_rate=0.3)
        with AnthropicBatchEmulator(faults=faults) as emu:
            _, results = run_batch(client_for(emu), requests_for(60))
            return {cid for cid, r in results.items() if r.result.type == "errored"}

    first = errored_ids()
    assert 5 < len(first) < 35
    assert errored_ids() == first


def test_invalid_json_and_schema_mismatch_replies() -> None:
    structured = params("x", output_config={"format": {"type": "json_schema", "schema": SCHEMA}})
    faults = AnthropicEmulatorFaults(
        line_fault=lambda cid, _: (
            "invalid_json" if cid.startswith("bad-json") else "schema_mismatch"
        )
    )
    with AnthropicBatchEmulator(faults=faults) as emu:
        requests = [
            {"custom_id": "bad-json", "params": structured},
            {"custom_id": "bad-json-text", "params": params("plain")},
            {"custom_id": "mismatch", "params": structured},
            {"custom_id": "mismatch-tool", "params": tool_params("y")},
            {"custom_id": "bad-json-tool", "params": tool_params("z")},
        ]
        _, results = run_batch(client_for(emu), requests)
    for cid in ("bad-json", "bad-json-text"):
        text = results[cid].result.message.content[0].text
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)
    mismatch = json.loads(results["mismatch"].result.message.content[0].text)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(mismatch, SCHEMA)
    for cid in ("mismatch-tool", "bad-json-tool"):
        block = results[cid].result.message.content[0]
        assert isinstance(block, ToolUseBlock)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(block.input, SCHEMA)


def test_line_rewrite_can_lose_or_replace_results() -> None:
    def rewrite(line: dict[str, Any]) -> dict[str, Any] | str | None:
        if line["custom_id"] == "req-0":
            return None
        if line["custom_id"] == "req-1":
            return {
                **line,
                "result": {
                    "type": "errored",
                    "error": {"type": "error", "error": {"type": "api_error", "message": "boom"}},
                },
            }
        return line

    with AnthropicBatchEmulator(faults=AnthropicEmulatorFaults(line_rewrite=rewrite)) as emu:
        batch, results = run_batch(client_for(emu), requests_for(3))
    assert batch.request_counts.succeeded == 3  # counts are the API's, not the rewritten lines
    assert set(results) == {"req-1", "req-2"}
    assert results["req-1"].result.type == "errored"


def test_shuffled_results_still_hold_every_request() -> None:
    with AnthropicBatchEmulator(faults=AnthropicEmulatorFaults(shuffle_output=True)) as emu:
        batch, _ = run_batch(client_for(emu), requests_for(50))
        order = [line["custom_id"] for line in emu.results(batch.id)]
    assert sorted(order) == sorted(f"req-{i}" for i in range(50))
    assert order != [f"req-{i}" for i in range(50)]


def test_route_errors_are_answered_in_anthropic_shape(emu: AnthropicBatchEmulator) -> None:
    client = client_for(emu)
    emu.faults.route_overloaded_counts[CREATE] = 1
    with pytest.raises(anthropic.OverloadedError) as overloaded:
        client.messages.batches.create(requests=requests_for(1))
    assert overloaded.value.status_code == 529
    assert overloaded.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
        "request_id": overloaded.value.request_id,
    }
    emu.faults.route_rate_limit_counts[CREATE] = 1
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.batches.create(requests=requests_for(1))
    assert limited.value.response.headers["retry-after"] == "0"
    emu.faults.route_server_error_counts["GET /v1/messages/batches"] = 1
    with pytest.raises(anthropic.InternalServerError) as failed:
        client.messages.batches.list()
    assert failed.value.status_code == 500
    assert failed.value.body["error"]["type"] == "api_error"
    assert emu.stats.batches_created == 0


def test_the_sdk_retries_through_route_errors(emu: AnthropicBatchEmulator) -> None:
    client = client_for(emu, max_retries=3)
    emu.faults.route_overloaded_counts[CREATE] = 1
    emu.faults.route_rate_limit_counts[CREATE] = 1
    emu.faults.route_server_error_counts[CREATE] = 1
    batch = client.messages.batches.create(requests=requests_for(1))
    emu.faults.http_server_error_count = 1
    assert client.messages.batches.retrieve(batch.id).id == batch.id
    assert emu.stats.calls[("POST", "/v1/messages/batches")] == 4
    assert emu.stats.calls[("GET", "/v1/messages/batches/{id}")] == 2
    assert emu.stats.batches_created == 1


def test_a_dropped_create_answer_leaves_the_batch_created(emu: AnthropicBatchEmulator) -> None:
    emu.faults.create_drop_connection_count = 1
    with pytest.raises(anthropic.APIConnectionError):
        client_for(emu).messages.batches.create(requests=requests_for(2))
    assert emu.stats.batches_created == 1
    # A client that retries the create makes a second batch: nothing deduplicates it.
    emu.faults.create_drop_connection_count = 1
    batch = client_for(emu, max_retries=1).messages.batches.create(requests=requests_for(2))
    assert emu.stats.batches_created == 3
    assert batch.id == emu.batches()[-1]["id"]


def test_a_create_answered_after_the_client_gave_up(emu: AnthropicBatchEmulator) -> None:
    emu.faults.create_response_delay = 1.5
    with pytest.raises(anthropic.APITimeoutError):
        client_for(emu, timeout=0.4).messages.batches.create(requests=requests_for(2))
    (batch,) = emu.batches()
    assert batch["request_counts"]["processing"] + batch["request_counts"]["succeeded"] == 2


def test_expiry_answers_only_part_of_the_batch() -> None:
    with AnthropicBatchEmulator(faults=AnthropicEmulatorFaults(expire_count=1)) as emu:
        client = client_for(emu)
        batch, results = run_batch(client, requests_for(10))
        assert batch.request_counts.succeeded == 5
        assert batch.request_counts.expired == 5
        assert Counter(r.result.type for r in results.values()) == {"succeeded": 5, "expired": 5}
        for value in emu.results(batch.id):
            check_result_json(value)
        assert run_batch(client, requests_for(2))[0].request_counts.succeeded == 2  # count used up


# -- limits and authentication ------------------------------------------------------------------


def test_batch_envelope_limits() -> None:
    limits = AnthropicEmulatorLimits(max_batch_requests=3, max_batch_bytes=4000)
    with AnthropicBatchEmulator(limits=limits) as emu:
        client = client_for(emu)
        refused = {
            "too many": requests_for(4),
            "empty": [],
            "long id": [{"custom_id": "x" * 65, "params": params("x")}],
            "bad id": [{"custom_id": "a b", "params": params("x")}],
            "duplicate": [
                {"custom_id": "same", "params": params("x")},
                {"custom_id": "same", "params": params("y")},
            ],
            "no params": [{"custom_id": "a"}],
        }
        for name, requests in refused.items():
            with pytest.raises(anthropic.BadRequestError) as caught:
                client.messages.batches.create(requests=requests)
            assert caught.value.body["error"]["type"] == "invalid_request_error", name
        with pytest.raises(anthropic.BadRequestError, match="at most 64 characters"):
            client.messages.batches.create(
                requests=[{"custom_id": "x" * 65, "params": params("x")}]
            )
        with pytest.raises(anthropic.ContentTooLargeError) as too_large:
            client.messages.batches.create(
                requests=[{"custom_id": "big", "params": params("x" * 5000)}]
            )
        assert too_large.value.body["error"]["type"] == "request_too_large"
        assert emu.stats.batches_created == 0
        assert (
            client.messages.batches.create(requests=requests_for(3)).request_counts.processing == 3
        )


def test_authentication_and_version_headers() -> None:
    with AnthropicBatchEmulator(api_key="sk-ant-right") as emu:
        path = "/v1/messages/batches"
        status, _, body = raw(emu, "GET", path, headers={"anthropic-version": "2023-06-01"})
        assert (status, error_of(body)) == (
            401,
            {"type": "authentication_error", "message": "x-api-key header is required"},
        )
        status, _, body = raw(emu, "GET", path, headers={"x-api-key": "sk-ant-right"})
        assert (status, error_of(body)["message"]) == (400, "anthropic-version: header is required")
        bad_version = {"x-api-key": "sk-ant-right", "anthropic-version": "latest"}
        status, _, body = raw(emu, "GET", path, headers=bad_version)
        assert status == 400
        assert error_of(body)["type"] == "invalid_request_error"
        good = {"x-api-key": "sk-ant-right", "anthropic-version": "2023-06-01"}
        assert raw(emu, "GET", path, headers=good)[0] == 200
        bearer = {"Authorization": "Bearer sk-ant-right", "anthropic-version": "2023-06-01"}
        assert raw(emu, "GET", path, headers=bearer)[0] == 200

        wrong = Anthropic(base_url=emu.base_url, api_key="sk-ant-wrong", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as caught:
            wrong.messages.batches.list()
        assert caught.value.body["error"] == {
            "type": "authentication_error",
            "message": "invalid x-api-key",
        }
        assert client_for(emu).messages.batches.list().data == []


# -- packaging ----------------------------------------------------------------------------------


def test_importing_the_emulator_needs_no_sdk() -> None:
    code = (
        "import sys, batchor.testing.anthropic, batchor.testing; "
        "assert 'anthropic' not in sys.modules, 'anthropic imported'; "
        "assert 'pytest' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_module_prints_the_sdk_environment() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "batchor.testing.anthropic", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        settings = dict(part.split("=", 1) for part in line.split())
        assert set(settings) == {"ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"}
        client = Anthropic(
            base_url=settings["ANTHROPIC_BASE_URL"], api_key=settings["ANTHROPIC_API_KEY"]
        )
        assert client.messages.batches.list().data == []
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
