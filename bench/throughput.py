"""Throughput benchmark: N tiny structured items, JSONL source, SQLite store, emulator
answering at once (in a child process, so its CPU is not batchor's).

Prints wall time for ingest+submit and for collect, items/s, peak RSS of the batchor process,
store bytes per item, and the number of batches and HTTP calls. Run by hand:

    uv run python bench/throughput.py            # 100,000 items
    uv run python bench/throughput.py --items 20000
    uv run python bench/throughput.py --items 1000000 --store postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sqlite3
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from batchor import BatchJob, BatchRunner, JsonlItemSource, OpenAIProviderConfig, PromptParts


class Label(BaseModel):
    """A tiny structured output."""

    label: Literal["positive", "negative", "neutral"]
    score: float


def build_prompt(item: Any) -> PromptParts:
    return PromptParts(prompt=item.payload["text"])


def serve(conn: Connection) -> None:
    """Child process: run the emulator until told to stop, then report its counters."""
    from batchor.testing import OpenAIBatchEmulator

    with OpenAIBatchEmulator() as emu:
        conn.send((emu.base_url, emu.api_key))
        conn.recv()
        stats = emu.stats
        conn.send(
            {
                "total_calls": stats.total_calls,
                "batches_created": stats.batches_created,
                "calls": {f"{m} {r}": n for (m, r), n in sorted(stats.calls.items())},
            }
        )


def write_items(path: Path, n: int) -> None:
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": i, "text": f"tiny review number {i}"}) + "\n")


def store_bytes(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument(
        "--store",
        help="store URL (default: a SQLite file in a temporary directory), e.g. "
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    )
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the run to FILE")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine steps, timed")
    args = parser.parse_args()
    if args.verbose:
        import logging

        logging.basicConfig(format="%(relativeCreated)8.0f ms  %(message)s")
        logging.getLogger("batchor").setLevel(logging.INFO)
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()

    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=serve, args=(child,), daemon=True)
    server.start()
    base_url, api_key = parent.recv()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = root / "items.jsonl"
        write_items(source, args.items)
        db = root / "batchor.db"
        job = BatchJob(
            items=JsonlItemSource(source, id_field="id"),
            build_prompt=build_prompt,
            provider_config=OpenAIProviderConfig(
                model="gpt-4.1-mini", base_url=base_url, api_key=api_key
            ),
            structured_output=Label,
        )
        if profiler is not None:
            profiler.enable()
        t0 = time.perf_counter()
        with BatchRunner(args.store or f"sqlite:///{db}", root / "artifacts") as runner:
            run = runner.start(job, f"bench-{time.time_ns()}")
            t1 = time.perf_counter()
            summary = run.wait(poll_interval=0.05, max_poll_interval=0.2)
            t2 = time.perf_counter()
            if profiler is not None:  # the run only, not the reading back
                profiler.disable()
                profiler.dump_stats(args.profile)
            results = sum(1 for _ in run.results())
            t3 = time.perf_counter()
        size = store_bytes(db) if args.store is None else 0

    parent.send("stop")
    emulator = parent.recv()
    server.join(timeout=10)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = args.items
    print(f"items                      {n:,}")
    print(
        f"status                     {summary.status.value} "
        f"({summary.completed:,} completed, {summary.failed:,} failed)"
    )
    print(f"ingest + submit            {t1 - t0:6.2f} s")
    print(f"poll + collect             {t2 - t1:6.2f} s")
    print(f"whole run                  {t2 - t0:6.2f} s   {n / (t2 - t0):,.0f} items/s")
    print(f"read results               {t3 - t2:6.2f} s   {results / (t3 - t2):,.0f} results/s")
    print(f"peak RSS (batchor process) {peak_mb:6.0f} MB")
    if size:
        print(f"store bytes per item       {size / n:6.0f} B")
    print(f"batches                    {emulator['batches_created']}")
    print(f"HTTP calls                 {emulator['total_calls']}")
    for route, count in emulator["calls"].items():
        print(f"    {route:<38} {count}")


if __name__ == "__main__":
    main()
