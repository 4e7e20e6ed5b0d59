"""The Gemini Batch Mode emulator, driven by the real ``google-genai`` client over HTTP."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from batchor.testing.gemini import GeminiBatchEmulator, gemini_limits
from batchor.testing.gemini import routes as r
from batchor.testing.gemini.schema import to_json_schema

MODEL = "gemini-2.5-flash"

# -- helpers ------------------------------------------------------------------------------------


def client_for(emu: GeminiBatchEmulator, **http: Any) -> genai.Client:
    options = types.HttpOptions(base_url=emu.base_url, **http)
    return genai.Client(api_key=emu.api_key, http_options=options)


def request(prompt: str, **config: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    if config:
        body["generation_config"] = config
    return body


def line(key: str, prompt: str, **config: Any) -> str:
    return json.dumps({"key": key, "request": request(prompt, **config)})


def lines(n: int, prefix: str = "k", **config: Any) -> list[str]:
    return [line(f"{prefix}{i}", f"prompt {i}", **config) for i in range(n)]


def upload(client: genai.Client, rows: list[str], name: str = "input") -> str:
    data = ("\n".join(rows) + "\n").encode()
    config = {"display_name": name, "mime_type": "jsonl"}
    uploaded = client.files.upload(file=io.BytesIO(data), config=config)
    assert uploaded.name is not None
    return uploaded.name


def create(client: genai.Client, rows: list[str], display_name: str = "batch") -> types.BatchJob:
    return client.batches.create(
        model=MODEL, src=upload(client, rows), config={"display_name": display_name}
    )


def wait(client: genai.Client, name: str | None, timeout: float = 20.0) -> types.BatchJob:
    assert name is not None
    deadline = time.monotonic() + timeout
    while not (job := client.batches.get(name=name)).done:
        assert time.monotonic() < deadline, f"batch still {job.state}"
        time.sleep(0.02)
    return job


def run(client: genai.Client, rows: list[str]) -> types.BatchJob:
    return wait(client, create(client, rows).name)


def output(client: genai.Client, job: types.BatchJob) -> list[dict[str, Any]]:
    assert job.dest is not None
    assert job.dest.file_name is not None
    data = client.files.download(file=job.dest.file_name)
    return [json.loads(row) for row in data.decode().splitlines()]


def by_key(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in rows}


def text_of(row: dict[str, Any]) -> str:
    return str(row["response"]["candidates"][0]["content"]["parts"][0]["text"])


def rest(
    emu: GeminiBatchEmulator,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """A raw call (the SDK hides some fields, e.g. ``batchStats``); ``(status, JSON)``."""
    data = None if body is None else json.dumps(body).encode()
    sent = {"x-goog-api-key": emu.api_key} if headers is None else headers
    req = urllib.request.Request(emu.base_url + path, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            raw = answer.read()
            return answer.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def emu(gemini_emulator: GeminiBatchEmulator) -> GeminiBatchEmulator:
    return gemini_emulator


@pytest.fixture
def client(emu: GeminiBatchEmulator) -> Iterator[genai.Client]:
    with client_for(emu) as c:
        yield c


# -- round trips --------------------------------------------------------------------------------


def test_text_round_trip(emu: GeminiBatchEmulator, client: genai.Client) -> None:
    rows = [
        json.dumps(
            {
                "key": f"k{i}",
                "request": {
                    "systemInstruction": {"parts": [{"text": "Be brief."}]},
                    "contents": [{"parts": [{"text": f"say {i}"}]}],
                    "generationConfig": {"temperature": 0.2, "maxOutputTokens": 100},
                },
            }
        )
        for i in range(3)
    ]
    job = create(client, rows, display_name="run-1 batch-0")
    assert job.state == types.JobState.JOB_STATE_PENDING
    assert job.display_name == "run-1 batch-0"
    assert job.model == f"models/{MODEL}"
    job = wait(client, job.name)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert job.create_time is not None
    assert job.end_time is not None
    assert job.update_time is not None
    assert job.dest is not None
    assert job.dest.file_name == f"files/batch-{(job.name or '').split('/')[1]}"
    answers = output(client, job)
    assert [row["key"] for row in answers] == ["k0", "k1", "k2"]  # input order
    first = answers[0]["response"]
    assert first["candidates"][0]["content"]["role"] == "model"
    assert first["candidates"][0]["finishReason"] == "STOP"
    assert text_of(answers[0]) == "Echo: say 0"
    usage = first["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["candidatesTokenCount"]
    assert first["modelVersion"] == MODEL
    assert types.GenerateContentResponse.model_validate(first).text == "Echo: say 0"
    status, operation = rest(emu, "GET", f"/v1beta/{job.name}")
    assert status == 200
    assert operation["done"] is True
    metadata = operation["metadata"]
    assert metadata["@type"].endswith("GenerateContentBatch")
    assert metadata["state"] == "BATCH_STATE_SUCCEEDED"
    assert metadata["batchStats"] == {"requestCount": "3", "successfulRequestCount": "3"}
    assert metadata["inputConfig"]["fileName"].startswith("files/")
    assert metadata["output"] == {"responsesFile": job.dest.file_name}
    assert operation["response"]["responsesFile"] == job.dest.file_name
    assert emu.stats.batches_by_metadata("display_name") == {"run-1 batch-0": 1}
    assert emu.stats.lines_answered == {"k0": 1, "k1": 1, "k2": 1}
    assert emu.batches()[0]["name"] == job.name


def test_the_legacy_download_path_and_v1beta(
    emu: GeminiBatchEmulator, client: genai.Client
) -> None:
    job = run(client, lines(2))
    assert job.dest is not None
    url = f"{emu.base_url}/download/v1beta/{job.dest.file_name}:download?alt=media"
    req = urllib.request.Request(url, headers={"x-goog-api-key": emu.api_key})
    with urllib.request.urlopen(req, timeout=10) as answer:
        assert len(answer.read().splitlines()) == 2
    beta = client_for(emu, api_version="v1beta")
    assert beta.batches.get(name=job.name or "").state == types.JobState.JOB_STATE_SUCCEEDED


OBJECT_SCHEMA = {
    "type": "OBJECT",
    "properties": {
        "title": {"type": "STRING", "minLength": "3"},
        "score": {"type": "INTEGER", "minimum": 1, "maximum": 5},
        "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "minItems": "1"},
        "kind": {"type": "STRING", "enum": ["a", "b"]},
        "note": {"type": "STRING", "nullable": True},
    },
    "required": ["title", "score", "tags", "kind"],
    "propertyOrdering": ["score", "title", "tags", "kind", "note"],
}
JSON_SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}}},
    "required": ["items"],
    "$defs": {
        "Item": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "ok": {"type": "boolean"}},
            "required": ["name", "ok"],
        }
    },
}


@pytest.mark.parametrize(
    ("field", "schema", "expected"),
    [
        ("response_schema", OBJECT_SCHEMA, to_json_schema(OBJECT_SCHEMA)),
        ("responseJsonSchema", JSON_SCHEMA, JSON_SCHEMA),
    ],
)
def test_structured_replies_satisfy_the_schema(
    client: genai.Client, field: str, schema: dict[str, Any], expected: dict[str, Any]
) -> None:
    config = {"response_mime_type": "application/json", field: schema}
    job = run(client, lines(20, **config))
    for row in output(client, job):
        jsonschema.validate(json.loads(text_of(row)), expected)


def test_gemini_schema_conversion() -> None:
    converted = to_json_schema(OBJECT_SCHEMA)
    assert list(converted["properties"]) == ["score", "title", "tags", "kind", "note"]
    assert converted["properties"]["note"]["type"] == ["string", "null"]
    assert converted["properties"]["tags"]["minItems"] == 1
    assert converted["type"] == "object"


def test_enum_and_plain_json_replies(client: genai.Client) -> None:
    enum = {"type": "STRING", "enum": ["red", "green"]}
    rows = [
        line("e", "pick", response_mime_type="text/x.enum", response_schema=enum),
        line("j", "anything", response_mime_type="application/json"),
    ]
    answers = by_key(output(client, run(client, rows)))
    assert text_of(answers["e"]) in ("red", "green")
    assert isinstance(json.loads(text_of(answers["j"])), dict)


def test_max_output_tokens_cuts_the_reply(client: genai.Client) -> None:
    rows = [line("long", "word " * 50, max_output_tokens=5)]
    (answer,) = output(client, run(client, rows))
    candidate = answer["response"]["candidates"][0]
    assert candidate["finishReason"] == "MAX_TOKENS"
    assert len(candidate["content"]["parts"][0]["text"]) == 20
    assert answer["response"]["usageMetadata"]["candidatesTokenCount"] == 5


def test_requests_the_api_refuses_fail_on_their_own_line(
    emu: GeminiBatchEmulator, client: genai.Client
) -> None:
    rows = [
        line("ok", "fine"),
        json.dumps({"key": "unknown", "request": {**request("x"), "config": {}}}),
        json.dumps({"key": "empty", "request": {"contents": []}}),
        line("schema", "x", response_schema={"type": "STRING"}),
        line("mime", "x", response_mime_type="text/csv"),
        "this is not json",
    ]
    job = run(client, rows)
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    answers = output(client, job)
    assert len(answers) == 6
    keyed = by_key([row for row in answers if "key" in row])
    assert "response" in keyed["ok"]
    for key in ("unknown", "empty", "schema", "mime"):
        assert keyed[key]["error"]["code"] == 3, key
    assert 'Unknown name "config"' in keyed["unknown"]["error"]["message"]
    assert "contents is not specified" in keyed["empty"]["error"]["message"]
    assert answers[-1] == {"error": {"code": 3, "message": answers[-1]["error"]["message"]}}
    _, operation = rest(emu, "GET", f"/v1/{job.name}")
    stats = operation["metadata"]["batchStats"]
    assert stats == {"requestCount": "6", "successfulRequestCount": "1", "failedRequestCount": "5"}


# -- listing, files, cancel, delete -------------------------------------------------------------


def test_list_batches_pages_newest_first(emu: GeminiBatchEmulator, client: genai.Client) -> None:
    names = [create(client, lines(1), display_name=f"b{i}").name for i in range(3)]
    listed = [job.name for job in client.batches.list(config={"page_size": 2})]
    assert listed == names[::-1]
    status, first = rest(emu, "GET", "/v1beta/batches?pageSize=2")
    assert status == 200
    assert [op["name"] for op in first["operations"]] == names[:0:-1]
    status, second = rest(
        emu, "GET", f"/v1beta/batches?pageSize=2&pageToken={first['nextPageToken']}"
    )
    assert [op["name"] for op in second["operations"]] == names[:1]
    assert "nextPageToken" not in second
    status, body = rest(emu, "GET", "/v1beta/batches?pageToken=bogus")
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")


def test_files_list_get_delete(emu: GeminiBatchEmulator, client: genai.Client) -> None:
    names = [upload(client, lines(1), name=f"f{i}") for i in range(3)]
    assert [f.name for f in client.files.list(config={"page_size": 2})] == names[::-1]
    got = client.files.get(name=names[0])
    assert got.display_name == "f0"
    assert got.mime_type == "jsonl"
    assert got.state == types.FileState.ACTIVE
    assert got.source == types.FileSource.UPLOADED
    assert got.size_bytes is not None
    assert got.size_bytes > 0
    assert got.sha256_hash
    with pytest.raises(genai_errors.ClientError) as raised:
        client.files.download(file=names[0])  # uploaded files cannot be downloaded
    assert raised.value.code == 400
    client.files.delete(name=names[0])
    with pytest.raises(genai_errors.ClientError) as raised:
        client.files.get(name=names[0])
    assert (raised.value.code, raised.value.status) == (403, "PERMISSION_DENIED")
    assert len(emu.files()) == 2


def test_upload_protocol_in_raw_http(emu: GeminiBatchEmulator) -> None:
    start = urllib.request.Request(
        emu.base_url + "/upload/v1beta/files",
        data=json.dumps({"file": {"display_name": "raw", "name": "files/my-input"}}).encode(),
        method="POST",
        headers={
            "x-goog-api-key": emu.api_key,
            "X-Goog-Upload-Protocol": "resumable",
            "X-Goog-Upload-Command": "start",
            "X-Goog-Upload-Header-Content-Length": "6",
            "X-Goog-Upload-Header-Content-Type": "application/jsonl",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(start, timeout=10) as answer:
        assert answer.headers["X-Goog-Upload-Status"] == "active"
        url = answer.headers["X-Goog-Upload-URL"]

    def send(command: str, data: bytes, offset: int) -> tuple[int, Any, Any]:
        headers = {"X-Goog-Upload-Command": command, "X-Goog-Upload-Offset": str(offset)}
        req = urllib.request.Request(url, data=data, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as answer:
                raw = answer.read()
                return answer.status, answer.headers, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, json.loads(exc.read())

    status, headers, _ = send("upload", b"abc", 0)
    assert (status, headers["X-Goog-Upload-Size-Received"]) == (200, "3")
    status, headers, _ = send("query", b"", 0)
    assert headers["X-Goog-Upload-Size-Received"] == "3"
    status, _, body = send("upload", b"xyz", 1)  # wrong offset
    assert (status, body["error"]["status"]) == (400, "INVALID_ARGUMENT")
    status, headers, body = send("upload, finalize", b"def", 3)
    assert (status, headers["X-Goog-Upload-Status"]) == (200, "final")
    assert body["file"]["name"] == "files/my-input"
    assert body["file"]["sizeBytes"] == "6"
    status, body = rest(emu, "POST", "/v1beta/files/my-input:download?alt=media")
    assert status == 404  # a POST to a GET route


def test_cancel_ends_the_batch_cancelled() -> None:
    with GeminiBatchEmulator(phase_seconds=0.3) as emu, client_for(emu) as client:
        job = create(client, lines(50))
        client.batches.cancel(name=job.name or "")
        job = wait(client, job.name)
        assert job.state == types.JobState.JOB_STATE_CANCELLED
        assert job.dest is None  # cancelled while pending: nothing answered
        _, operation = rest(emu, "GET", f"/v1/{job.name}")
        assert operation["error"]["code"] == 1
        with pytest.raises(genai_errors.ClientError) as raised:
            client.batches.cancel(name=job.name or "")
        assert (raised.value.code, raised.value.status) == (400, "FAILED_PRECONDITION")


def _cancelled_while_running(client: genai.Client) -> types.BatchJob | None:
    """A batch cancelled part-way through its answers; None if it ended before the cancel
    (this process stalled through its whole running phase)."""
    job = create(client, lines(400))
    name = job.name or ""
    while (state := client.batches.get(name=name).state) != types.JobState.JOB_STATE_RUNNING:
        if state == types.JobState.JOB_STATE_SUCCEEDED:
            return None
        time.sleep(0.01)
    time.sleep(0.15)
    try:
        client.batches.cancel(name=name)
    except genai_errors.ClientError:  # it ended meanwhile
        return None
    job = wait(client, job.name)
    return job if job.state == types.JobState.JOB_STATE_CANCELLED else None


def test_cancel_while_running_keeps_the_answers_so_far() -> None:
    with GeminiBatchEmulator(phase_seconds=0.5) as emu, client_for(emu) as client:
        for _ in range(5):
            if (job := _cancelled_while_running(client)) is not None:
                break
        else:
            pytest.fail("every batch ended before it could be cancelled")
        answered = output(client, job)
        assert 0 < len(answered) < 400
        _, operation = rest(emu, "GET", f"/v1/{job.name}")
        stats = operation["metadata"]["batchStats"]
        assert int(stats["pendingRequestCount"]) == 400 - len(answered)


def test_delete_batch(emu: GeminiBatchEmulator, client: genai.Client) -> None:
    job = run(client, lines(2))
    deleted = client.batches.delete(name=job.name or "")
    assert deleted.error is None
    with pytest.raises(genai_errors.ClientError) as raised:
        client.batches.get(name=job.name or "")
    assert (raised.value.code, raised.value.status) == (404, "NOT_FOUND")
    assert list(client.batches.list()) == []
    assert emu.batches() == []


def test_phase_seconds_spreads_the_states() -> None:
    with GeminiBatchEmulator(phase_seconds=0.3) as emu, client_for(emu) as client:
        started = time.monotonic()
        job = create(client, lines(300))
        seen: list[str] = []
        partial = False
        while True:
            _, operation = rest(emu, "GET", f"/v1/{job.name}")
            state = operation["metadata"]["state"]
            if not seen or seen[-1] != state:
                seen.append(state)
            succeeded = int(operation["metadata"]["batchStats"].get("successfulRequestCount", 0))
            partial = partial or 0 < succeeded < 300
            if operation.get("done"):
                break
            time.sleep(0.01)
        assert seen == ["BATCH_STATE_PENDING", "BATCH_STATE_RUNNING", "BATCH_STATE_SUCCEEDED"]
        assert partial
        assert time.monotonic() - started >= 0.55


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knob", "code"), [("line_server_error_rate", 13), ("line_rate_limit_rate", 8)]
)
def test_line_error_rates(
    emu: GeminiBatchEmulator, client: genai.Client, knob: str, code: int
) -> None:
    setattr(emu.faults, knob, 1.0)
    answers = output(client, run(client, lines(4)))
    assert [row["error"]["code"] for row in answers] == [code] * 4


def test_line_fault_callback(emu: GeminiBatchEmulator, client: genai.Client) -> None:
    faults = {"j": "invalid_json", "m": "schema_mismatch", "b": "bad_request", "r": "rate_limit"}
    emu.faults.line_fault = lambda key, body: faults.get(key)
    schema = {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}, "required": ["a"]}
    config = {"response_mime_type": "application/json", "response_schema": schema}
    rows = [line(key, "p", **config) for key in ("j", "m", "b", "r", "ok")]
    answers = by_key(output(client, run(client, rows)))
    with pytest.raises(json.JSONDecodeError):
        json.loads(text_of(answers["j"]))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(text_of(answers["m"])), to_json_schema(schema))
    assert answers["b"]["error"]["code"] == 3
    assert answers["r"]["error"]["code"] == 8
    jsonschema.validate(json.loads(text_of(answers["ok"])), to_json_schema(schema))


def test_invalid_json_rate_on_text_replies(emu: GeminiBatchEmulator, client: genai.Client) -> None:
    emu.faults.line_invalid_json_rate = 1.0
    for row in output(client, run(client, lines(3))):
        with pytest.raises(json.JSONDecodeError):
            json.loads(text_of(row))


@pytest.mark.parametrize(
    ("knob", "route", "code", "status"),
    [
        ("route_server_error_counts", f"POST {r.CREATE}", 500, "INTERNAL"),
        ("route_rate_limit_counts", f"POST {r.CREATE}", 429, "RESOURCE_EXHAUSTED"),
        ("route_unavailable_counts", f"POST {r.CREATE}", 503, "UNAVAILABLE"),
    ],
)
def test_route_faults_on_create(
    emu: GeminiBatchEmulator, client: genai.Client, knob: str, route: str, code: int, status: str
) -> None:
    src = upload(client, lines(1))
    getattr(emu.faults, knob)[route] = 1
    with pytest.raises(genai_errors.APIError) as raised:
        client.batches.create(model=MODEL, src=src)
    assert (raised.value.code, raised.value.status) == (code, status)
    assert emu.batches() == []
    job = client.batches.create(model=MODEL, src=src)  # the count is used up
    assert job.name is not None
    assert emu.stats.calls[("POST", r.CREATE)] == 2


def test_route_faults_on_other_routes(emu: GeminiBatchEmulator, client: genai.Client) -> None:
    emu.faults.route_rate_limit_counts[f"POST {r.UPLOAD}"] = 1
    with pytest.raises(genai_errors.ClientError) as raised:
        upload(client, lines(1))
    assert raised.value.code == 429
    job = run(client, lines(1))
    emu.faults.route_server_error_counts[f"GET {r.BATCH}"] = 1
    emu.faults.route_unavailable_counts[f"GET {r.DOWNLOAD}"] = 1
    with pytest.raises(genai_errors.ServerError):
        client.batches.get(name=job.name or "")
    with pytest.raises(genai_errors.ServerError) as server_error:
        output(client, job)
    assert server_error.value.code == 503
    assert len(output(client, job)) == 1
    emu.faults.http_server_error_count = 1
    with pytest.raises(genai_errors.ServerError):
        client.batches.list()
    assert list(client.batches.list())


@pytest.mark.parametrize(
    ("knob", "code", "words"),
    [
        ("create_insufficient_quota_count", 429, "quota"),
        ("create_rate_limit_count", 429, "exhausted"),
        ("create_reject_count", 400, "invalid argument"),
    ],
)
def test_create_refusals(
    emu: GeminiBatchEmulator, client: genai.Client, knob: str, code: int, words: str
) -> None:
    src = upload(client, lines(1))
    setattr(emu.faults, knob, 1)
    with pytest.raises(genai_errors.ClientError) as raised:
        client.batches.create(model=MODEL, src=src)
    assert raised.value.code == code
    assert words in (raised.value.message or "")
    assert emu.stats.batches_created == 0


def test_create_recorded_but_connection_dropped(
    emu: GeminiBatchEmulator, client: genai.Client
) -> None:
    src = upload(client, lines(2))
    emu.faults.create_drop_connection_count = 1
    # google-genai's HTTP client (httpx or its fork httpx2) raises RemoteProtocolError
    with pytest.raises(Exception, match="Server disconnected without sending a response"):
        client.batches.create(model=MODEL, src=src, config={"display_name": "lost"})
    (operation,) = emu.batches()
    job = wait(client, operation["name"])
    assert job.state == types.JobState.JOB_STATE_SUCCEEDED
    assert job.display_name == "lost"


def test_create_answer_slower_than_the_client_timeout(emu: GeminiBatchEmulator) -> None:
    client = client_for(emu, timeout=300)  # milliseconds
    src = upload(client, lines(1))
    emu.faults.create_response_delay = 1.0
    with pytest.raises(Exception, match="timed out"):  # httpx(2).ReadTimeout
        client.batches.create(model=MODEL, src=src)
    emu.faults.create_response_delay = 0.0
    assert len(emu.batches()) == 1


@pytest.mark.parametrize("keep", [False, True])
def test_expiry_answers_half_the_lines(
    emu: GeminiBatchEmulator, client: genai.Client, keep: bool
) -> None:
    emu.faults.expire_count = 1
    emu.faults.expire_keeps_output = keep
    job = run(client, lines(10))
    assert job.state == types.JobState.JOB_STATE_EXPIRED
    _, operation = rest(emu, "GET", f"/v1/{job.name}")
    stats = operation["metadata"]["batchStats"]
    assert stats == {
        "requestCount": "10",
        "successfulRequestCount": "5",
        "pendingRequestCount": "5",
    }
    assert operation["error"]["code"] == 4
    if keep:
        assert [row["key"] for row in output(client, job)] == [f"k{i}" for i in range(5)]
    else:
        assert job.dest is None


@pytest.mark.parametrize(
    ("knob", "code"), [("fail_batch_count", 13), ("fail_token_limit_count", 8)]
)
def test_failed_batches(
    emu: GeminiBatchEmulator, client: genai.Client, knob: str, code: int
) -> None:
    setattr(emu.faults, knob, 1)
    job = run(client, lines(3))
    assert job.state == types.JobState.JOB_STATE_FAILED
    assert job.dest is None
    _, operation = rest(emu, "GET", f"/v1/{job.name}")
    assert operation["done"] is True
    assert operation["error"]["code"] == code
    assert "response" not in operation


def test_output_file_delay(emu: GeminiBatchEmulator, client: genai.Client) -> None:
    emu.faults.output_file_delay = 0.3
    job = run(client, lines(1))
    with pytest.raises(genai_errors.ClientError) as raised:
        output(client, job)
    assert raised.value.code == 403
    time.sleep(0.35)
    assert len(output(client, job)) == 1


def test_line_rewrite_and_shuffle(emu: GeminiBatchEmulator, client: genai.Client) -> None:
    emu.faults.line_rewrite = lambda row: None if row["key"] == "k0" else row
    emu.faults.shuffle_output = True
    emu.faults.seed = 3
    answers = output(client, run(client, lines(30)))
    keys = [row["key"] for row in answers]
    assert sorted(keys) == sorted(f"k{i}" for i in range(1, 30))
    assert keys != sorted(keys, key=lambda k: int(k[1:]))
    assert emu.stats.lines_answered["k0"] == 1  # answered, then lost


# -- auth, limits, refusals ---------------------------------------------------------------------


def test_wrong_and_missing_api_key() -> None:
    with GeminiBatchEmulator(api_key="right") as emu:
        wrong = genai.Client(api_key="wrong", http_options=types.HttpOptions(base_url=emu.base_url))
        with pytest.raises(genai_errors.ClientError) as raised:
            wrong.batches.list()
        assert (raised.value.code, raised.value.status) == (400, "INVALID_ARGUMENT")
        assert raised.value.message == "API key not valid. Please pass a valid API key."
        assert raised.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"
        status, body = rest(emu, "GET", "/v1beta/batches", headers={})
        assert (status, body["error"]["status"]) == (403, "PERMISSION_DENIED")
        status, _ = rest(emu, "GET", "/v1beta/batches?key=right", headers={})
        assert status == 200
        assert list(client_for(emu).batches.list()) == []


def test_upload_over_the_size_limit() -> None:
    with GeminiBatchEmulator(limits=gemini_limits(max_upload_bytes=100)) as emu:
        client = client_for(emu)
        with pytest.raises(genai_errors.ClientError) as raised:
            upload(client, lines(10))
        assert raised.value.code == 400
        assert "exceeds" in (raised.value.message or "")
        assert emu.files() == []


def test_create_refuses_bad_input(emu: GeminiBatchEmulator, client: genai.Client) -> None:
    src = upload(client, lines(1))
    with pytest.raises(genai_errors.ClientError) as raised:
        client.batches.create(model="no-such-model", src=src)
    assert raised.value.code == 404
    with pytest.raises(genai_errors.ClientError) as raised:
        client.batches.create(model=MODEL, src="files/missing")
    assert raised.value.code == 403
    with pytest.raises(genai_errors.ClientError) as raised:
        client.batches.create(model=MODEL, src=[{"contents": [{"parts": [{"text": "x"}]}]}])
    assert raised.value.code == 400  # inline requests are not emulated
    status, body = rest(
        emu,
        "POST",
        f"/v1beta/models/{MODEL}:batchGenerateContent",
        {"batch": {"inputConfig": {"fileName": src}, "colour": 1}},
    )
    assert status == 400
    assert 'Unknown name "colour"' in body["error"]["message"]
    assert emu.batches() == []


# -- packaging ----------------------------------------------------------------------------------


def test_cli_prints_the_sdk_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchor.testing.gemini", "--port", "0", "--api-key", "k1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        env = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(2))
        assert env["GEMINI_API_KEY"] == "k1"
        assert env["GOOGLE_GEMINI_BASE_URL"].startswith("http://127.0.0.1:")
        monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert list(genai.Client().batches.list()) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    code = (
        "import sys, batchor.testing.gemini; "
        "sys.exit(any(m.split('.')[0] in ('google', 'httpx', 'pytest') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_usable_without_a_with_block() -> None:
    emu = GeminiBatchEmulator()
    emu.start()
    try:
        data_dir = emu.data_dir
        assert data_dir is not None
        assert emu.environment["GOOGLE_GEMINI_BASE_URL"] == emu.base_url
        assert list(client_for(emu).files.list()) == []
    finally:
        emu.stop()
    assert not data_dir.exists()
    emu.stop()  # idempotent
