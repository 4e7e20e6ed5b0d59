"""The floor: the least work any durable runner must do for `throughput.py`'s job.

A careful hand-written runner, not batchor: it reads the same JSONL source, writes each
batch's request JSONL once (the same bytes batchor sends) and one SQLite row per item (WAL,
one table, ``executemany`` in chunks of 5,000, one transaction each), uploads the file and
creates the batch (50,000 requests a batch) through the real `openai` client against the same
emulator (answering at once, in a child process), polls as `throughput.py`'s run does, streams
each output file, validates every reply with the same Pydantic model, and records each
outcome on its row (``executemany`` in chunks). Nothing batchor need not do (no retries, no
resume, no crash safety beyond one durable row per item and its result); nothing it must do
is skipped. Like batchor, it sends nothing until the whole source is read (docs/how-to/
sources.md: a source found invalid half-way sends nothing); ``--overlap`` is the floor
without that guarantee, submitting each batch while the rest of the source is read. The timer
starts before ``import openai``, as batchor's first use of it falls in its own run. Run by
hand (`throughput.py --floor` runs it beside batchor):

    uv run python bench/floor.py                 # 100,000 items
    uv run python bench/floor.py --items 1000000 --profile floor.prof
    uv run python bench/floor.py --overlap       # batches sent while the source is read
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from _common import BATCH_SIZE, MAX_POLL_INTERVAL, POLL_INTERVAL, Emulator, Label, write_items
from pydantic import ValidationError

CHUNK = 5_000  # rows per transaction, at ingest and at collect
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
MODEL = "gpt-4.1-mini"
ENDPOINT = "/v1/responses"
HEAD = b'{"custom_id":"%d","method":"POST","url":"/v1/responses","body":{"model":"gpt-4.1-mini"'

SCHEMA = """CREATE TABLE items (
    seq INTEGER PRIMARY KEY,  -- the request's custom_id
    item_id TEXT NOT NULL,
    batch INTEGER NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER,
    error TEXT
)"""
INSERT = "INSERT INTO items (seq, item_id, batch, status) VALUES (?, ?, ?, 'submitted')"
COMPLETE = (
    "UPDATE items SET status = 'completed', output = ?, input_tokens = ?, output_tokens = ? "
    "WHERE seq = ?"
)
FAIL = "UPDATE items SET status = 'failed', error = ? WHERE seq = ?"


def request_tail() -> bytes:
    """Everything of a request line after its prompt: the strict structured-output format."""
    schema = Label.model_json_schema()
    schema["additionalProperties"] = False
    text = {"format": {"type": "json_schema", "name": "Label", "schema": schema, "strict": True}}
    return b',"text":' + orjson.dumps(text) + b"}}\n"


def open_db(path: Path) -> sqlite3.Connection:
    """The one-table SQLite store, in WAL mode with batchor's durability settings."""
    db = sqlite3.connect(path, isolation_level=None)  # transactions are explicit
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute(SCHEMA)
    return db


def write_rows(db: sqlite3.Connection, sql: str, rows: list[Any]) -> int:
    """``executemany`` in one transaction; the rows it changed."""
    db.execute("BEGIN")
    changed = db.executemany(sql, rows).rowcount
    db.execute("COMMIT")
    return changed


def submit(client: Any, path: Path) -> str:
    """Upload one request file and create its batch; the provider's batch id."""
    with open(path, "rb") as fh:
        uploaded = client.files.create(file=(path.name, fh, "application/jsonl"), purpose="batch")
    created = client.batches.create(
        input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
    )
    return str(created.id)


def ingest(
    client: Any, db: sqlite3.Connection, source: Path, workdir: Path, *, overlap: bool = False
) -> list[str]:
    """Source -> request files and rows. Every batch is submitted once the whole source is
    read (batchor's guarantee: a bad row anywhere sends nothing); with ``overlap``, each
    batch as soon as its rows are durable, while the rest is read."""
    head, tail, dumps, loads = HEAD, request_tail(), orjson.dumps, orjson.loads
    batch_ids: list[str] = []
    cut: list[Path] = []  # batches written, not yet submitted (without overlap)
    rows: list[tuple[int, str, int]] = []
    seq = 0
    batch = 0
    path = workdir / "batch-0.jsonl"
    out = open(path, "wb")  # noqa: SIM115 (one file a batch, closed as the batch is cut)
    with open(source, "rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            record = loads(raw)
            seq += 1
            out.write(head % seq + b',"input":' + dumps(record["text"]) + tail)
            rows.append((seq, str(record["id"]), batch))
            if len(rows) == CHUNK:
                write_rows(db, INSERT, rows)
                rows = []
            if seq % BATCH_SIZE == 0:
                write_rows(db, INSERT, rows)
                rows = []
                out.close()
                if overlap:
                    batch_ids.append(submit(client, path))
                else:
                    cut.append(path)
                batch += 1
                path = workdir / f"batch-{batch}.jsonl"
                out = open(path, "wb")  # noqa: SIM115
    out.close()
    if seq % BATCH_SIZE:
        write_rows(db, INSERT, rows)
        cut.append(path)
    batch_ids.extend(submit(client, p) for p in cut)
    return batch_ids


def collect_file(client: Any, db: sqlite3.Connection, file_id: str) -> tuple[int, int]:
    """Stream one output or error file, validate each reply, record it; (completed, failed)."""
    loads, validate = orjson.loads, Label.__pydantic_validator__.validate_json
    done: list[tuple[str, int, int, int]] = []
    failed: list[tuple[str, int]] = []
    counts = [0, 0]

    def flush() -> None:
        db.execute("BEGIN")
        counts[0] += db.executemany(COMPLETE, done).rowcount if done else 0
        counts[1] += db.executemany(FAIL, failed).rowcount if failed else 0
        db.execute("COMMIT")
        done.clear()
        failed.clear()

    def one(line: bytes) -> None:
        if not line.strip():
            return
        record = loads(line)
        seq = int(record["custom_id"])
        response = record.get("response") or {}
        body = response.get("body")
        if (
            response.get("status_code") != 200
            or type(body) is not dict
            or body.get("status") != "completed"
        ):
            failed.append((orjson.dumps(record.get("error") or body).decode()[:2000], seq))
            return
        try:
            text = body["output"][0]["content"][0]["text"]
            validate(text)
        except (KeyError, IndexError, TypeError, ValidationError) as exc:
            failed.append((f"{type(exc).__name__}: {exc}"[:2000], seq))
            return
        usage = body["usage"]
        done.append((text, usage["input_tokens"], usage["output_tokens"], seq))
        if len(done) >= CHUNK:
            flush()

    with client.files.with_streaming_response.content(file_id) as response:
        rest = b""
        for chunk in response.iter_bytes(1 << 20):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                one(line)
        one(rest)
    flush()
    return counts[0], counts[1]


def poll_and_collect(client: Any, db: sqlite3.Connection, batch_ids: list[str]) -> list[int]:
    """Poll every open batch, collect each as it ends; [completed, failed] items."""
    totals = [0, 0]
    open_ids = list(batch_ids)
    interval = POLL_INTERVAL
    while open_ids:
        changed = False
        for batch_id in list(open_ids):
            batch = client.batches.retrieve(batch_id)
            if batch.status not in ENDED:
                continue
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    done, failed = collect_file(client, db, file_id)
                    totals[0] += done
                    totals[1] += failed
            open_ids.remove(batch_id)
            changed = True
        if open_ids:
            interval = POLL_INTERVAL if changed else min(interval * 2, MAX_POLL_INTERVAL)
            time.sleep(interval)
    return totals


def run_floor(
    source: Path, base_url: str, api_key: str, profile: str | None, *, overlap: bool = False
) -> dict[str, Any]:
    """One run in this process; its figures (seconds, items, peak RSS)."""
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if profiler is not None:
            profiler.enable()
        t0, c0 = time.perf_counter(), time.process_time()
        from openai import OpenAI

        client = OpenAI(base_url=base_url, api_key=api_key)
        db = open_db(root / "floor.db")
        batch_ids = ingest(client, db, source, root, overlap=overlap)
        t1 = time.perf_counter()
        completed, failed = poll_and_collect(client, db, batch_ids)
        db.close()
        t2, c2 = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
    return {
        "runner": "overlap" if overlap else "floor",
        "status": "completed" if not failed else "partial",
        "completed": completed,
        "failed": failed,
        "submit": t1 - t0,
        "collect": t2 - t1,
        "whole": t2 - t0,
        "cpu": c2 - c0,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "batches": len(batch_ids),
    }


def main() -> None:
    """Run the floor once against its own emulator; print its figures (or one JSON line)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)  # set by throughput.py
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the run to FILE")
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="submit each batch while the rest of the source is read (batchor does not: "
        "nothing is sent until the whole source is in)",
    )
    args = parser.parse_args()
    emulator = Emulator()
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source
        if source is None:
            source = Path(tmp) / "items.jsonl"
            write_items(source, args.items)
        result = run_floor(
            source, emulator.base_url, emulator.api_key, args.profile, overlap=args.overlap
        )
    counters = emulator.stop()
    result.update(emu_cpu=counters["cpu"], calls=counters["total_calls"], routes=counters["calls"])
    if args.json:
        print(json.dumps(result))
        return
    n = result["completed"] + result["failed"]
    print(f"items                      {n:,}")
    print(f"status                     {result['status']} ({result['completed']:,} completed, "
          f"{result['failed']:,} failed)")  # fmt: skip
    print(f"ingest + submit            {result['submit']:6.2f} s")
    print(f"poll + collect             {result['collect']:6.2f} s")
    whole = result["whole"]
    print(f"whole run                  {whole:6.2f} s   {n / whole:,.0f} items/s")
    print(f"CPU (floor process)        {result['cpu']:6.2f} s   emulator {result['emu_cpu']:.2f} s")
    print(f"peak RSS (floor process)   {result['rss_mb']:6.0f} MB")
    print(f"batches                    {result['batches']}")
    print(f"HTTP calls                 {result['calls']}")
    for route, count in result["routes"].items():
        print(f"    {route:<38} {count}")


if __name__ == "__main__":
    main()
