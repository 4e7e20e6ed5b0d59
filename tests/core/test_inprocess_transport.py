"""`InProcessBatchTransport` honours the `BatchTransport` contract exactly as the HTTP
SDK transport (``OpenAITransport`` against `OpenAIBatchEmulator`) does: every contract test
runs against both and expects the same answers, exceptions, messages and stats."""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import pytest
from pydantic import BaseModel

from batchor import BatchItem, BatchJob, BatchRunner, OpenAIProviderConfig, PromptParts
from batchor.errors import ProviderAuthError, ProviderError, ProviderQuotaError
from batchor.providers.base import BatchTransport, ProviderBatch, TransientProviderError
from batchor.providers.openai.transport import OpenAITransport
from batchor.testing import EmulatorFaults, EmulatorLimits, EmulatorStats, OpenAIBatchEmulator
from batchor.testing.emulator import batches as batches_module
from batchor.testing.emulator import files as files_module
from batchor.testing.emulator.inprocess import InProcessBatchTransport

MODEL = "gpt-4.1-mini"
CHAT = "/v1/chat/completions"


@dataclass
class Side:
    """One transport under test, with the knobs and counters of the emulator behind it."""

    transport: BatchTransport
    faults: EmulatorFaults
    stats: EmulatorStats


MakeSide = Callable[..., Side]


class Verdict(BaseModel):
    label: Literal["positive", "negative", "neutral"]
    score: float


def http_transport(emu: OpenAIBatchEmulator) -> BatchTransport:
    """The SDK transport against ``emu``, without its own retries (one HTTP call per call)."""
    return OpenAITransport(api_key=emu.api_key, base_url=emu.base_url, max_retries=0)


@pytest.fixture(params=["inprocess", "http"])
def make_side(request: pytest.FixtureRequest) -> Iterator[MakeSide]:
    with contextlib.ExitStack() as stack:

        def make(*, phase_seconds: float = 0.0, limits: EmulatorLimits | None = None) -> Side:
            if request.param == "inprocess":
                local = stack.enter_context(
                    InProcessBatchTransport(phase_seconds=phase_seconds, limits=limits)
                )
                return Side(local, local.faults, local.stats)
            emu = stack.enter_context(
                OpenAIBatchEmulator(phase_seconds=phase_seconds, limits=limits)
            )
            return Side(http_transport(emu), emu.faults, emu.stats)

        yield make


@pytest.fixture
def side(make_side: MakeSide) -> Side:
    return make_side()


def jsonl(n: int, prefix: str = "req") -> io.BytesIO:
    lines = [
        json.dumps(
            {
                "custom_id": f"{prefix}-{i}",
                "method": "POST",
                "url": CHAT,
                "body": {"model": MODEL, "messages": [{"role": "user", "content": f"hi {i}"}]},
            }
        )
        for i in range(n)
    ]
    return io.BytesIO(("\n".join(lines) + "\n").encode())


def wait(transport: BatchTransport, batch_id: str, timeout: float = 20.0) -> ProviderBatch:
    deadline = time.monotonic() + timeout
    while True:
        batch = transport.retrieve_batch(batch_id)
        if batch.is_terminal:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.01)


def download(transport: BatchTransport, file_id: str) -> list[dict[str, Any]]:
    dest = io.BytesIO()
    written = transport.download_file(file_id, dest)
    assert written == len(dest.getvalue())
    return [json.loads(row) for row in dest.getvalue().splitlines()]


def ticking_clock(module: Any, monkeypatch: pytest.MonkeyPatch, start: int = 1_000) -> None:
    """Make ``module`` see a wall clock that moves 1000 s per reading (monotonic untouched)."""
    ticks = iter(range(start, 10**9, 1_000))
    fake = SimpleNamespace(time=lambda: next(ticks), monotonic=time.monotonic, sleep=time.sleep)
    monkeypatch.setattr(module, "time", fake)


# -- the contract, on both transports -----------------------------------------------------------


def test_round_trip(side: Side) -> None:
    t = side.transport
    t.check_credentials()
    file_id = t.upload_file(jsonl(3), "run-1.jsonl")
    created = t.create_batch(file_id, CHAT, {"batchor_run": "r1"})
    assert (created.status, created.input_file_id) == ("validating", file_id)
    assert created.metadata == {"batchor_run": "r1"}
    assert created.created_at > 0

    done = wait(t, created.id)
    assert done.status == "completed"
    assert (done.error_file_id, done.errors) == (None, ())
    assert done.output_file_id is not None
    dest = io.BytesIO(b"stale bytes that must go")
    t.download_file(done.output_file_id, dest)
    rows = [json.loads(row) for row in dest.getvalue().splitlines()]
    assert sorted(r["custom_id"] for r in rows) == ["req-0", "req-1", "req-2"]
    assert {r["response"]["status_code"] for r in rows} == {200}

    calls = side.stats.calls
    assert calls[("POST", "/v1/files")] == 1
    assert calls[("POST", "/v1/batches")] == 1
    assert calls[("GET", "/v1/files/{id}/content")] == 1
    assert side.stats.batches_by_metadata("batchor_run") == {"r1": 1}
    assert sum(side.stats.lines_answered.values()) == 3


def test_find_uploads_newest_first_and_cut(side: Side, monkeypatch: pytest.MonkeyPatch) -> None:
    ticking_clock(files_module, monkeypatch)  # uploads at 1000, 2000, 3000, 4000
    t = side.transport
    first = t.upload_file(jsonl(1), "a.jsonl")
    t.upload_file(jsonl(1), "b.jsonl")
    third = t.upload_file(jsonl(1), "a.jsonl")
    fourth = t.upload_file(jsonl(1), "a.jsonl")
    assert t.find_uploads("a.jsonl", 0) == [fourth, third, first]
    assert t.find_uploads("a.jsonl", 2_500) == [fourth, third]
    assert t.find_uploads("c.jsonl", 0) == []
    assert t.find_uploads("a.jsonl", 9_999) == []


# Over HTTP, a hundred calls take seconds: the HTTP side of the paging tests is slow.
BOTH_SLOW_HTTP = pytest.mark.parametrize(
    "make_side", ["inprocess", pytest.param("http", marks=pytest.mark.slow)], indirect=True
)


@BOTH_SLOW_HTTP
def test_find_uploads_pages(side: Side) -> None:
    t = side.transport
    ids = [t.upload_file(io.BytesIO(b"{}\n"), "same.jsonl") for _ in range(105)]
    before = side.stats.calls[("GET", "/v1/files")]
    assert t.find_uploads("same.jsonl", 0) == ids[::-1]
    assert side.stats.calls[("GET", "/v1/files")] - before == 2  # pages of 100


def test_list_batches_newest_first_until_created_after(
    side: Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticking_clock(batches_module, monkeypatch)  # batches at 1000, 2000, 3000
    t = side.transport
    file_id = t.upload_file(jsonl(1), "in.jsonl")
    made = [t.create_batch(file_id, CHAT, {"n": str(i)}).id for i in range(3)]
    assert [b.id for b in t.list_batches(0)] == made[::-1]
    assert [b.id for b in t.list_batches(1_500)] == [made[2], made[1]]
    assert list(t.list_batches(10**9)) == []
    listed = next(iter(t.list_batches(0)))
    assert (listed.metadata, listed.input_file_id, listed.created_at) == ({"n": "2"}, file_id, 3000)


@BOTH_SLOW_HTTP
def test_list_batches_pages(side: Side) -> None:
    t = side.transport
    file_id = t.upload_file(jsonl(1), "in.jsonl")
    made = [t.create_batch(file_id, CHAT, {}).id for _ in range(102)]
    before = side.stats.calls[("GET", "/v1/batches")]
    assert [b.id for b in t.list_batches(0)] == made[::-1]
    assert side.stats.calls[("GET", "/v1/batches")] - before == 2


def test_cancel(make_side: MakeSide) -> None:
    side = make_side(phase_seconds=0.5)
    t = side.transport
    batch = t.create_batch(t.upload_file(jsonl(2), "in.jsonl"), CHAT, {})
    # Let the worker validate the batch first: a batch cancelled before that (possible in
    # process, where calls take no time) ends with no error file, having read no line.
    time.sleep(0.15)
    cancelling = t.cancel_batch(batch.id)
    assert (cancelling.id, cancelling.status) == (batch.id, "cancelling")
    assert t.cancel_batch(batch.id).status == "cancelling"  # asking again is fine
    done = wait(t, batch.id)
    assert done.status == "cancelled"
    assert done.error_file_id is not None
    codes = {r["error"]["code"] for r in download(t, done.error_file_id)}
    assert codes == {"batch_cancelled"}
    with pytest.raises(TransientProviderError, match=r"HTTP 409: .*status 'cancelled'"):
        t.cancel_batch(batch.id)  # 409, which the HTTP transport reports as transient
    with pytest.raises(ProviderError, match="HTTP 404") as caught:
        t.cancel_batch("batch_nope")
    assert not isinstance(caught.value, TransientProviderError)


def test_delete_file(side: Side) -> None:
    t = side.transport
    file_id = t.upload_file(jsonl(1), "in.jsonl")
    t.delete_file(file_id)
    t.delete_file(file_id)  # already gone: fine
    t.delete_file("file-nope")
    assert t.find_uploads("in.jsonl", 0) == []
    assert side.stats.calls[("DELETE", "/v1/files/{id}")] == 3
    with pytest.raises(ValueError, match="non-empty"):
        t.delete_file("")


@pytest.mark.parametrize(
    ("input_file_id", "endpoint", "metadata", "message"),
    [
        (
            "file-nope",
            CHAT,
            {},
            "provider answered HTTP 404: Error code: 404 - No such File object: file-nope",
        ),
        (None, "/v1/moderations", {}, "HTTP 400: Error code: 400 - Invalid value: '/v1/moder"),
        (None, CHAT, {f"k{i}": "v" for i in range(17)}, "HTTP 400: .* too many properties"),
        (None, CHAT, {"k": "v" * 513}, "HTTP 400: .*'metadata.k': string too long"),
    ],
)
def test_create_refused(
    side: Side, input_file_id: str | None, endpoint: str, metadata: dict[str, str], message: str
) -> None:
    t = side.transport
    file_id = input_file_id or t.upload_file(jsonl(1), "in.jsonl")
    with pytest.raises(ProviderError, match=message) as caught:
        t.create_batch(file_id, endpoint, metadata)
    assert type(caught.value) is ProviderError
    assert side.stats.batches_created == 0
    assert side.stats.calls[("POST", "/v1/batches")] == 1


def test_invalid_input_lines_fail_the_batch(side: Side) -> None:
    t = side.transport
    file_id = t.upload_file(io.BytesIO(b"not json\n"), "in.jsonl")
    done = wait(t, t.create_batch(file_id, CHAT, {}).id)
    assert done.status == "failed"
    assert [code for code, _ in done.errors][:1] == ["invalid_json_line"]


def test_upload_too_large(make_side: MakeSide) -> None:
    side = make_side(limits=EmulatorLimits(max_upload_bytes=10))
    with pytest.raises(ProviderError, match=r"HTTP 400: .*File is too large: 11 bytes") as caught:
        side.transport.upload_file(io.BytesIO(b"x" * 11), "in.jsonl")
    assert type(caught.value) is ProviderError
    assert side.transport.find_uploads("in.jsonl", 0) == []


def test_route_server_error_is_transient(side: Side) -> None:
    t = side.transport
    batch = t.create_batch(t.upload_file(jsonl(1), "in.jsonl"), CHAT, {})
    side.faults.route_server_error_counts["GET /v1/batches/{id}"] = 1
    message = "HTTP 500: Error code: 500 - The server had an error"
    with pytest.raises(TransientProviderError, match=message):
        t.retrieve_batch(batch.id)
    assert t.retrieve_batch(batch.id).id == batch.id  # the count is used up
    assert side.stats.calls[("GET", "/v1/batches/{id}")] == 2
    side.faults.http_server_error_count = 1
    with pytest.raises(TransientProviderError, match=message):
        t.upload_file(jsonl(1), "in.jsonl")
    assert len(t.find_uploads("in.jsonl", 0)) == 1


def test_create_faults(side: Side) -> None:
    t = side.transport
    file_id = t.upload_file(jsonl(1), "in.jsonl")
    side.faults.create_insufficient_quota_count = 1
    side.faults.create_rate_limit_count = 1
    side.faults.create_reject_count = 1
    with pytest.raises(ProviderQuotaError, match=r"^insufficient_quota: Error code: 429 - You "):
        t.create_batch(file_id, CHAT, {})
    with pytest.raises(TransientProviderError, match=r"HTTP 429: .*Rate limit reached"):
        t.create_batch(file_id, CHAT, {})
    with pytest.raises(ProviderError, match=r"HTTP 400: .*refused") as caught:
        t.create_batch(file_id, CHAT, {})
    assert type(caught.value) is ProviderError
    assert side.stats.batches_created == 0
    assert t.create_batch(file_id, CHAT, {}).status == "validating"
    assert side.stats.calls[("POST", "/v1/batches")] == 4


def test_download_unknown_or_not_yet_served(side: Side) -> None:
    t = side.transport
    with pytest.raises(TransientProviderError, match=r"^file file-nope is not available yet$"):
        t.download_file("file-nope", io.BytesIO())
    side.faults.output_file_delay = 0.4
    done = wait(t, t.create_batch(t.upload_file(jsonl(1), "in.jsonl"), CHAT, {}).id)
    assert done.output_file_id is not None
    with pytest.raises(TransientProviderError, match="not available yet"):
        t.download_file(done.output_file_id, io.BytesIO())
    time.sleep(0.4)
    assert [r["custom_id"] for r in download(t, done.output_file_id)] == ["req-0"]


def test_uploaded_bytes_download_unchanged(side: Side) -> None:
    t = side.transport
    data = jsonl(50).getvalue()
    content = io.BytesIO(data)
    content.read(7)  # the upload starts from the beginning whatever the position
    file_id = t.upload_file(content, "in.jsonl")
    dest = io.BytesIO()
    assert t.download_file(file_id, dest) == len(data)
    assert dest.getvalue() == data


def _failures(side: Side) -> list[tuple[type[BaseException], str]]:
    """The exception each of a dozen failing calls raises."""
    t, faults = side.transport, side.faults
    file_id = t.upload_file(jsonl(1), "in.jsonl")
    done = wait(t, t.create_batch(file_id, CHAT, {}).id)
    seen: list[tuple[type[BaseException], str]] = []

    def failure(call: Callable[[], object]) -> None:
        with pytest.raises(ProviderError) as caught:
            call()
        seen.append((type(caught.value), str(caught.value)))

    for knob in (
        "create_insufficient_quota_count",
        "create_rate_limit_count",
        "create_reject_count",
    ):
        setattr(faults, knob, 1)
        failure(lambda: t.create_batch(file_id, CHAT, {}))
    faults.route_server_error_counts["GET /v1/batches"] = 1
    failure(lambda: list(t.list_batches(0)))
    failure(lambda: t.create_batch("file-x", CHAT, {}))
    failure(lambda: t.create_batch(file_id, "/v1/x", {}))
    failure(lambda: t.create_batch(file_id, CHAT, {"k": "v" * 600}))
    failure(lambda: t.retrieve_batch("batch_x"))
    failure(lambda: t.cancel_batch("batch_x"))
    failure(lambda: t.cancel_batch(done.id))
    failure(lambda: t.download_file("file-x", io.BytesIO()))
    failure(lambda: t.upload_file(io.BytesIO(b"x" * 201), "big.jsonl"))
    return seen


def test_same_errors_word_for_word() -> None:
    limits = EmulatorLimits(max_upload_bytes=200)
    with (
        InProcessBatchTransport(limits=limits) as local,
        OpenAIBatchEmulator(limits=limits) as emu,
    ):
        in_process = _failures(Side(local, local.faults, local.stats))
        over_http = _failures(Side(http_transport(emu), emu.faults, emu.stats))
    assert in_process == over_http
    assert [kind.__name__ for kind, _ in in_process] == [
        "ProviderQuotaError",
        "TransientProviderError",  # 429 rate limit
        "ProviderError",  # 400 refused
        "TransientProviderError",  # 500
        "ProviderError",  # 404 input file
        "ProviderError",  # 400 endpoint
        "ProviderError",  # 400 metadata
        "ProviderError",  # 404 batch
        "ProviderError",  # 404 batch
        "TransientProviderError",  # 409 not cancellable
        "TransientProviderError",  # 404 file: not available yet
        "ProviderError",  # 400 too large
    ]


# -- the in-process transport itself ------------------------------------------------------------


def test_no_socket_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a socket was opened")

    monkeypatch.setattr(socket, "socket", refuse)
    with InProcessBatchTransport() as t:
        done = wait(t, t.create_batch(t.upload_file(jsonl(2), "in.jsonl"), CHAT, {}).id)
        assert done.output_file_id is not None
        assert len(download(t, done.output_file_id)) == 2
        assert [b["id"] for b in t.batches()] == [done.id]
        assert [f["purpose"] for f in t.files()] == ["batch", "batch_output"]


def test_lifecycle(tmp_path: Path) -> None:
    t = InProcessBatchTransport()
    assert (t.data_dir, t.batches(), t.files()) == (None, [], [])
    with pytest.raises(RuntimeError, match="not running"):
        t.upload_file(jsonl(1), "in.jsonl")
    with t:
        temp = t.data_dir
        assert temp is not None
        assert temp.is_dir()
        t.upload_file(jsonl(1), "in.jsonl")
        with pytest.raises(RuntimeError, match="already started"):
            t.start()
    assert not temp.exists()
    assert len(t.files()) == 1  # what happened stays readable
    with pytest.raises(RuntimeError, match="not running"):
        t.retrieve_batch("batch_x")
    t.stop()  # again: nothing to do

    kept = tmp_path / "data"
    with InProcessBatchTransport(data_dir=kept) as t2:
        t2.upload_file(jsonl(1), "in.jsonl")
    assert len(list(kept.iterdir())) == 1


def test_errors_are_the_port_errors() -> None:
    with InProcessBatchTransport(faults=EmulatorFaults(http_server_error_count=1)) as t:
        t.check_credentials()  # no key needed, no call made
        with pytest.raises(TransientProviderError) as caught:
            t.find_uploads("x", 0)
        assert isinstance(caught.value, ProviderError)
        assert not isinstance(caught.value, ProviderAuthError)
        assert t.faults.http_server_error_count == 0


def test_whole_run_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    if "provider" not in inspect.signature(BatchRunner).parameters:
        pytest.skip("BatchRunner(provider=...) is not there yet")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # no key needed
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a socket was opened")

    items = [BatchItem(item_id=f"i{i}", payload={"text": f"review {i}"}) for i in range(5)]
    job = BatchJob(
        items=items,
        build_prompt=lambda item: PromptParts(prompt=str(item.payload["text"])),
        provider_config=OpenAIProviderConfig(model=MODEL),
        structured_output=Verdict,
    )
    artifacts = f"memory://inprocess-{uuid.uuid4().hex}/artifacts"
    with (
        InProcessBatchTransport() as transport,
        BatchRunner(store="memory://", artifacts=artifacts, provider=transport) as runner,
    ):
        monkeypatch.setattr(socket, "socket", refuse)
        run = runner.start(job)
        summary = run.wait(timeout=60, poll_interval=0.02)
        assert summary.completed == 5
        outputs = [result.output for result in run.results()]
    assert all(isinstance(output, Verdict) for output in outputs)
    assert transport.stats.batches_created == 1
