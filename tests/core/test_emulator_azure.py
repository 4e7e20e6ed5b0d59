"""The emulator in Azure OpenAI's URL shape, driven by the real ``openai.AzureOpenAI`` client."""

from __future__ import annotations

import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any, Final, cast

import openai
import pytest
from openai import AzureOpenAI, OpenAI
from openai.types import Batch
from openai.types.chat import ChatCompletion

from batchor.testing import EmulatorLimits, OpenAIBatchEmulator

API_VERSION: Final = "2024-10-21"
"""Azure OpenAI's latest GA data-plane API version that serves global batch."""
DEPLOYMENT: Final = "gpt-4o-mini-batch"
"""A Global-Batch deployment name: Azure batch lines name it as their ``model``."""
AZURE_CHAT: Final = "/chat/completions"
"""Azure's batch endpoint string (no ``/v1``)."""
OPENAI_CHAT: Final = "/v1/chat/completions"
AZURE_LIMITS: Final = EmulatorLimits(max_batch_lines=100_000, max_batch_input_bytes=200 * 2**20)
"""Azure's documented global batch limits: 100,000 requests and 200 MB per input file."""
TERMINAL = ("completed", "failed", "expired", "cancelled")


# -- helpers ------------------------------------------------------------------------------------


def azure_for(emu: OpenAIBatchEmulator, **kwargs: Any) -> AzureOpenAI:
    options: dict[str, Any] = {
        "api_key": emu.api_key,
        "api_version": API_VERSION,
        "max_retries": 0,
        "timeout": 30.0,
        **kwargs,
    }
    return AzureOpenAI(azure_endpoint=emu.azure_endpoint, **options)


def azure_line(custom_id: str, prompt: str, url: str = AZURE_CHAT) -> str:
    body = {"model": DEPLOYMENT, "messages": [{"role": "user", "content": prompt}]}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def upload(client: OpenAI, lines: list[str], purpose: str = "batch") -> str:
    data = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose=cast(Any, purpose)).id


def create(client: OpenAI, lines: list[str], endpoint: str) -> Batch:
    return client.batches.create(
        input_file_id=upload(client, lines),
        endpoint=cast(Any, endpoint),
        completion_window="24h",
    )


def wait(client: OpenAI, batch_id: str, timeout: float = 30.0) -> Batch:
    deadline = time.monotonic() + timeout
    while (batch := client.batches.retrieve(batch_id)).status not in TERMINAL:
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.02)
    return batch


def read_jsonl(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]


def raw_call(
    url: str, headers: dict[str, str], method: str = "GET"
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """``(status, JSON body, headers)`` of a plain HTTP request, errors included."""
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


@pytest.fixture
def emu(openai_emulator: OpenAIBatchEmulator) -> OpenAIBatchEmulator:
    return openai_emulator


@pytest.fixture
def azure(emu: OpenAIBatchEmulator) -> Iterator[AzureOpenAI]:
    with azure_for(emu) as client:
        yield client


# -- URL shape ----------------------------------------------------------------------------------


def test_azure_endpoint_and_the_requests_the_sdk_sends(
    emu: OpenAIBatchEmulator, azure: AzureOpenAI
) -> None:
    assert emu.azure_endpoint == f"http://127.0.0.1:{emu.port}"
    assert emu.azure_v1_base_url == f"http://127.0.0.1:{emu.port}/openai/v1"
    assert emu.base_url == f"http://127.0.0.1:{emu.port}/v1"
    with pytest.raises(RuntimeError):
        _ = OpenAIBatchEmulator().azure_endpoint
    raw = azure.files.with_raw_response.list()
    sent = raw.http_request
    assert sent.url.path == "/openai/files"
    assert dict(sent.url.params) == {"api-version": API_VERSION}
    assert sent.headers["api-key"] == emu.api_key
    assert "authorization" not in sent.headers
    assert raw.http_response.headers["apim-request-id"]
    assert raw.parse().data == []
    assert emu.stats.calls[("GET", "/openai/files")] == 1
    assert ("GET", "/v1/files") not in emu.stats.calls


def test_files_upload_list_retrieve_content_delete(
    emu: OpenAIBatchEmulator, azure: AzureOpenAI
) -> None:
    a = upload(azure, ["{}"])
    b = upload(azure, ['{"b": 1}'], purpose="user_data")
    assert [f.id for f in azure.files.list()] == [b, a]
    assert [f.id for f in azure.files.list(purpose="batch")] == [a]
    stored = azure.files.retrieve(a)
    assert (stored.bytes, stored.purpose, stored.status) == (3, "batch", "processed")
    assert azure.files.content(a).content == b"{}\n"
    assert azure.files.delete(a).deleted
    with pytest.raises(openai.NotFoundError):
        azure.files.retrieve(a)
    assert [f["id"] for f in emu.files()] == [b]
    assert emu.stats.calls[("POST", "/openai/files")] == 2
    assert emu.stats.calls[("GET", "/openai/files/{id}/content")] == 1
    assert emu.stats.calls[("DELETE", "/openai/files/{id}")] == 1


# -- batches ------------------------------------------------------------------------------------


def test_chat_batch_round_trip_in_azure_form() -> None:
    """Azure batch lines: ``url`` without ``/v1`` and the deployment name as ``model``."""
    with OpenAIBatchEmulator(limits=AZURE_LIMITS) as emu, azure_for(emu) as azure:
        lines = [azure_line(f"task-{i}", f"question {i}") for i in range(3)]
        batch = create(azure, lines, AZURE_CHAT)
        assert batch.status == "validating"
        assert batch.endpoint == AZURE_CHAT
        done = wait(azure, batch.id)
        assert done.status == "completed", done.errors
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed) == (3, 3)
        rows = {row["custom_id"]: row for row in read_jsonl(azure, done.output_file_id)}
        assert sorted(rows) == ["task-0", "task-1", "task-2"]
        for row in rows.values():
            assert row["error"] is None
            assert row["response"]["status_code"] == 200
            reply = ChatCompletion.model_validate(row["response"]["body"])
            assert reply.choices[0].message.content
        assert emu.stats.calls[("POST", "/openai/batches")] == 1
        assert emu.stats.calls[("GET", "/openai/batches/{id}")] >= 1


def test_batch_lifecycle_over_azure_urls(emu: OpenAIBatchEmulator, azure: AzureOpenAI) -> None:
    lines = [azure_line(f"r{i}", f"q{i}", url=OPENAI_CHAT) for i in range(4)]
    done = wait(azure, create(azure, lines, OPENAI_CHAT).id)
    assert done.status == "completed"
    assert done.expires_at == done.created_at + 24 * 3600
    assert len(read_jsonl(azure, done.output_file_id)) == 4
    assert [b["id"] for b in emu.batches()] == [done.id]


def test_list_batches_pages_newest_first(azure: AzureOpenAI) -> None:
    file_id = upload(azure, [azure_line("r0", "q0", url=OPENAI_CHAT)])
    ids = [
        azure.batches.create(
            input_file_id=file_id, endpoint=OPENAI_CHAT, completion_window="24h"
        ).id
        for _ in range(5)
    ]
    newest_first = ids[::-1]
    page = azure.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2]
    assert page.has_more
    after = azure.batches.with_raw_response.list(limit=2, after=newest_first[1])
    assert dict(after.http_request.url.params) == {
        "limit": "2",
        "after": newest_first[1],
        "api-version": API_VERSION,
    }
    assert [b.id for b in after.parse().data] == newest_first[2:4]
    assert [b.id for b in azure.batches.list(limit=2)] == newest_first  # auto-pagination


def test_cancel() -> None:
    with OpenAIBatchEmulator(phase_seconds=0.3) as emu, azure_for(emu) as azure:
        batch = create(azure, [azure_line("r0", "q0", url=OPENAI_CHAT)], OPENAI_CHAT)
        cancelling = azure.batches.cancel(batch.id)
        assert cancelling.status == "cancelling"
        assert wait(azure, batch.id).status == "cancelled"
        with pytest.raises(openai.ConflictError):
            azure.batches.cancel(batch.id)
        assert emu.stats.calls[("POST", "/openai/batches/{id}/cancel")] == 2


def test_azure_limits_admit_more_lines_than_openai() -> None:
    lines = [azure_line(f"r{i}", f"q{i}", url=OPENAI_CHAT) for i in range(50_001)]
    with OpenAIBatchEmulator() as emu, azure_for(emu) as azure:
        failed = wait(azure, create(azure, lines, OPENAI_CHAT).id)
        assert failed.status == "failed"
        assert failed.errors is not None
        assert failed.errors.data
        assert failed.errors.data[0].code == "too_many_tasks"
    with OpenAIBatchEmulator(limits=AZURE_LIMITS) as emu, azure_for(emu) as azure:
        done = wait(azure, create(azure, lines, OPENAI_CHAT).id)
        assert done.status == "completed"
        assert done.request_counts is not None
        assert done.request_counts.completed == 50_001


# -- auth and gateway errors --------------------------------------------------------------------


def test_wrong_key_gets_azures_401() -> None:
    with OpenAIBatchEmulator(api_key="azure-secret") as emu:
        with pytest.raises(openai.AuthenticationError) as info:
            azure_for(emu, api_key="wrong").files.list()
        assert info.value.body == {
            "code": "401",
            "message": "Access denied due to invalid subscription key or wrong API endpoint. "
            "Make sure to provide a valid key for an active subscription and use a correct "
            "regional API endpoint for your resource.",
        }
        assert azure_for(emu).files.list().data == []
        # An Entra ID token comes as a bearer token: the emulator's key stands in for one.
        token = AzureOpenAI(
            azure_endpoint=emu.azure_endpoint,
            azure_ad_token="azure-secret",
            api_version=API_VERSION,
            max_retries=0,
        )
        raw = token.files.with_raw_response.list()
        assert raw.http_request.headers["authorization"] == "Bearer azure-secret"
        expired = AzureOpenAI(
            azure_endpoint=emu.azure_endpoint,
            azure_ad_token="expired",
            api_version=API_VERSION,
            max_retries=0,
        )
        with pytest.raises(openai.AuthenticationError) as info:
            expired.files.list()
        assert cast(dict[str, Any], info.value.body)["statusCode"] == 401
        status, body, _ = raw_call(
            emu.azure_endpoint + f"/openai/files?api-version={API_VERSION}", {}
        )
        assert status == 401
        assert body["error"]["code"] == "401"
        assert "missing subscription key" in body["error"]["message"]
        # The OpenAI shape keeps OpenAI's auth: an api-key header is not a bearer token.
        status, body, _ = raw_call(emu.base_url + "/files", {"api-key": "azure-secret"})
        assert (status, body["error"]["type"]) == (401, "invalid_request_error")


def test_missing_or_bad_api_version(emu: OpenAIBatchEmulator) -> None:
    key = {"api-key": emu.api_key}
    status, body, _ = raw_call(emu.azure_endpoint + "/openai/files", key)
    assert (status, body) == (404, {"error": {"code": "404", "message": "Resource not found"}})
    status, body, _ = raw_call(emu.azure_endpoint + "/openai/batches/batch_x", key)
    assert (status, body["error"]["code"]) == (404, "404")
    # Through the SDK: a client whose requests carry no api-version.
    bare = OpenAI(
        base_url=emu.azure_endpoint + "/openai",
        api_key="unused",
        default_headers={"api-key": emu.api_key},
        max_retries=0,
    )
    with pytest.raises(openai.NotFoundError) as info:
        bare.batches.list()
    assert info.value.body == {"code": "404", "message": "Resource not found"}
    with pytest.raises(openai.BadRequestError) as bad:
        azure_for(emu, api_version="banana").files.list()
    assert bad.value.body == {"code": "BadRequest", "message": "API version not supported"}
    status, body, _ = raw_call(
        emu.azure_endpoint + f"/openai/nothing-here?api-version={API_VERSION}", key
    )
    assert (status, body["error"]["message"]) == (404, "Resource not found")
    assert emu.stats.calls[("GET", "/openai/files")] == 2


# -- one emulator, every shape ------------------------------------------------------------------


def test_openai_azure_and_azure_v1_shapes_share_one_emulator(
    emu: OpenAIBatchEmulator, azure: AzureOpenAI
) -> None:
    openai_client = OpenAI(base_url=emu.base_url, api_key=emu.api_key, max_retries=0)
    v1_client = OpenAI(base_url=emu.azure_v1_base_url, api_key=emu.api_key, max_retries=0)
    from_openai = upload(openai_client, ["{}"])
    from_azure = upload(azure, ["{}"])
    from_v1 = upload(v1_client, ["{}"])
    expected = [from_v1, from_azure, from_openai]
    for client in (openai_client, azure, v1_client):
        assert [f.id for f in client.files.list()] == expected
    v1_batch = create(v1_client, [azure_line("r0", "q0", url=OPENAI_CHAT)], OPENAI_CHAT)
    assert azure.batches.retrieve(v1_batch.id).id == v1_batch.id
    assert wait(openai_client, v1_batch.id).status == "completed"
    calls = emu.stats.calls
    assert calls[("POST", "/v1/files")] == calls[("POST", "/openai/files")] == 1
    assert (calls[("POST", "/openai/v1/files")], calls[("POST", "/openai/v1/batches")]) == (2, 1)
    assert calls[("GET", "/openai/batches/{id}")] == 1
