"""The emulator's synchronous endpoints, driven by the real ``openai`` client over HTTP."""

from __future__ import annotations

import io
import json
import math
import re
import time
from collections.abc import Iterator
from typing import Any, Final, cast

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from pydantic import BaseModel, ValidationError

from batchor.errors import ConfigurationError
from batchor.testing import EmulatorFaults, EmulatorLimits, OpenAIBatchEmulator
from batchor.testing.emulator.ratelimits import duration

MODEL: Final = "gpt-4.1-mini"
EMBEDDING_MODEL: Final = "text-embedding-3-small"
EMBEDDINGS: Final = "/v1/embeddings"
CHAT: Final = "/v1/chat/completions"
RATE_HEADERS: Final = (
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
)
DURATION: Final = re.compile(r"^(?:(\d+)ms|(?:(\d+)h)?(?:(\d+)m)?(\d+(?:\.\d{1,3})?)s)$")


class Verdict(BaseModel):
    label: str
    score: int
    tags: list[str]


def client_for(emu: OpenAIBatchEmulator, base_url: str | None = None, **kw: Any) -> OpenAI:
    options: dict[str, Any] = {"max_retries": 0, "timeout": 30.0, **kw}
    return OpenAI(base_url=base_url or emu.base_url, api_key=emu.api_key, **options)


@pytest.fixture
def emu(openai_emulator: OpenAIBatchEmulator) -> OpenAIBatchEmulator:
    return openai_emulator


@pytest.fixture
def client(emu: OpenAIBatchEmulator) -> Iterator[OpenAI]:
    with client_for(emu) as c:
        yield c


def chat(client: OpenAI, prompt: str, **extra: Any) -> ChatCompletion:
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], **extra
    )


def batch_bodies(client: OpenAI, endpoint: str, bodies: list[dict[str, Any]]) -> list[Any]:
    """Each body's answer as a batch line on ``endpoint``: its ``response`` (status, body)."""
    lines = [
        json.dumps({"custom_id": f"c{i}", "method": "POST", "url": endpoint, "body": body})
        for i, body in enumerate(bodies)
    ]
    data = ("\n".join(lines) + "\n").encode()
    file_id = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint=cast(Any, endpoint), completion_window="24h"
    )
    deadline = time.monotonic() + 20
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed"
    rows: dict[str, Any] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id is not None:
            for text in client.files.content(file_id).text.splitlines():
                row = json.loads(text)
                rows[row["custom_id"]] = row["response"]
    return [rows[f"c{i}"] for i in range(len(bodies))]


def sync_bodies(client: OpenAI, endpoint: str, bodies: list[dict[str, Any]]) -> list[Any]:
    """Each body's synchronous answer, in the shape of a batch line's ``response``."""
    answers = []
    for body in bodies:
        try:
            raw = client.post(endpoint.removeprefix("/v1"), body=body, cast_to=httpx.Response)
        except openai.APIStatusError as exc:
            raw = exc.response
        answers.append({"status_code": raw.status_code, "body": raw.json()})
    return answers


def without_ids(value: Any) -> Any:
    """``value`` without the fields that differ between two answers: ids and timestamps."""
    if isinstance(value, dict):
        return {
            k: without_ids(v)
            for k, v in value.items()
            if k not in ("id", "created", "created_at", "request_id")
        }
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


def rate_headers(headers: Any) -> dict[str, str]:
    return {name: headers[name] for name in RATE_HEADERS}


# -- typed answers ------------------------------------------------------------------------------


def test_each_endpoint_gives_the_sdk_its_typed_answer(
    emu: OpenAIBatchEmulator, client: OpenAI
) -> None:
    response = client.responses.create(model=MODEL, input="hello there", instructions="Be brief.")
    assert isinstance(response, Response)
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "Echo: hello there"
    assert response.usage is not None
    assert response.usage.total_tokens > 0

    completion = chat(client, "good morning")
    assert isinstance(completion, ChatCompletion)
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == "Echo: good morning"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == MODEL

    embedded = client.embeddings.create(
        model=EMBEDDING_MODEL, input=["one", "two"], dimensions=64
    )  # the SDK asks for base64 and decodes it
    assert isinstance(embedded, CreateEmbeddingResponse)
    assert [e.index for e in embedded.data] == [0, 1]
    for entry in embedded.data:
        assert len(entry.embedding) == 64
        assert math.isclose(math.hypot(*entry.embedding), 1.0, rel_tol=1e-5)
    again = client.embeddings.create(model=EMBEDDING_MODEL, input="one", dimensions=64)
    assert again.data[0].embedding == embedded.data[0].embedding

    stats = emu.stats
    assert stats.sync_answered == {
        "/v1/responses": 1,
        "/v1/chat/completions": 1,
        "/v1/embeddings": 2,
    }
    assert completion.usage is not None
    billed_in = (
        response.usage.input_tokens
        + completion.usage.prompt_tokens
        + embedded.usage.prompt_tokens
        + again.usage.prompt_tokens
    )
    billed_out = response.usage.output_tokens + completion.usage.completion_tokens
    assert stats.sync_tokens == (billed_in, billed_out)
    assert stats.calls[("POST", "/v1/responses")] == 1
    assert stats.batches_created == 0


def test_structured_output_parses_into_the_model(client: OpenAI) -> None:
    parsed = client.responses.parse(
        model=MODEL, input="the food was great", text_format=Verdict
    ).output_parsed
    assert isinstance(parsed, Verdict)
    completion = client.chat.completions.parse(
        model=MODEL,
        messages=[{"role": "user", "content": "the food was great"}],
        response_format=Verdict,
    )
    from_chat = completion.choices[0].message.parsed
    assert from_chat == parsed  # built from the prompt alone, as in a batch
    as_json = chat(client, "any json", response_format={"type": "json_object"})
    assert json.loads(as_json.choices[0].message.content or "") == {"echo": "any json"}


def test_answers_are_the_batch_lines_answers_for_the_same_body(client: OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string"}, "score": {"type": "integer"}},
        "required": ["label", "score"],
        "additionalProperties": False,
    }
    cases = {
        "/v1/chat/completions": [
            {"model": MODEL, "messages": [{"role": "user", "content": "plain words"}]},
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": "shaped words"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "Out", "schema": schema, "strict": True},
                },
            },
            {  # a schema strict mode refuses: a 400 on its own, in a batch or not
                "model": MODEL,
                "messages": [{"role": "user", "content": "refused"}],
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "Out", "schema": {"type": "object"}, "strict": True},
                },
            },
        ],
        "/v1/responses": [
            {"model": MODEL, "input": "plain words", "instructions": "Be brief."},
            {
                "model": MODEL,
                "input": [{"role": "user", "content": "shaped words"}],
                "text": {
                    "format": {"type": "json_schema", "name": "O", "schema": schema, "strict": True}
                },
            },
        ],
        EMBEDDINGS: [
            {"model": EMBEDDING_MODEL, "input": "some text", "dimensions": 8},
            {"model": EMBEDDING_MODEL, "input": [[1, 2, 3], [4]], "encoding_format": "base64"},
            {"model": EMBEDDING_MODEL, "input": "x", "dimensions": 0},  # refused: a 400
        ],
    }
    statuses: set[int] = set()
    for endpoint, bodies in cases.items():
        in_batch = batch_bodies(client, endpoint, bodies)
        synchronous = sync_bodies(client, endpoint, bodies)
        assert without_ids(synchronous) == without_ids(in_batch), endpoint
        statuses.update(a["status_code"] for a in synchronous)
    assert statuses == {200, 400}


# -- rate limits --------------------------------------------------------------------------------


def seconds(spelled: str) -> float:
    """A ``x-ratelimit-reset-*`` duration in seconds."""
    found = DURATION.match(spelled)
    assert found is not None, spelled
    millis, hours, minutes, secs = found.groups()
    if millis is not None:
        return int(millis) / 1000
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs)


def test_every_answer_carries_the_rate_limit_headers(emu: OpenAIBatchEmulator) -> None:
    # A ten-minute window: the limits barely refill while the test runs.
    emu.limits = EmulatorLimits(requests_per_minute=5, tokens_per_minute=1000, rate_window=600)
    with client_for(emu) as client:
        first = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "x" * 40}]
        )
        second = client.responses.with_raw_response.create(
            model=MODEL, input="short", max_output_tokens=100
        )
        other = client.embeddings.with_raw_response.create(model=EMBEDDING_MODEL, input="a")
    assert isinstance(first.parse(), ChatCompletion)
    one, two = rate_headers(first.headers), rate_headers(second.headers)
    assert one["x-ratelimit-limit-requests"] == "5"
    assert one["x-ratelimit-limit-tokens"] == "1000"
    assert one["x-ratelimit-remaining-requests"] == "4"
    assert one["x-ratelimit-remaining-tokens"] == str(1000 - 10)  # 40 characters
    assert two["x-ratelimit-remaining-requests"] == "3"
    # max_output_tokens counts when larger than the prompt's estimate
    assert 1000 - 10 - 100 <= int(two["x-ratelimit-remaining-tokens"]) <= 1000 - 10 - 100 + 5
    # the time until the limits are whole again: 2 of 5 requests, 110 of 1000 tokens
    assert 230 <= seconds(two["x-ratelimit-reset-requests"]) <= 240
    assert 60 <= seconds(two["x-ratelimit-reset-tokens"]) <= 66
    # limits are per model: another model's requests are counted apart
    assert rate_headers(other.headers)["x-ratelimit-remaining-requests"] == "4"


def test_over_the_request_limit_is_a_429_the_sdk_raises_and_retries(
    emu: OpenAIBatchEmulator,
) -> None:
    emu.limits = EmulatorLimits(requests_per_minute=2, rate_window=1.0)  # one per 0.5 s
    with client_for(emu) as client:
        chat(client, "one")
        chat(client, "two")
        with pytest.raises(openai.RateLimitError) as caught:
            chat(client, "three")
        error = caught.value
        assert error.status_code == 429
        assert error.code == "rate_limit_exceeded"
        assert error.type == "requests"
        assert error.body["message"].startswith(f"Rate limit reached for {MODEL} in organization ")
        assert "on requests per min (RPM): Limit 2, Used 2, Requested 1." in error.message
        headers = error.response.headers
        assert headers["retry-after"] == "1"  # whole seconds, rounded up
        wait_ms = int(headers["retry-after-ms"])
        assert 0 < wait_ms <= 500
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert error.body == {
            "message": error.body["message"],
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
        time.sleep(wait_ms / 1000)
        assert chat(client, "after the wait").choices[0].message.content == "Echo: after the wait"
    assert emu.stats.sync_rate_limited == 1
    assert emu.stats.sync_answered == {"/v1/chat/completions": 3}

    with client_for(emu, max_retries=3) as patient:  # the SDK waits retry-after-ms itself
        started = time.monotonic()
        for i in range(3):
            chat(patient, f"burst {i}")
        assert time.monotonic() - started < 5
    assert emu.stats.sync_answered == {"/v1/chat/completions": 6}
    assert emu.stats.sync_rate_limited >= 2


def test_over_the_token_limit_is_a_429_and_too_large_is_not_retried(
    emu: OpenAIBatchEmulator,
) -> None:
    emu.limits = EmulatorLimits(tokens_per_minute=100, rate_window=600)  # barely refills
    with client_for(emu, max_retries=2) as client:
        client.responses.create(model=MODEL, input="a", max_output_tokens=60)
        with client_for(emu) as once, pytest.raises(openai.RateLimitError) as caught:
            once.responses.create(model=MODEL, input="b", max_output_tokens=60)
        assert caught.value.type == "tokens"
        assert "on tokens per min (TPM): Limit 100, Used 60, Requested 60." in caught.value.message
        assert float(caught.value.response.headers["retry-after-ms"]) > 1000  # 20 of 100 a minute

        emu.stats.reset()
        with pytest.raises(openai.RateLimitError) as too_large:
            client.responses.create(model=MODEL, input="c", max_output_tokens=500)
        assert too_large.value.body["message"].startswith(f"Request too large for {MODEL}")
        assert too_large.value.response.headers["x-should-retry"] == "false"
        assert emu.stats.calls[("POST", "/v1/responses")] == 1  # the SDK did not retry
        assert emu.stats.sync_answered == {}


def test_limits_are_validated() -> None:
    with pytest.raises(ConfigurationError, match="requests_per_minute"):
        EmulatorLimits(requests_per_minute=0)
    with pytest.raises(ConfigurationError, match="rate_window"):
        EmulatorLimits(rate_window=-1.0)


def test_reset_durations_are_spelled_as_openai_spells_them() -> None:
    assert [duration(s) for s in (0, 0.0123, 1, 1.5, 7.661, 360, 3723.25)] == [
        "0s",
        "13ms",
        "1s",
        "1.5s",
        "7.661s",
        "6m0s",
        "1h2m3.25s",
    ]
    assert seconds(duration(3723.25)) == 3723.25


# -- faults, auth and errors --------------------------------------------------------------------


def test_line_fault_knobs_apply(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    def fault(request_id: str, body: dict[str, Any]) -> str | None:
        if request_id:
            return request_id  # the X-Client-Request-Id header stands for the custom_id
        prompt = body.get("input")
        return "schema_mismatch" if prompt == "mismatch me" else None

    emu.faults.line_fault = fault

    def with_id(value: str) -> dict[str, Any]:
        return {"extra_headers": {"X-Client-Request-Id": value}}

    with pytest.raises(openai.InternalServerError) as server:
        client.responses.create(model=MODEL, input="x", **with_id("server_error"))
    assert server.value.type == "server_error"
    with pytest.raises(openai.RateLimitError) as limited:
        client.responses.create(model=MODEL, input="x", **with_id("rate_limit"))
    assert limited.value.code == "rate_limit_exceeded"
    assert limited.value.response.headers["retry-after-ms"] == "20"
    assert limited.value.response.headers["x-ratelimit-limit-requests"] == "10000"
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input="x", **with_id("bad_request"))
    broken = chat(client, "x", response_format={"type": "json_object"}, **with_id("invalid_json"))
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.choices[0].message.content or "")
    with pytest.raises(ValidationError):  # valid JSON that does not fit the schema
        client.responses.parse(model=MODEL, input="mismatch me", text_format=Verdict)

    emu.faults = EmulatorFaults(route_server_error_counts={"POST /v1/chat/completions": 1})
    with pytest.raises(openai.InternalServerError):
        chat(client, "refused before anything")
    assert chat(client, "then fine").choices[0].message.content == "Echo: then fine"


def test_fault_rates_are_seeded_and_do_not_shift_batch_lines() -> None:
    bodies = [
        {"model": MODEL, "messages": [{"role": "user", "content": f"p{i}"}]} for i in range(16)
    ]

    def statuses(sync_first: bool) -> tuple[list[int], list[int]]:
        faults = EmulatorFaults(seed=7, line_server_error_rate=0.5)
        with OpenAIBatchEmulator(faults=faults) as emu, client_for(emu) as client:
            synchronous = sync_bodies(client, CHAT, bodies) if sync_first else []
            in_batch = batch_bodies(client, CHAT, bodies)
        return [a["status_code"] for a in synchronous], [a["status_code"] for a in in_batch]

    sync_codes, batch_after_sync = statuses(sync_first=True)
    assert set(sync_codes) == {200, 500}
    assert statuses(sync_first=True) == (sync_codes, batch_after_sync)  # reproducible
    assert statuses(sync_first=False)[1] == batch_after_sync  # batch lines unaffected


def test_auth_and_refused_bodies_use_openais_error_shape() -> None:
    with OpenAIBatchEmulator(api_key="sk-right") as emu:
        wrong = OpenAI(base_url=emu.base_url, api_key="sk-wrong", max_retries=0)
        with wrong, pytest.raises(openai.AuthenticationError) as auth:
            chat(wrong, "x")
        assert auth.value.code == "invalid_api_key"
        assert "sk-right" not in str(auth.value)
        with client_for(emu) as client:
            with pytest.raises(openai.BadRequestError) as missing:
                client.post("/responses", body={"input": "no model"}, cast_to=httpx.Response)
            assert missing.value.body == {
                "message": "Missing required parameter: 'model'.",
                "type": "invalid_request_error",
                "param": "model",
                "code": "missing_required_parameter",
            }
            with pytest.raises(openai.BadRequestError) as streamed:
                client.responses.create(model=MODEL, input="x", stream=True)
            assert streamed.value.param == "stream"
            with pytest.raises(openai.NotFoundError):  # classic Azure names a deployment
                client.post(
                    emu.azure_endpoint + "/openai/chat/completions?api-version=2024-10-21",
                    body={"model": MODEL, "messages": []},
                    cast_to=httpx.Response,
                )
        assert emu.stats.sync_answered == {}


def test_azure_v1_serves_the_same_endpoints(emu: OpenAIBatchEmulator) -> None:
    with client_for(emu, base_url=emu.azure_v1_base_url) as client:
        completion = chat(client, "over azure")
    assert completion.choices[0].message.content == "Echo: over azure"
    assert emu.stats.calls[("POST", "/openai/v1/chat/completions")] == 1
    assert emu.stats.sync_answered == {"/v1/chat/completions": 1}
