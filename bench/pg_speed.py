"""Postgres against SQLite: throughput.py's job on a SQLite file and on Postgres, back to back.

Each run is a fresh process (its peak RSS is its own) with the emulator in a child process
answering at once, and each Postgres run gets a schema of its own. The two stores take turns,
round after round, so drift on a shared machine falls on both alike; the medians, the peak
RSS and the Postgres/SQLite ratio come last. The store is used as it is (on Postgres it writes
items and outcomes with COPY and claims with SKIP LOCKED by itself). Run by hand:

    uv run python bench/pg_speed.py --items 100000 --rounds 3
    uv run python bench/pg_speed.py --items 1000000 --rounds 3
    uv run python bench/pg_speed.py --one postgres --items 100000 --timings
    uv run python bench/pg_speed.py --one postgres --items 100000 --profile pg.prof

``--timings`` (with ``--one``) adds the wall seconds spent in each of the store's main methods,
and how many times each was called.
To compare an older store (the per-row executemany path of commit b2bb447, before COPY), run
the same bench on that tree's package; this file needs only the public API:

    git -C /work/main archive b2bb447 core | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/core/src uv run python bench/pg_speed.py --items 1000000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _common import MAX_POLL_INTERVAL, POLL_INTERVAL, Label, write_items

__all__ = ["PG_URL", "Label", "build_prompt", "serve", "write_items"]  # workers.py's imports

PG_URL = os.environ.get(
    "BATCHOR_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
STORES = ("sqlite", "postgres")


def build_prompt(item: Any) -> Any:
    """The prompt: the item's text."""
    from batchor import PromptParts

    return PromptParts(prompt=item.payload["text"])


def serve(conn: Connection) -> None:
    """Child process: run the emulator (answering at once) until told to stop, then report
    its counters, with the provider batches created per batch key."""
    from batchor.testing import OpenAIBatchEmulator

    with OpenAIBatchEmulator() as emu:
        conn.send((emu.base_url, emu.api_key))
        conn.recv()
        stats = emu.stats
        conn.send(
            {
                "total_calls": stats.total_calls,
                "batches_created": stats.batches_created,
                "uploads": stats.calls[("POST", "/v1/files")],
                "per_key": dict(stats.batches_by_metadata("batchor_batch_key")),
            }
        )


_TIMED = (
    "add_items",
    "pending_items",
    "allocate_batch_number",
    "record_batch",
    "open_batch",
    "seal_batch",
    "dissolve_batch",
    "mark_submitted",
    "apply_outcomes",
    "requeue_unanswered",
    "finish_batch",
    "claim_batch",
    "get_run",
    "batches",
    "item_counts",
    "batch_counts",
)


def timed(store: Any, spent: dict[str, float], calls: dict[str, int]) -> Any:
    """Wrap the store's main methods to add their wall time (any thread) to ``spent``, and
    count their calls in ``calls``."""
    for name in _TIMED:
        method = getattr(store, name, None)
        if method is None:
            continue

        def wrapper(*args: Any, _m: Any = method, _n: str = name, **kwargs: Any) -> Any:
            t = time.perf_counter()
            try:
                return _m(*args, **kwargs)
            finally:
                spent[_n] = spent.get(_n, 0.0) + time.perf_counter() - t
                calls[_n] = calls.get(_n, 0) + 1

        setattr(store, name, wrapper)
    return store


def one(store_kind: str, items: int, profile: str | None, timings: bool) -> dict[str, Any]:
    """One run of the job on ``store_kind``, in this process; its figures."""
    import sqlalchemy as sa

    from batchor import BatchJob, BatchRunner, JsonlItemSource, OpenAIProviderConfig

    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=serve, args=(child,), daemon=True)
    server.start()
    base_url, api_key = parent.recv()
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            source = root / "items.jsonl"
            write_items(source, items)
            store: Any = f"sqlite:///{root / 'batchor.db'}"
            if store_kind == "postgres":
                admin = sa.create_engine(PG_URL)
                with admin.begin() as conn:
                    conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
                store = f"{PG_URL}?options=-csearch_path%3D{schema}"
            spent: dict[str, float] = {}
            calls: dict[str, int] = {}
            if timings:
                from batchor.stores.open import open_store

                store = timed(open_store(store), spent, calls)
            job = BatchJob(
                items=JsonlItemSource(source, id_field="id"),
                build_prompt=build_prompt,
                provider_config=OpenAIProviderConfig(
                    model="gpt-4.1-mini", base_url=base_url, api_key=api_key
                ),
                structured_output=Label,
            )
            profiler = None
            if profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            t0 = time.perf_counter()
            with BatchRunner(store, root / "artifacts") as runner:
                run = runner.start(job, f"bench-{time.time_ns()}")
                t1 = time.perf_counter()
                summary = run.wait(poll_interval=POLL_INTERVAL, max_poll_interval=MAX_POLL_INTERVAL)
                t2 = time.perf_counter()
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(profile)
    finally:
        if admin is not None:
            with admin.begin() as conn:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            admin.dispose()
        parent.send("stop")
        emulator = parent.recv()
        server.join(timeout=10)
    return {
        "store": store_kind,
        "items": items,
        "completed": summary.completed,
        "ingest_submit": t1 - t0,
        "poll_collect": t2 - t1,
        "whole": t2 - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "batches": emulator["batches_created"],
        "max_per_key": max(emulator["per_key"].values(), default=0),
        "store_seconds": {k: round(v, 2) for k, v in sorted(spent.items())},
        "store_calls": dict(sorted(calls.items())),
    }


def main() -> None:
    """Alternate the stores round after round (each run a fresh process); print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--one", choices=STORES, help="one run on one store, in this process")
    parser.add_argument("--profile", metavar="FILE", help="with --one: cProfile of the run")
    parser.add_argument(
        "--timings", action="store_true", help="with --one: wall seconds in each store method"
    )
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.items, args.profile, args.timings)))
        return
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in STORES}
    for r in range(args.rounds):
        for kind in STORES:
            out = subprocess.run(
                [sys.executable, __file__, "--one", kind, "--items", str(args.items)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            f = json.loads(out.strip().splitlines()[-1])
            results[kind].append(f)
            print(
                f"round {r + 1} {kind:<8} whole {f['whole']:7.2f} s  ingest+submit "
                f"{f['ingest_submit']:6.2f} s  poll+collect {f['poll_collect']:6.2f} s  "
                f"peak RSS {f['peak_rss_mb']:4.0f} MB  {f['batches']} batches "
                f"(at most {f['max_per_key']} per key)  completed {f['completed']:,}",
                flush=True,
            )
    print(f"\nmedians of {args.rounds} rounds, {args.items:,} items")
    medians = {k: statistics.median(f["whole"] for f in runs) for k, runs in results.items()}
    for kind, runs in results.items():
        print(
            f"{kind:<8} whole {medians[kind]:7.2f} s ({min(f['whole'] for f in runs):.2f} - "
            f"{max(f['whole'] for f in runs):.2f})  ingest+submit "
            f"{statistics.median(f['ingest_submit'] for f in runs):6.2f} s  poll+collect "
            f"{statistics.median(f['poll_collect'] for f in runs):6.2f} s  peak RSS "
            f"{max(f['peak_rss_mb'] for f in runs):4.0f} MB"
        )
    print(f"Postgres / SQLite: {medians['postgres'] / medians['sqlite']:.2f}x")


if __name__ == "__main__":
    main()
