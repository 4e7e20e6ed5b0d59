"""The OpenAI Batch emulator, driven by the real ``openai`` client over HTTP (no mocks)."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from enum import StrEnum
from typing import Any, Final, cast

import openai
import pytest
from openai import OpenAI
from openai.types import Batch
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from batchor.testing import EmulatorFaults, EmulatorLimits, OpenAIBatchEmulator
from batchor.testing.emulator.lines import RequestLine, RequestReader
from batchor.testing.emulator.multipart import MultipartReader
from batchor.testing.emulator.replies import extract_prompt
from batchor.testing.emulator.schema_text import TextCompiler
from batchor.testing.emulator.schemas import Entropy, SchemaCompiler

CHAT: Final = "/v1/chat/completions"
RESPONSES: Final = "/v1/responses"
MODEL = "gpt-4.1-mini"
TERMINAL = ("completed", "failed", "expired", "cancelled")


# -- helpers ------------------------------------------------------------------------------------


def client_for(emu: OpenAIBatchEmulator, **kwargs: Any) -> OpenAI:
    options: dict[str, Any] = {"max_retries": 0, "timeout": 30.0, **kwargs}
    return OpenAI(base_url=emu.base_url, api_key=emu.api_key, **options)


def chat_body(prompt: str, schema: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": prompt},
        ],
        **extra,
    }
    if schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "Out", "schema": schema, "strict": True},
        }
    return body


def responses_body(prompt: Any, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "input": prompt, "instructions": "Be brief."}
    if schema is not None:
        body["text"] = {
            "format": {"type": "json_schema", "name": "Out", "schema": schema, "strict": True}
        }
    return body


def line(custom_id: str, body: dict[str, Any], url: str = CHAT, method: str = "POST") -> str:
    return json.dumps({"custom_id": custom_id, "method": method, "url": url, "body": body})


def chat_lines(n: int, prefix: str = "req", **kwargs: Any) -> list[str]:
    return [line(f"{prefix}-{i}", chat_body(f"prompt {i}", **kwargs)) for i in range(n)]


def upload(client: OpenAI, lines: list[str], purpose: str = "batch") -> str:
    data = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose=cast(Any, purpose)).id


def wait(client: OpenAI, batch_id: str, timeout: float = 20.0) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in TERMINAL:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.02)


def create(client: OpenAI, lines: list[str], endpoint: str = CHAT, **kwargs: Any) -> Batch:
    file_id = upload(client, lines)
    return client.batches.create(
        input_file_id=file_id,
        endpoint=cast(Any, endpoint),
        completion_window="24h",
        **kwargs,
    )


def run(client: OpenAI, lines: list[str], endpoint: str = CHAT, **kwargs: Any) -> Batch:
    return wait(client, create(client, lines, endpoint, **kwargs).id)


def read_jsonl(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def by_id(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["custom_id"]: row for row in rows}


def strict_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema made strict: no extra properties, every property required."""
    schema = model.model_json_schema()

    def tighten(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node["additionalProperties"] = False
                node["required"] = list(node["properties"])
            for value in node.values():
                tighten(value)
        elif isinstance(node, list):
            for value in node:
                tighten(value)

    tighten(schema)
    if "$ref" in schema:  # a recursive model: strict mode needs an object at the root
        schema = {**schema["$defs"][schema.pop("$ref").split("/")[-1]], **schema}
    return schema


@pytest.fixture
def emu(openai_emulator: OpenAIBatchEmulator) -> OpenAIBatchEmulator:
    return openai_emulator


@pytest.fixture
def client(emu: OpenAIBatchEmulator) -> Iterator[OpenAI]:
    with client_for(emu) as c:
        yield c


# -- round trips --------------------------------------------------------------------------------


def test_chat_text_round_trip(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    batch = create(client, chat_lines(3), metadata={"purpose": "test"})
    assert batch.status == "validating"
    assert batch.expires_at == batch.created_at + 24 * 3600
    done = wait(client, batch.id)
    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (3, 3)
    assert done.request_counts.failed == 0
    assert done.error_file_id is None
    assert done.errors is None
    assert done.model == MODEL
    assert done.metadata == {"purpose": "test"}
    assert done.in_progress_at
    assert done.finalizing_at
    assert done.completed_at
    assert done.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at
    assert done.usage is not None
    assert done.usage.total_tokens > 0

    assert done.output_file_id is not None
    meta = client.files.retrieve(done.output_file_id)
    assert meta.purpose == "batch_output"
    assert meta.filename == f"batch_{done.id}_output.jsonl"
    rows = by_id(read_jsonl(client, done.output_file_id))
    assert set(rows) == {"req-0", "req-1", "req-2"}
    row = rows["req-1"]
    assert row["id"].startswith("batch_req_")
    assert row["error"] is None
    assert row["response"]["status_code"] == 200
    completion = ChatCompletion.model_validate(row["response"]["body"])
    assert completion.choices[0].message.content == "Echo: prompt 1"
    assert completion.model == MODEL
    assert completion.usage is not None


def test_responses_text_round_trip(client: OpenAI) -> None:
    lines = [
        line("plain", responses_body("hello there"), RESPONSES),
        line(
            "parts",
            responses_body(
                [
                    {"role": "user", "content": "earlier turn"},
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": [{"type": "input_text", "text": "last turn"}]},
                ]
            ),
            RESPONSES,
        ),
    ]
    done = run(client, lines, RESPONSES)
    assert done.status == "completed"
    rows = by_id(read_jsonl(client, done.output_file_id))
    plain = Response.model_validate(rows["plain"]["response"]["body"])
    assert plain.output_text == "Echo: hello there"
    assert plain.status == "completed"
    assert plain.instructions == "Be brief."
    assert plain.usage is not None
    assert plain.usage.input_tokens >= 1
    assert Response.model_validate(rows["parts"]["response"]["body"]).output_text == (
        "Echo: last turn"
    )


class Mood(StrEnum):
    HAPPY = "happy"
    SAD = "sad"
    MEH = "meh"


class Address(BaseModel):
    model_config = ConfigDict(extra="forbid")
    city: str
    zip_code: str = Field(min_length=5, max_length=5)


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    mood: Mood
    age: int = Field(ge=18, le=30)
    ratio: float = Field(gt=0, lt=1)
    tags: list[str] = Field(min_length=2, max_length=3)
    address: Address
    friends: list[Address]
    nickname: str | None


class Node(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    children: list[Node]
    parent: Node | None


@pytest.mark.parametrize("endpoint", [CHAT, RESPONSES])
def test_structured_replies_validate_against_the_schema(client: OpenAI, endpoint: str) -> None:
    make = chat_body if endpoint == CHAT else responses_body
    schemas = {"person": strict_schema(Person), "node": strict_schema(Node)}
    lines = [
        line(f"{kind}-{i}", make(f"describe thing number {i}", schema), endpoint)
        for kind, schema in schemas.items()
        for i in range(20)
    ]
    done = run(client, lines, endpoint)
    assert done.status == "completed"
    rows = read_jsonl(client, done.output_file_id)
    assert len(rows) == 40
    moods = set()
    for row in rows:
        body = row["response"]["body"]
        if endpoint == CHAT:
            content = ChatCompletion.model_validate(body).choices[0].message.content
        else:
            content = Response.model_validate(body).output_text
        assert content is not None
        if row["custom_id"].startswith("person"):
            moods.add(Person.model_validate_json(content).mood)
        else:
            Node.model_validate_json(content)
    assert len(moods) > 1  # enum values are picked by the prompt's hash


def test_structured_replies_are_deterministic_and_json_object_is_supported(
    client: OpenAI,
) -> None:
    schema = strict_schema(Person)
    lines = [
        line("a", chat_body("same prompt", schema)),
        line("b", chat_body("same prompt", schema)),
    ]
    lines.append(line("obj", chat_body("give json", response_format={"type": "json_object"})))
    rows = by_id(read_jsonl(client, run(client, lines).output_file_id))
    content = {
        k: v["response"]["body"]["choices"][0]["message"]["content"] for k, v in rows.items()
    }
    assert content["a"] == content["b"]
    assert isinstance(json.loads(content["obj"]), dict)


def test_schema_generator_handles_unions_refs_and_formats() -> None:
    schema = {
        "type": "object",
        "properties": {
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 5}]},
            "kind": {"const": "fixed"},
            "when": {"type": "string", "format": "date-time"},
            "either": {"type": ["null", "boolean"]},
            "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "number"}]},
            "merged": {
                "allOf": [{"$ref": "#/$defs/A"}, {"properties": {"b": {"type": "integer"}}}]
            },
            "few": {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3},
            "odd": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 2},
        },
        "$defs": {"A": {"type": "object", "properties": {"a": {"type": "string"}}}},
    }
    value = SchemaCompiler(schema).compile()(Entropy.for_text("a prompt"))
    assert isinstance(value["maybe"], int)
    assert value["maybe"] >= 5
    assert value["kind"] == "fixed"
    assert value["when"].endswith("Z")
    assert isinstance(value["either"], bool)
    assert isinstance(value["pair"][0], str)
    assert isinstance(value["pair"][1], float)
    assert set(value["merged"]) == {"a", "b"}
    assert len(value["few"]) == 3
    assert value["odd"] == 1


def test_text_generator_emits_the_value_generator_as_compact_json() -> None:
    schemas = [
        strict_schema(Person),
        strict_schema(Node),
        {"anyOf": [{"type": "null"}, {"$ref": "#"}]},
        {"type": "object", "properties": {"n": {"type": "number", "minimum": 3}, "s": {}}},
        {"enum": [1, "a", None, {"x": 1}]},
    ]
    for schema in schemas:
        values = SchemaCompiler(schema).compile()
        texts = TextCompiler(schema).compile_text()
        for i in range(300):
            prompt = f"prompt number {i} with some words \u00e9"
            expected = json.dumps(values(Entropy.for_text(prompt)), separators=(",", ":"))
            assert texts(Entropy.for_text(prompt)) == expected


def _read_all(endpoint: str, raw_lines: list[str]) -> list[RequestLine]:
    reader = RequestReader(endpoint)
    return [reader.read(raw) for raw in raw_lines]


def test_lines_read_through_shapes_match_a_full_parse() -> None:
    schema = strict_schema(Person)
    styles: list[dict[str, Any]] = [
        {},
        {"separators": (",", ":")},
        {"separators": (",", ":"), "ensure_ascii": False},
        {"ensure_ascii": False},
    ]
    prompts = ["plain", 'quo"te', "back\\slash", "tab\tand\nnewline", "caf\u00e9 \u2603", ""]
    for style in styles:
        for endpoint, make in ((CHAT, chat_body), (RESPONSES, responses_body)):
            raw_lines = [
                json.dumps(
                    {"custom_id": f"id-{i}-{p}", "method": "POST", "url": endpoint,
                     "body": make(p, schema)},
                    **style,
                ) + ("\n" if i % 2 else "  \r\n")
                for i, p in enumerate(prompts * 2)
            ]  # fmt: skip
            read = _read_all(endpoint, raw_lines)
            assert all(line.shape is not None for line in read[1:]), (style, endpoint)
            for raw, line in zip(raw_lines, read, strict=True):
                request = json.loads(raw)
                assert line.custom_id == request["custom_id"]
                assert json.loads(line.custom_id_json) == request["custom_id"]
                assert (line.prompt or extract_prompt(endpoint, request["body"])) == (
                    extract_prompt(endpoint, request["body"])
                )
                body = line.body if line.shape is None else line.shape.body
                assert body is not None
                assert {k: v for k, v in body.items() if k not in ("messages", "input")} == {
                    k: v for k, v in request["body"].items() if k not in ("messages", "input")
                }


def test_lines_that_differ_elsewhere_are_parsed_in_full() -> None:
    lines = [line(f"r{i}", chat_body("same prompt", temperature=i / 10)) for i in range(20)]
    read = _read_all(CHAT, lines)
    assert [r.shape for r in read] == [None] * 20
    assert [r.body["temperature"] for r in read if r.body is not None] == [
        i / 10 for i in range(20)
    ]


def test_line_errors_are_found_after_lines_of_a_known_shape(client: OpenAI) -> None:
    good_lines = [good(i) for i in range(5)]
    cases = [
        (good_lines[1], "duplicate_custom_id", "custom_id"),
        (good(7) + " x", "invalid_json_line", None),
        (good(8).replace("p8", "p\\q8"), "invalid_json_line", None),
        (good(9).replace("p9", "p\t9"), "invalid_json_line", None),
        (line("m", {**chat_body("p"), "model": "other"}), "model_mismatch", "body.model"),
    ]
    for bad, code, param in cases:
        done = run(client, [*good_lines, bad, good(6)])
        assert done.status == "failed", bad
        assert done.errors is not None
        assert done.errors.data
        error = done.errors.data[0]
        assert (error.code, error.line, error.param) == (code, 6, param)


# -- create-time validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"endpoint": "/v1/images"}, openai.BadRequestError),
        ({"completion_window": "48h"}, openai.BadRequestError),
        ({"input_file_id": "file-missing"}, openai.NotFoundError),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, openai.BadRequestError),
        ({"metadata": {"k" * 65: "v"}}, openai.BadRequestError),
        ({"metadata": {"k": "v" * 513}}, openai.BadRequestError),
        ({"metadata": {"k": 1}}, openai.BadRequestError),
        ("user_data", openai.BadRequestError),
    ],
)
def test_create_validation_errors(
    emu: OpenAIBatchEmulator, client: OpenAI, change: Any, error: type[Exception]
) -> None:
    purpose = change if isinstance(change, str) else "batch"
    params: dict[str, Any] = {
        "input_file_id": upload(client, chat_lines(1), purpose=purpose),
        "endpoint": CHAT,
        "completion_window": "24h",
    }
    if isinstance(change, dict):
        params.update(change)
    with pytest.raises(error) as info:
        client.batches.create(**params)
    body = cast(openai.APIStatusError, info.value).body
    assert isinstance(body, dict)
    assert body["message"]
    assert emu.stats.batches_created == 0
    assert emu.batches() == []


# -- line validation ----------------------------------------------------------------------------


def good(i: int) -> str:
    return line(f"ok-{i}", chat_body(f"p{i}"))


@pytest.mark.parametrize(
    ("bad_line", "code", "param"),
    [
        ("{not json", "invalid_json_line", None),
        (
            json.dumps({"method": "POST", "url": CHAT, "body": chat_body("x")}),
            "missing_required_parameter",
            "custom_id",
        ),
        (
            json.dumps({"custom_id": "x", "method": "POST", "url": CHAT}),
            "missing_required_parameter",
            "body",
        ),
        (line("x", chat_body("x"), method="GET"), "invalid_method", "method"),
        (line("x", chat_body("x"), url=RESPONSES), "url_mismatch", "url"),
        (line("ok-0", chat_body("x")), "duplicate_custom_id", "custom_id"),
        (line("x", {**chat_body("x"), "model": "other-model"}), "model_mismatch", "body.model"),
    ],
)
def test_line_validation_failures(
    emu: OpenAIBatchEmulator, client: OpenAI, bad_line: str, code: str, param: str | None
) -> None:
    done = run(client, [good(0), good(1), bad_line, good(2)])
    assert done.status == "failed"
    assert done.failed_at is not None
    assert done.output_file_id is None
    assert done.errors is not None
    assert done.errors.data
    error = done.errors.data[0]
    assert (error.code, error.line, error.param) == (code, 3, param)
    assert emu.stats.lines_answered == {}


def test_too_many_lines_and_too_large_files_fail_validation() -> None:
    with OpenAIBatchEmulator(limits=EmulatorLimits(max_batch_input_bytes=2_000)) as emu:
        client = client_for(emu)
        big = run(client, chat_lines(30))
        assert big.status == "failed"
        assert big.errors is not None
        assert big.errors.data
        assert big.errors.data[0].code == "file_too_large"
    with OpenAIBatchEmulator() as emu:
        client = client_for(emu)
        tiny = [line(str(i), {"model": "m", "messages": []}) for i in range(50_001)]
        many = run(client, tiny)
        assert many.status == "failed"
        assert many.errors is not None
        assert many.errors.data
        assert (many.errors.data[0].code, many.errors.data[0].line) == ("too_many_tasks", 50_001)


# -- listing, files, cancel ---------------------------------------------------------------------


def test_list_batches_pages_newest_first(client: OpenAI) -> None:
    file_id = upload(client, chat_lines(1))
    ids = [
        client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h").id
        for _ in range(5)
    ]
    newest_first = ids[::-1]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert page.has_more
    raw = client.batches.with_raw_response.list(limit=2, after=newest_first[1]).http_response.json()
    assert [b["id"] for b in raw["data"]] == newest_first[2:4]
    assert (raw["first_id"], raw["last_id"], raw["has_more"]) == (*newest_first[2:4], True)
    last = client.batches.list(limit=2, after=newest_first[3])
    assert [b.id for b in last.data] == newest_first[4:]
    assert not last.has_more
    assert [b.id for b in client.batches.list(limit=2)] == newest_first  # auto-pagination
    with pytest.raises(openai.BadRequestError):
        client.batches.list(limit=101)


def test_a_batch_completes_without_waiting_for_batches_created_after_it(client: OpenAI) -> None:
    # Both files are uploaded first, so the second create follows the first at once, while
    # the first batch is still being validated.
    files = [upload(client, chat_lines(20_000, prefix)) for prefix in ("a", "b")]
    first, second = (
        client.batches.create(input_file_id=f, endpoint=CHAT, completion_window="24h")
        for f in files
    )
    assert wait(client, first.id).status == "completed"
    # The provider does not hold a batch back for the ones created after it.
    assert client.batches.retrieve(second.id).status == "validating"
    assert wait(client, second.id).request_counts.completed == 20_000  # type: ignore[union-attr]


def test_files_list_retrieve_delete(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    a = upload(client, ["{}"], purpose="batch")
    b = upload(client, ["{}"], purpose="user_data")
    c = upload(client, ["{}"], purpose="batch")
    assert [f.id for f in client.files.list()] == [c, b, a]
    assert [f.id for f in client.files.list(purpose="batch")] == [c, a]
    assert [f.id for f in client.files.list(order="asc")] == [a, b, c]
    raw = client.files.with_raw_response.list(limit=1, after=c).http_response.json()
    assert [f["id"] for f in raw["data"]] == [b]
    assert raw["has_more"] is True
    assert client.files.retrieve(a).bytes == 3
    assert client.files.content(a).content == b"{}\n"
    deleted = client.files.delete(a)
    assert (deleted.id, deleted.deleted) == (a, True)
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(a)
    assert [f["id"] for f in emu.files()] == [b, c]
    with pytest.raises(openai.BadRequestError):
        upload(client, ["{}"], purpose="nonsense")
    assert len(emu.files()) == 2


def test_upload_size_limit_and_chunked_uploads() -> None:
    with OpenAIBatchEmulator(limits=EmulatorLimits(max_upload_bytes=100)) as emu:
        client = client_for(emu)
        with pytest.raises(openai.BadRequestError, match="too large"):
            upload(client, ["x" * 200])
        assert emu.files() == []
        # A chunked request body, split so the multipart delimiters straddle chunks.
        boundary = "b0undary"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"'
            f'\r\nContent-Type: application/jsonl\r\n\r\n{{"a": 1}}\n\r\n--{boundary}--\r\n'
        ).encode()
        conn = http.client.HTTPConnection("127.0.0.1", emu.port, timeout=10)
        conn.request(
            "POST",
            "/v1/files",
            body=iter([body[i : i + 7] for i in range(0, len(body), 7)]),
            headers={
                "Authorization": f"Bearer {emu.api_key}",
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            encode_chunked=True,
        )
        answer = json.loads(conn.getresponse().read())
        conn.close()
        assert (answer["filename"], answer["bytes"], answer["purpose"]) == ("a.jsonl", 9, "batch")


def test_multipart_reader_streams_parts_read_byte_by_byte() -> None:
    data = (
        b'preamble\r\n--xyz\r\nContent-Disposition: form-data; name="f"; filename="n.txt"\r\n'
        b"\r\nline one\r\n--xy not a boundary\r\n--xyz\r\n"
        b'Content-Disposition: form-data; name="g"\r\n\r\nvalue\r\n--xyz--\r\n'
    )
    stream = io.BytesIO(data)
    reader = MultipartReader(lambda n: stream.read(1), b"xyz", chunk_size=1)
    part = reader.next_part()
    assert part is not None
    assert (part.name, part.filename) == ("f", "n.txt")
    assert b"".join(reader.iter_body()) == b"line one\r\n--xy not a boundary"
    part = reader.next_part()
    assert part is not None
    assert part.name == "g"
    assert b"".join(reader.iter_body()) == b"value"
    assert reader.next_part() is None


def test_cancel_keeps_answered_lines_and_cancels_the_rest() -> None:
    with OpenAIBatchEmulator(phase_seconds=0.4) as emu:
        client = client_for(emu)
        batch = create(client, chat_lines(400))
        deadline = time.monotonic() + 10
        while True:
            current = client.batches.retrieve(batch.id)
            counts = current.request_counts
            if current.status == "in_progress" and counts and 0 < counts.completed < 300:
                break
            assert time.monotonic() < deadline
            time.sleep(0.01)
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling"
        assert cancelling.cancelling_at
        assert client.batches.cancel(batch.id).status == "cancelling"  # idempotent
        done = wait(client, batch.id)
        assert done.status == "cancelled"
        assert done.cancelled_at
        answered = read_jsonl(client, done.output_file_id)
        cancelled = read_jsonl(client, done.error_file_id)
        assert done.request_counts is not None
        assert len(answered) == done.request_counts.completed
        assert 0 < len(answered) < 400
        assert len(answered) + len(cancelled) == 400
        assert all(r["response"] is None for r in cancelled)
        assert {r["error"]["code"] for r in cancelled} == {"batch_cancelled"}
        assert sum(emu.stats.lines_answered.values()) == len(answered)
        with pytest.raises(openai.ConflictError):
            client.batches.cancel(batch.id)


def test_cancel_while_validating_and_after_completion(client: OpenAI) -> None:
    done = run(client, chat_lines(2))
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(done.id)
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_missing")
    with OpenAIBatchEmulator(phase_seconds=0.3) as emu:
        slow = client_for(emu)
        batch = create(slow, chat_lines(5))
        assert slow.batches.cancel(batch.id).status == "cancelling"
        final = wait(slow, batch.id)
        assert final.status == "cancelled"
        assert final.output_file_id is None
        assert emu.stats.lines_answered == {}


def test_cancel_right_after_create_leaves_a_consistent_batch(
    emu: OpenAIBatchEmulator, client: OpenAI
) -> None:
    batch = create(client, chat_lines(5_000))
    with contextlib.suppress(openai.ConflictError):  # unless it completed already
        client.batches.cancel(batch.id)
    done = wait(client, batch.id)
    assert done.status in ("cancelled", "completed")
    assert done.request_counts is not None
    if done.request_counts.total == 0:
        # The cancel came before validation began (likely on a loaded machine): as for a
        # batch cancelled while validating, nothing ran and there are no files.
        assert done.status == "cancelled"
        assert done.output_file_id is None
        assert done.error_file_id is None
        assert emu.stats.lines_answered == {}
        return
    answered = read_jsonl(client, done.output_file_id)
    cancelled = read_jsonl(client, done.error_file_id)
    assert len(answered) + len(cancelled) == 5_000
    assert done.request_counts is not None
    assert done.request_counts.completed == len(answered)
    assert sum(emu.stats.lines_answered.values()) == len(answered)
    assert {r["error"]["code"] for r in cancelled} <= {"batch_cancelled"}


def test_failed_validation_leaves_no_partial_output(
    emu: OpenAIBatchEmulator, client: OpenAI
) -> None:
    done = run(client, [*chat_lines(3_000), "{not json"])
    assert done.status == "failed"
    assert done.output_file_id is None
    assert emu.stats.lines_answered == {}
    assert emu.data_dir is not None
    assert not [p.name for p in emu.data_dir.iterdir() if p.name.startswith("tmp-")]


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knob", "status"),
    [("line_server_error_rate", 500), ("line_rate_limit_rate", 429)],
)
def test_line_error_rates(emu: OpenAIBatchEmulator, client: OpenAI, knob: str, status: int) -> None:
    setattr(emu.faults, knob, 1.0)
    done = run(client, chat_lines(10))
    assert done.status == "completed"
    assert done.output_file_id is None
    assert done.request_counts is not None
    assert done.request_counts.failed == 10
    rows = read_jsonl(client, done.error_file_id)
    assert {r["response"]["status_code"] for r in rows} == {status}
    assert all(r["response"]["body"]["error"]["message"] for r in rows)
    assert set(emu.stats.lines_answered.values()) == {1}


def test_invalid_json_rate(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    emu.faults.line_invalid_json_rate = 1.0
    done = run(client, chat_lines(5, schema=strict_schema(Person)))
    assert done.error_file_id is None
    for row in read_jsonl(client, done.output_file_id):
        assert row["response"]["status_code"] == 200
        content = row["response"]["body"]["choices"][0]["message"]["content"]
        with pytest.raises(json.JSONDecodeError):
            json.loads(content)


def _failed_ids(seed: int) -> set[str]:
    faults = EmulatorFaults(seed=seed, line_server_error_rate=0.2, line_rate_limit_rate=0.1)
    with OpenAIBatchEmulator(faults=faults) as emu:
        client = client_for(emu)
        done = run(client, chat_lines(200))
        return {r["custom_id"] for r in read_jsonl(client, done.error_file_id)}


def test_fault_rates_are_seeded_and_reproducible() -> None:
    first, second, other = _failed_ids(1), _failed_ids(1), _failed_ids(2)
    assert first == second != other
    assert 30 <= len(first) <= 90


def test_line_fault_callback_targets_items(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    kinds = ["server_error", "rate_limit", "invalid_json", "schema_mismatch", "bad_request"]
    seen: list[str] = []

    def fault(custom_id: str, body: dict[str, Any]) -> str | None:
        seen.append(custom_id)
        prompt = body["messages"][-1]["content"]
        return next((k for k in kinds if f"[{k}]" in prompt), None)

    emu.faults.line_fault = fault
    schema = strict_schema(Person)
    lines = [line(k, chat_body(f"item [{k}]", schema)) for k in kinds]
    lines.append(line("fine", chat_body("item fine", schema)))
    done = run(client, lines)
    assert sorted(seen) == sorted([*kinds, "fine"])
    errors = by_id(read_jsonl(client, done.error_file_id))
    assert {k: v["response"]["status_code"] for k, v in errors.items()} == {
        "server_error": 500,
        "rate_limit": 429,
        "bad_request": 400,
    }
    assert errors["bad_request"]["response"]["body"]["error"]["type"] == "invalid_request_error"
    outputs = by_id(read_jsonl(client, done.output_file_id))
    content = {
        k: v["response"]["body"]["choices"][0]["message"]["content"] for k, v in outputs.items()
    }
    Person.model_validate_json(content["fine"])
    with pytest.raises(json.JSONDecodeError):
        json.loads(content["invalid_json"])
    json.loads(content["schema_mismatch"])
    with pytest.raises(ValidationError):
        Person.model_validate_json(content["schema_mismatch"])


def test_create_rate_limit_count(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    file_id = upload(client, chat_lines(1))
    emu.faults.create_rate_limit_count = 2
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as info:
            client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
        assert info.value.response.headers["retry-after"] == "0"
        assert cast(dict[str, Any], info.value.body)["type"] == "rate_limit_error"
    assert emu.stats.batches_created == 0
    client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    emu.faults.create_rate_limit_count = 1
    retrying = client_for(emu, max_retries=1)
    retrying.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    assert emu.stats.batches_created == 2
    assert emu.faults.create_rate_limit_count == 0
    assert emu.stats.calls[("POST", "/v1/batches")] == 5


def test_create_insufficient_quota_count(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    file_id = upload(client, chat_lines(1))
    emu.faults.create_insufficient_quota_count = 2
    emu.faults.create_rate_limit_count = 1
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as info:
            client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
        error = info.value
        assert error.status_code == 429
        assert error.code == "insufficient_quota"
        assert error.type == "insufficient_quota"
        assert error.body == {
            "message": "You exceeded your current quota, please check your plan and billing "
            "details.",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
        assert error.response.json() == {"error": error.body}
    assert emu.stats.batches_created == 0
    assert emu.faults.create_insufficient_quota_count == 0
    with pytest.raises(openai.RateLimitError) as info:  # applied after the quota refusals
        client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    assert info.value.code == "rate_limit_exceeded"
    batch = client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    assert wait(client, batch.id).status == "completed"
    assert emu.stats.batches_created == 1
    assert emu.stats.calls[("POST", "/v1/batches")] == 4


def test_output_file_delay(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    emu.faults.output_file_delay = 0.3
    emu.faults.line_fault = lambda custom_id, _: "server_error" if custom_id == "req-1" else None
    done = run(client, chat_lines(3))
    ended = time.monotonic()
    assert done.status == "completed"
    assert done.output_file_id is not None
    assert done.error_file_id is not None
    for file_id in (done.output_file_id, done.error_file_id):
        with pytest.raises(openai.NotFoundError) as info:
            client.files.content(file_id)
        assert info.value.body == {
            "message": f"No such File object: {file_id}",
            "type": "invalid_request_error",
            "param": "id",
            "code": None,
        }
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(file_id)
    assert time.monotonic() - ended < 0.3, "too slow to observe the delay"
    time.sleep(0.3 - (time.monotonic() - ended) + 0.05)
    assert len(read_jsonl(client, done.output_file_id)) == 2
    assert [r["custom_id"] for r in read_jsonl(client, done.error_file_id)] == ["req-1"]
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"
    emu.faults.output_file_delay = 0.0
    emu.faults.line_fault = None
    assert len(read_jsonl(client, run(client, chat_lines(2)).output_file_id)) == 2


def test_http_server_errors(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    emu.faults.http_server_error_count = 2
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.files.list()
    client.files.list()
    emu.faults.http_server_error_rate = 1.0
    with pytest.raises(openai.InternalServerError):
        client.batches.list()
    emu.faults.http_server_error_rate = 0.0
    client.batches.list()
    assert emu.faults.http_server_error_count == 0


def test_token_limit_failure(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    emu.faults.fail_token_limit_count = 1
    failed = run(client, chat_lines(3))
    assert failed.status == "failed"
    assert failed.output_file_id is None
    assert failed.errors is not None
    assert failed.errors.data
    error = failed.errors.data[0]
    assert error.code == "token_limit_exceeded"
    assert error.message
    assert error.message.startswith(f"Enqueued token limit reached for {MODEL}")
    assert run(client, chat_lines(3)).status == "completed"
    assert emu.stats.batches_created == 2


def test_expiry_answers_the_first_half(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    emu.faults.expire_count = 1
    done = run(client, chat_lines(10))
    assert done.status == "expired"
    assert done.expired_at
    answered = read_jsonl(client, done.output_file_id)
    expired = read_jsonl(client, done.error_file_id)
    assert [r["custom_id"] for r in answered] == [f"req-{i}" for i in range(5)]
    assert [r["custom_id"] for r in expired] == [f"req-{i}" for i in range(5, 10)]
    assert all(r["response"] is None and r["error"]["code"] == "batch_expired" for r in expired)
    assert sorted(emu.stats.lines_answered) == [f"req-{i}" for i in range(5)]
    assert run(client, chat_lines(2)).status == "completed"


def test_latency_and_create_response_delay(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    emu.faults.latency = 0.2
    started = time.monotonic()
    client.files.list()
    assert time.monotonic() - started >= 0.2
    emu.faults.latency = 0.0
    file_id = upload(client, chat_lines(2))
    emu.faults.create_response_delay = 1.0
    impatient = client_for(emu, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        impatient.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
    emu.faults.create_response_delay = 0.0
    assert emu.stats.batches_created == 1
    (batch,) = emu.batches()
    assert wait(client, batch["id"]).status == "completed"


def test_shuffle_output_keeps_every_line(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    emu.faults.shuffle_output = True
    rows = read_jsonl(client, run(client, chat_lines(50)).output_file_id)
    ids = [r["custom_id"] for r in rows]
    assert sorted(ids) == sorted(f"req-{i}" for i in range(50))
    assert ids != sorted(ids)


# -- stats, auth, scale, entry points -----------------------------------------------------------


def test_stats_count_calls_batches_and_answers(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    for key in ("k1", "k1", "k2"):
        run(client, chat_lines(3), metadata={"batchor_batch_key": key})
    stats = emu.stats
    assert stats.batches_created == 3
    assert stats.batches_by_metadata("batchor_batch_key") == {"k1": 2, "k2": 1}
    assert stats.batches_by_metadata("absent") == {}
    assert stats.lines_answered == {"req-0": 3, "req-1": 3, "req-2": 3}
    assert stats.calls[("POST", "/v1/files")] == 3
    assert stats.calls[("POST", "/v1/batches")] == 3
    assert stats.calls[("GET", "/v1/batches/{id}")] >= 3
    assert stats.total_calls == sum(stats.calls.values())
    client.files.content(emu.files()[0]["id"])
    assert stats.calls[("GET", "/v1/files/{id}/content")] == 1
    stats.reset()
    assert stats.total_calls == 0
    assert stats.batches_created == 0


def test_auth() -> None:
    with OpenAIBatchEmulator() as emu:
        request = urllib.request.Request(emu.base_url + "/files")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        assert info.value.code == 401
        assert json.loads(info.value.read())["error"]["type"] == "invalid_request_error"
        OpenAI(base_url=emu.base_url, api_key="any-key", max_retries=0).files.list()
        unknown = urllib.request.Request(
            emu.base_url + "/nope", headers={"Authorization": "Bearer x"}
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(unknown, timeout=5)
        assert info.value.code == 404
        assert emu.stats.calls[("GET", "/v1/nope")] == 1
    with OpenAIBatchEmulator(api_key="sk-secret") as emu:
        assert emu.api_key == "sk-secret"
        wrong = OpenAI(base_url=emu.base_url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.files.list()
        client_for(emu).files.list()
        assert emu.stats.calls[("GET", "/v1/files")] == 2


def test_fifty_thousand_lines_in_a_few_seconds(emu: OpenAIBatchEmulator, client: OpenAI) -> None:
    lines = [
        line(f"r{i}", {"model": MODEL, "messages": [{"role": "user", "content": f"q{i}"}]})
        for i in range(50_000)
    ]
    started = time.monotonic()
    done = run(client, lines)
    elapsed = time.monotonic() - started
    assert done.status == "completed"
    assert done.request_counts is not None
    assert done.request_counts.completed == 50_000
    assert client.files.content(done.output_file_id or "").text.count("\n") == 50_000
    assert elapsed < 10, elapsed


def test_phases_take_at_least_phase_seconds() -> None:
    with OpenAIBatchEmulator(phase_seconds=0.2) as emu:
        client = client_for(emu)
        batch = create(client, chat_lines(3))
        statuses = set()
        started = time.monotonic()
        while (current := client.batches.retrieve(batch.id)).status not in TERMINAL:
            statuses.add(current.status)
            time.sleep(0.02)
        assert time.monotonic() - started >= 0.55
        assert statuses >= {"validating", "in_progress", "finalizing"}


def test_main_serves_until_sigterm_and_imports_no_openai() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchor.testing.emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:")
        assert base_url.endswith("/v1")
        assert OpenAI(base_url=base_url, api_key="k", max_retries=0).batches.list().data == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    code = (
        "import sys, batchor.testing; sys.exit('openai' in sys.modules or 'pytest' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_memory_stays_flat_for_a_large_input(tmp_path: Any) -> None:
    psutil = pytest.importorskip("psutil")
    path = tmp_path / "big.jsonl"
    padding = "lorem ipsum " * 330  # ~4 kB per line, ~40 MB in all
    with path.open("w") as handle:
        for i in range(10_000):
            handle.write(line(f"r{i}", chat_body(f"item {i} {padding}")) + "\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchor.testing.emulator", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        watched = psutil.Process(proc.pid)
        baseline = peak = watched.memory_info().rss
        client = OpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=60)
        with path.open("rb") as handle:
            file_id = client.files.create(file=handle, purpose="batch").id
        peak = max(peak, watched.memory_info().rss)
        batch = client.batches.create(input_file_id=file_id, endpoint=CHAT, completion_window="24h")
        while (batch := client.batches.retrieve(batch.id)).status not in TERMINAL:
            peak = max(peak, watched.memory_info().rss)
            time.sleep(0.01)
        assert batch.status == "completed"
        with client.files.with_streaming_response.content(batch.output_file_id or "") as answer:
            size = sum(len(chunk) for chunk in answer.iter_bytes(1 << 20))
        peak = max(peak, watched.memory_info().rss)
        assert size > path.stat().st_size
        assert peak - baseline < 30 * 1024 * 1024, (baseline, peak)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


def test_usable_without_a_with_block() -> None:
    emu = OpenAIBatchEmulator()
    emu.start()
    try:
        data_dir = emu.data_dir
        assert data_dir is not None
        assert data_dir.exists()
        assert client_for(emu).files.list().data == []
    finally:
        emu.stop()
    assert not data_dir.exists()
    emu.stop()  # idempotent
