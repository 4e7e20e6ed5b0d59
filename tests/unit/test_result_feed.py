"""A result file fed as it downloads: lines judged and applied in chunks, a retried
download passing over what an earlier attempt applied, the bytes copied as they came."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any, BinaryIO, cast

import pytest

from batchor.engine import feed
from batchor.engine.feed import BackgroundCopy, ResultFeed, Tally
from batchor.providers.base import Reply, TransientProviderError
from batchor.stores.base import ItemOutcome


def decode(line: bytes) -> tuple[int, Reply | None] | None:
    seq = int(line)
    return seq, Reply(f"text {seq}", (seq, 1), None, "", False)


def judge(seq: int, reply: Reply) -> ItemOutcome:
    tokens_in, tokens_out = reply.usage or (0, 0)
    return ItemOutcome(
        seq, "completed", reply.text, input_tokens=tokens_in, output_tokens=tokens_out
    )


FILE = b"".join(b"%d\n" % seq for seq in range(1, 41))  # 40 lines, 111 bytes


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("background", [False, True], ids=["copied", "copied-on-a-thread"])
@pytest.mark.parametrize(
    ("cut", "size", "again"), [(50, 7, 5), (60, 13, 64), (3, 1, 111), (111, 111, 9)]
)
def test_a_download_started_over_applies_every_line_once(
    monkeypatch: pytest.MonkeyPatch, cut: int, size: int, again: int, background: bool
) -> None:
    monkeypatch.setattr(feed, "CHUNK", 4)
    applied: list[int] = []

    def apply(chunk: list[ItemOutcome]) -> int:
        applied.extend(o.seq for o in chunk)
        return len(chunk)

    tally = Tally(answered=[])
    copy = io.BytesIO()
    with BackgroundCopy(copy) if background else nullcontext(copy) as dest:
        fed = ResultFeed(decode, judge, apply, "out.jsonl", tally, cast(BinaryIO, dest))
        fed.seek(0)
        fed.truncate()
        for piece in pieces(FILE[:cut], size):  # an attempt cut after ``cut`` bytes
            fed.write(piece)
        fed.seek(0)
        fed.truncate()
        for piece in pieces(FILE, again):
            fed.write(piece)
        fed.end()
    assert sorted(applied) == list(range(1, 41))
    assert len(applied) == 40  # none twice
    assert (tally.tokens_in, tally.tokens_out, tally.changed) == (sum(range(1, 41)), 40, 40)
    assert tally.answered is not None
    assert sorted(tally.answered) == list(range(1, 41))
    assert copy.getvalue() == FILE  # the copy holds the whole file once


def test_a_last_line_without_a_newline_is_applied_at_the_end() -> None:
    applied: list[int] = []
    tally = Tally(answered=None)
    fed = ResultFeed(
        decode, judge, lambda c: applied.extend(o.seq for o in c) or len(c), "f", tally
    )
    fed.write(b"1\n2\n\n3")
    assert applied == []
    fed.end()
    assert applied == [1, 2, 3]
    assert tally.changed == 3


def test_a_file_that_changed_between_attempts_is_judged_again_from_its_first_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(feed, "CHUNK", 4)
    applied: list[int] = []
    tally = Tally(answered=None)
    fed = ResultFeed(
        decode, judge, lambda c: applied.extend(o.seq for o in c) or len(c), "out.jsonl", tally
    )
    fed.seek(0)
    fed.truncate()
    fed.write(FILE[:12])  # lines 1-6: a chunk of 4 applied, up to byte 8
    assert applied == [1, 2, 3, 4]
    fed.seek(0)
    fed.truncate()
    changed = b"10\n" + FILE  # the passed-over 8 bytes no longer end a line
    with pytest.raises(TransientProviderError, match="changed between download attempts"):
        fed.write(changed)
    fed.seek(0)
    fed.truncate()
    fed.write(changed)
    fed.end()
    assert applied[4:] == [10, *range(1, 41)]  # judged again from the first line
    assert (tally.tokens_in, tally.changed) == (10 + sum(range(1, 41)), 4 + 41)


class _Disk(io.BytesIO):
    """A file that records which thread wrote to it, takes ``delay`` seconds a write, and
    fails once it holds ``room`` bytes (a full disk)."""

    def __init__(self, room: int, delay: float = 0.0) -> None:
        super().__init__()
        self.room, self.delay = room, delay
        self.writers: set[str] = set()
        self.writes = 0
        self.failed = threading.Event()

    def write(self, data: Any) -> int:
        self.writers.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.tell() + len(data) > self.room:
            self.failed.set()
            raise OSError(28, "No space left on device")
        self.writes += 1
        return super().write(data)


def test_a_background_copy_writes_every_chunk_in_order_on_its_own_thread() -> None:
    disk = _Disk(room=10**6)
    chunks = [bytes([n]) * (1 + n * 37) for n in range(100)]  # more than it queues
    with BackgroundCopy(disk) as copy:
        for chunk in chunks:
            assert copy.write(chunk) == len(chunk)
    assert disk.getvalue() == b"".join(chunks)
    assert disk.writers == {"batchor-raw-copy"}


def test_a_background_copy_that_cannot_write_raises_on_the_callers_thread() -> None:
    disk = _Disk(room=250)
    before = threading.active_count()

    def copy_all() -> None:
        with BackgroundCopy(disk) as copy:
            for _ in range(10):
                copy.write(b"x" * 100)

    with pytest.raises(OSError, match="No space left"):  # by a later write, or by the exit
        copy_all()
    assert threading.active_count() == before  # the copying thread is gone
    assert disk.getvalue() == b"x" * 200  # nothing written after the failure


def test_a_background_copy_started_over_holds_only_what_came_after() -> None:
    disk = _Disk(room=10**6, delay=0.02)  # a slow disk: the chunks are still waiting
    with BackgroundCopy(disk) as copy:
        for _ in range(3):
            copy.write(b"cut attempt ")
        copy.seek(0)
        copy.truncate()
        copy.write(b"whole file")
    assert disk.getvalue() == b"whole file"


def _download_failing_into(disk: _Disk, then: Callable[[], object] = lambda: None) -> None:
    with BackgroundCopy(disk, "out.jsonl") as copy:
        for _ in range(6):
            copy.write(b"x")
        then()
        raise RuntimeError("download failed")


def test_a_background_copy_left_by_an_error_drops_what_waits_and_logs_its_own(
    caplog: pytest.LogCaptureFixture,
) -> None:
    slow = _Disk(room=10**6, delay=0.05)
    with pytest.raises(RuntimeError, match="download failed"):
        _download_failing_into(slow)
    assert slow.writes < 6  # the copy is thrown away: what still waited was not written

    full = _Disk(room=1)
    with caplog.at_level("WARNING", logger="batchor"), pytest.raises(RuntimeError):
        _download_failing_into(full, then=lambda: full.failed.wait(5))  # the copy failed too
    assert "out.jsonl: writing the kept copy failed too: [Errno 28]" in caplog.text
