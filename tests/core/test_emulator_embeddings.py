"""The emulator's ``/v1/embeddings`` batches, driven by the real ``openai`` client over HTTP."""

from __future__ import annotations

import base64
import io
import json
import math
import struct
import time
from collections.abc import Iterator
from typing import Any, Final, cast

import openai
import pytest
from openai import OpenAI
from openai.types import Batch, CreateEmbeddingResponse
from pydantic import ValidationError

from batchor.testing import EmulatorLimits, OpenAIBatchEmulator

EMBEDDINGS: Final = "/v1/embeddings"
SMALL: Final = "text-embedding-3-small"
TERMINAL = ("completed", "failed", "expired", "cancelled")


# -- helpers ------------------------------------------------------------------------------------


def client_for(emu: OpenAIBatchEmulator) -> OpenAI:
    return OpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=0, timeout=60.0)


def body(value: Any = "some text", model: str = SMALL, **extra: Any) -> dict[str, Any]:
    return {"model": model, "input": value, **extra}


def line(custom_id: str, request_body: dict[str, Any], url: str = EMBEDDINGS) -> str:
    request = {"custom_id": custom_id, "method": "POST", "url": url, "body": request_body}
    return json.dumps(request)


def run(client: OpenAI, lines: list[str], endpoint: str = EMBEDDINGS) -> Batch:
    data = ("\n".join(lines) + "\n").encode()
    file_id = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint=cast(Any, endpoint), completion_window="24h"
    )
    deadline = time.monotonic() + 60
    while batch.status not in TERMINAL:
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.02)
        batch = client.batches.retrieve(batch.id)
    return batch


def rows(client: OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    found = [json.loads(x) for x in client.files.content(file_id).text.splitlines()]
    return {row["custom_id"]: row for row in found}


def replies(client: OpenAI, batch: Batch) -> dict[str, CreateEmbeddingResponse]:
    return {
        custom_id: CreateEmbeddingResponse.model_validate(row["response"]["body"])
        for custom_id, row in rows(client, batch.output_file_id).items()
    }


def norm(vector: list[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


def close(a: list[float], b: list[float], tolerance: float = 1e-6) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


def failure(batch: Batch) -> tuple[str | None, int | None, str | None]:
    assert batch.status == "failed"
    assert batch.errors is not None
    assert batch.errors.data
    error = batch.errors.data[0]
    return error.code, error.line, error.message


@pytest.fixture
def emu(openai_emulator: OpenAIBatchEmulator) -> OpenAIBatchEmulator:
    return openai_emulator


@pytest.fixture
def client(emu: OpenAIBatchEmulator) -> Iterator[OpenAI]:
    with client_for(emu) as c:
        yield c


# -- vectors ------------------------------------------------------------------------------------


def test_vectors_have_the_requested_size_unit_length_and_are_deterministic(
    emu: OpenAIBatchEmulator, client: OpenAI
) -> None:
    params = {"dimensions": 256, "encoding_format": "float"}
    lines = [
        line("a", body("some text", **params)),
        line("b", body("other text", **params)),
        line("a-again", body("some text", **params)),
    ]
    done = run(client, lines)
    assert done.status == "completed"
    assert done.model == SMALL
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (3, 3)
    assert done.error_file_id is None
    answers = replies(client, done)
    for reply in answers.values():
        assert reply.object == "list"
        assert reply.model == SMALL
        assert [entry.index for entry in reply.data] == [0]
        assert reply.data[0].object == "embedding"
        assert len(reply.data[0].embedding) == 256
        assert abs(norm(reply.data[0].embedding) - 1.0) < 1e-6
        assert reply.usage.prompt_tokens == reply.usage.total_tokens > 0
    same = answers["a"].data[0].embedding
    assert answers["a-again"].data[0].embedding == same
    assert not close(answers["b"].data[0].embedding, same, 1e-3)
    assert done.usage is not None
    assert done.usage.input_tokens == sum(r.usage.prompt_tokens for r in answers.values())
    assert done.usage.output_tokens == 0
    assert set(emu.stats.lines_answered) == {"a", "b", "a-again"}

    again = replies(client, run(client, [line("later", body("some text", **params))]))
    assert again["later"].data[0].embedding == same  # the same in another batch


def test_array_inputs_give_one_entry_per_input(client: OpenAI) -> None:
    texts = ["first", "second", "third"]
    lines = [
        line("array", body(texts, dimensions=64)),
        *(line(f"one-{i}", body(text, dimensions=64)) for i, text in enumerate(texts)),
        line("tokens", body([1, 2, 3], dimensions=64)),
        line("token-arrays", body([[1, 2, 3], [4, 5]], dimensions=64)),
    ]
    answers = replies(client, run(client, lines))
    array = answers["array"]
    assert [entry.index for entry in array.data] == [0, 1, 2]
    for i, entry in enumerate(array.data):
        assert entry.embedding == answers[f"one-{i}"].data[0].embedding
    assert array.usage.prompt_tokens == sum(
        answers[f"one-{i}"].usage.prompt_tokens for i in range(3)
    )
    assert len(answers["tokens"].data) == 1
    assert answers["tokens"].usage.prompt_tokens == 3
    pair = answers["token-arrays"]
    assert len(pair.data) == 2
    assert answers["tokens"].data[0].embedding == pair.data[0].embedding
    assert pair.usage.prompt_tokens == 5


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("text-embedding-3-small", 1536),
        ("text-embedding-3-large", 3072),
        ("text-embedding-ada-002", 1536),
    ],
)
def test_default_dimensions_are_the_models_native_size(
    client: OpenAI, model: str, size: int
) -> None:
    answers = replies(client, run(client, [line("x", body("hello", model))]))
    vector = answers["x"].data[0].embedding
    assert len(vector) == size
    assert abs(norm(vector) - 1.0) < 1e-6


def test_shortened_vectors_are_the_renormalised_prefix_and_base64_matches(
    client: OpenAI,
) -> None:
    lines = [
        line("full", body("hello")),
        line("short", body("hello", dimensions=100)),
        line("b64", body("hello", dimensions=100, encoding_format="base64")),
    ]
    found = {
        k: v["response"]["body"] for k, v in rows(client, run(client, lines).output_file_id).items()
    }
    full = CreateEmbeddingResponse.model_validate(found["full"]).data[0].embedding
    short = CreateEmbeddingResponse.model_validate(found["short"]).data[0].embedding
    prefix = full[:100]
    assert close(short, [x / norm(prefix) for x in prefix])
    encoded = found["b64"]["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = list(struct.unpack("<100f", base64.b64decode(encoded)))
    assert close(decoded, short, 1e-7)


# -- the batch limit ----------------------------------------------------------------------------


def test_a_batch_holds_at_most_the_limit_of_embedding_inputs() -> None:
    limits = EmulatorLimits(max_embedding_inputs=10)
    with OpenAIBatchEmulator(limits=limits) as emu, client_for(emu) as client:
        texts = [f"t{i}" for i in range(3)]
        arrays = [line(f"a{i}", body(texts)) for i in range(4)]  # 12 inputs
        code, number, message = failure(run(client, arrays))
        assert (code, number) == ("too_many_tasks", 4)
        assert message is not None
        assert "maximum of 10 embedding inputs" in message
        assert emu.stats.lines_answered == {}

        strings = [line(f"s{i}", body(f"text {i}", dimensions=8)) for i in range(11)]
        assert failure(run(client, strings))[:2] == ("too_many_tasks", 11)
        done = run(client, strings[:10])
        assert done.status == "completed"
        assert done.request_counts is not None
        assert done.request_counts.completed == 10
        mixed = [line("pair", body(["x", "y"], dimensions=8)), *strings[:8]]
        assert run(client, mixed).status == "completed"  # 2 + 8 inputs


def test_the_real_limit_is_fifty_thousand_inputs(client: OpenAI) -> None:
    full = [f"w{i}" for i in range(2048)]
    lines = [line(f"r{i}", body(full, dimensions=4)) for i in range(24)]  # 49,152 inputs
    lines.append(line("rest", body(full[:848], dimensions=4)))  # 50,000 in all
    done = run(client, lines)
    assert done.status == "completed", done.errors
    assert done.request_counts is not None
    assert done.request_counts.completed == 25
    over = run(client, [*lines, line("one-more", body("x", dimensions=4))])
    assert failure(over)[:2] == ("too_many_tasks", 26)


# -- invalid bodies -----------------------------------------------------------------------------


INVALID_INPUT = (
    "'$.input' is invalid. Please check the API reference: "
    "https://platform.openai.com/docs/api-reference."
)


def test_invalid_bodies_are_answered_with_400_error_lines(client: OpenAI) -> None:
    no_input = {"model": SMALL}
    cases: dict[str, tuple[dict[str, Any], str, str | None]] = {
        "missing": (no_input, "Missing required parameter: 'input'.", "input"),
        "empty": (body(""), INVALID_INPUT, None),
        "empty-array": (body([]), INVALID_INPUT, None),
        "empty-entry": (body(["ok", ""]), INVALID_INPUT, None),
        "too-many": (body(["x"] * 2049), INVALID_INPUT, None),
        "schema": (
            body("x", response_format={"type": "json_object"}),
            "Unrecognized request argument supplied: response_format",
            None,
        ),
        "text": (
            body("x", text={"format": {"type": "json_schema", "name": "o", "schema": {}}}),
            "Unrecognized request argument supplied: text",
            None,
        ),
        "encoding": (
            body("x", encoding_format="hex"),
            "Invalid value: 'hex'. Supported values are: 'float' and 'base64'.",
            "encoding_format",
        ),
        "too-large": (body("x", dimensions=1537), "", "dimensions"),
        "zero": (body("x", dimensions=0), "", "dimensions"),
    }
    lines = [line(name, request) for name, (request, _, _) in cases.items()]
    lines.append(line("fine", body("x", dimensions=8)))
    done = run(client, lines)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (1, len(cases))
    assert set(rows(client, done.output_file_id)) == {"fine"}
    errors = rows(client, done.error_file_id)
    assert set(errors) == set(cases)
    for name, (_, message, param) in cases.items():
        response = errors[name]["response"]
        assert response["status_code"] == 400, name
        error = response["body"]["error"]
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param, name
        assert error["message"] == message or (not message and error["message"]), name
        assert errors[name]["error"] is None
        assert errors[name]["id"].startswith("batch_req_")


def test_dimensions_are_refused_on_ada_002(client: OpenAI) -> None:
    ada = "text-embedding-ada-002"
    done = run(client, [line("x", body("hello", ada, dimensions=256))])
    error = rows(client, done.error_file_id)["x"]["response"]["body"]["error"]
    assert error == {
        "message": "This model does not support specifying dimensions.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knob", "status"), [("line_server_error_rate", 500), ("line_rate_limit_rate", 429)]
)
def test_line_error_rates_apply(
    emu: OpenAIBatchEmulator, client: OpenAI, knob: str, status: int
) -> None:
    setattr(emu.faults, knob, 1.0)
    done = run(client, [line(f"r{i}", body(f"t{i}", dimensions=8)) for i in range(5)])
    assert done.output_file_id is None
    errors = rows(client, done.error_file_id)
    assert {row["response"]["status_code"] for row in errors.values()} == {status}
    assert all(row["response"]["body"]["error"]["message"] for row in errors.values())


def test_invalid_json_rate_answers_unusable_vectors(
    emu: OpenAIBatchEmulator, client: OpenAI
) -> None:
    emu.faults.line_invalid_json_rate = 1.0
    done = run(client, [line(f"r{i}", body(f"t{i}", dimensions=8)) for i in range(3)])
    assert done.error_file_id is None
    for row in rows(client, done.output_file_id).values():
        assert row["response"]["status_code"] == 200
        assert isinstance(row["response"]["body"]["data"][0]["embedding"], str)
        with pytest.raises(ValidationError):
            CreateEmbeddingResponse.model_validate(row["response"]["body"])


def test_line_fault_callback_and_rewrite_apply(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    kinds = ["server_error", "rate_limit", "bad_request", "invalid_json", "schema_mismatch"]
    seen: dict[str, Any] = {}

    def fault(custom_id: str, request_body: dict[str, Any]) -> str | None:
        seen[custom_id] = request_body["input"]
        return custom_id if custom_id in kinds else None

    def rewrite(row: dict[str, Any]) -> dict[str, Any] | None:
        return None if row["custom_id"] == "lost" else row

    emu.faults.line_fault = fault
    emu.faults.line_rewrite = rewrite
    names = [*kinds, "fine", "lost"]
    done = run(client, [line(name, body(f"item {name}", dimensions=8)) for name in names])
    assert seen == {name: f"item {name}" for name in names}
    errors = rows(client, done.error_file_id)
    assert {k: v["response"]["status_code"] for k, v in errors.items()} == {
        "server_error": 500,
        "rate_limit": 429,
        "bad_request": 400,
    }
    outputs = rows(client, done.output_file_id)
    assert set(outputs) == {"invalid_json", "schema_mismatch", "fine"}
    CreateEmbeddingResponse.model_validate(outputs["fine"]["response"]["body"])
    for name in ("invalid_json", "schema_mismatch"):
        with pytest.raises(ValidationError):
            CreateEmbeddingResponse.model_validate(outputs[name]["response"]["body"])
    assert "embedding" not in outputs["schema_mismatch"]["response"]["body"]["data"][0]
    assert emu.stats.lines_answered["lost"] == 1


# -- Azure spellings ----------------------------------------------------------------------------


def test_azure_endpoint_spellings_are_aliases(client: OpenAI) -> None:
    done = run(client, [line("x", body("hello", dimensions=8), url="/embeddings")], "/embeddings")
    assert done.status == "completed"
    assert done.endpoint == "/embeddings"
    vector = replies(client, done)["x"].data[0].embedding
    openai_spelled = run(client, [line("x", body("hello", dimensions=8))])
    assert replies(client, openai_spelled)["x"].data[0].embedding == vector

    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    chat_done = run(client, [line("c", chat, url="/chat/completions")], "/chat/completions")
    assert chat_done.status == "completed"
    assert chat_done.endpoint == "/chat/completions"
    reply = rows(client, chat_done.output_file_id)["c"]["response"]["body"]
    assert reply["choices"][0]["message"]["content"] == "Echo: hi"


@pytest.mark.parametrize(
    ("endpoint", "url"), [("/embeddings", EMBEDDINGS), (EMBEDDINGS, "/embeddings")]
)
def test_line_urls_must_spell_the_batch_endpoint_the_same_way(
    client: OpenAI, endpoint: str, url: str
) -> None:
    done = run(client, [line("x", body("hello"), url=url)], endpoint)
    code, number, message = failure(done)
    assert (code, number) == ("url_mismatch", 1)
    assert message is not None
    assert endpoint in message


def test_unknown_endpoint_spellings_are_refused(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    data = (line("x", body("hello")) + "\n").encode()
    file_id = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch").id
    for endpoint in ("/responses", "/completions", "embeddings", "/v1/images/generations"):
        with pytest.raises(openai.BadRequestError):
            client.batches.create(
                input_file_id=file_id, endpoint=cast(Any, endpoint), completion_window="24h"
            )
    assert emu.stats.batches_created == 0
