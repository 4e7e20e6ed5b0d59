"""Throughput benchmark: N tiny structured items, JSONL source, SQLite store, emulator
answering at once (in a child process, so its CPU is not batchor's).

Prints wall time for ingest+submit and for collect, items/s, peak RSS of the batchor process,
store bytes per item, and the number of batches and HTTP calls. With ``--floor``, runs batchor,
`floor.py` (the least work any durable runner must do for this job, sending nothing until the
whole source is read, as batchor) and `floor.py --overlap` (the same, sending batches while it
reads) in turn, each in a fresh process with its own emulator, and prints batchor's time as a
ratio to each floor's.
Run by hand:

    uv run python bench/throughput.py            # 100,000 items
    uv run python bench/throughput.py --items 20000
    uv run python bench/throughput.py --items 1000000 --store postgresql+psycopg://...
    uv run python bench/throughput.py --floor    # 3 rounds: batchor / floor, median ratio
    uv run python bench/throughput.py --floor --items 1000000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import MAX_POLL_INTERVAL, POLL_INTERVAL, Emulator, Label, write_items

from batchor import (
    ArtifactPolicy,
    BatchJob,
    BatchRunner,
    JsonlItemSource,
    OpenAIProviderConfig,
    PromptParts,
)

__all__ = ["Label", "build_prompt", "write_items"]  # what providers.py imports from here
HERE = Path(__file__).resolve().parent


def build_prompt(item: Any) -> PromptParts:
    """The job's prompt: the item's text, as it is."""
    return PromptParts(prompt=item.payload["text"])


def store_bytes(db: Path) -> int:
    """The SQLite store's size on disk after a checkpoint (database, WAL and shm files)."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))


def run_batchor(
    source: Path,
    store: str | None,
    profile: str | None,
    *,
    read_back: bool = True,
    keep_raw_outputs: bool = True,
) -> dict[str, Any]:
    """One batchor run in this process, against the emulator in a child process (keeping
    the raw output files, as a job does by default, unless ``keep_raw_outputs`` is off)."""
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    emulator = Emulator()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        db = root / "batchor.db"
        job = BatchJob(
            items=JsonlItemSource(source, id_field="id"),
            build_prompt=build_prompt,
            provider_config=OpenAIProviderConfig(
                model="gpt-4.1-mini", base_url=emulator.base_url, api_key=emulator.api_key
            ),
            structured_output=Label,
            artifact_policy=ArtifactPolicy(keep_raw_outputs=keep_raw_outputs),
        )
        if profiler is not None:
            profiler.enable()
        t0, c0 = time.perf_counter(), time.process_time()
        with BatchRunner(store or f"sqlite:///{db}", root / "artifacts") as runner:
            run = runner.start(job, f"bench-{time.time_ns()}")
            t1 = time.perf_counter()
            summary = run.wait(poll_interval=POLL_INTERVAL, max_poll_interval=MAX_POLL_INTERVAL)
            t2, c2 = time.perf_counter(), time.process_time()
            if profiler is not None:  # the run only, not the reading back
                profiler.disable()
                profiler.dump_stats(profile)
            results = sum(1 for _ in run.results()) if read_back else 0
            t3 = time.perf_counter()
        size = store_bytes(db) if store is None else 0
    counters = emulator.stop()
    return {
        "runner": "batchor",
        "status": summary.status.value,
        "completed": summary.completed,
        "failed": summary.failed,
        "submit": t1 - t0,
        "collect": t2 - t1,
        "whole": t2 - t0,
        "cpu": c2 - c0,
        "read": t3 - t2,
        "results": results,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "store_bytes": size,
        "batches": counters["batches_created"],
        "calls": counters["total_calls"],
        "routes": counters["calls"],
        "emu_cpu": counters["cpu"],
    }


def print_run(r: dict[str, Any], n: int) -> None:
    """The single run's figures, as this bench has always printed them."""
    print(f"items                      {n:,}")
    print(
        f"status                     {r['status']} "
        f"({r['completed']:,} completed, {r['failed']:,} failed)"
    )
    print(f"ingest + submit            {r['submit']:6.2f} s")
    print(f"poll + collect             {r['collect']:6.2f} s")
    print(f"whole run                  {r['whole']:6.2f} s   {n / r['whole']:,.0f} items/s")
    read = r["read"]
    print(f"read results               {read:6.2f} s   {r['results'] / read:,.0f} results/s")
    print(f"peak RSS (batchor process) {r['rss_mb']:6.0f} MB")
    if r["store_bytes"]:
        print(f"store bytes per item       {r['store_bytes'] / n:6.0f} B")
    print(f"batches                    {r['batches']}")
    print(f"HTTP calls                 {r['calls']}")
    for route, count in r["routes"].items():
        print(f"    {route:<38} {count}")


ROW = "{:<8} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>6}  {}"


def print_row(r: dict[str, Any], n: int, number: Any = "") -> None:
    """One run of a side-by-side measurement."""
    print(
        ROW.format(
            r["runner"],
            number,
            f"{r['whole']:.2f} s",
            f"{r['submit']:.2f} s",
            f"{r['collect']:.2f} s",
            f"{r['cpu']:.2f} s",
            f"{r['emu_cpu']:.2f} s",
            f"{r['rss_mb']:.0f} MB",
            r["batches"],
            r["calls"],
            f"{r['status']} ({r['completed']:,} ok, {r['failed']:,} failed)",
        ),
        flush=True,
    )


def side_by_side(items: int, repeat: int, store: str | None, *, keep_raw: bool = True) -> None:
    """Batchor and the two floors in turn, each in a fresh process; the median ratios."""
    raw = "" if keep_raw else ", batchor without raw outputs kept"
    print(f"{items:,} items, {repeat} rounds{raw}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(ROW.format("runner", "round", "whole", "ingest+", "poll+", "CPU", "emu CPU",
                     "peak RSS", "batches", "calls", "status"))  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {"batchor": [], "floor": [], "overlap": []}
    with tempfile.TemporaryDirectory() as tmp:
        # Bytecode cached and warm, as an installed package's would be (this machine sets
        # PYTHONDONTWRITEBYTECODE, which would make every run compile the SDKs afresh).
        env = dict(os.environ, PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)

        def one(runner: str, n: int, source: Path) -> dict[str, Any]:
            script = HERE / ("throughput.py" if runner == "batchor" else "floor.py")
            cmd = [sys.executable, str(script), "--json", "--items", str(n)]
            if runner == "overlap":
                cmd.append("--overlap")
            cmd += ["--source", str(source)]
            if runner == "batchor" and store:
                cmd += ["--store", store]
            if runner == "batchor" and not keep_raw:
                cmd.append("--drop-raw-outputs")
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env)
            result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
            return result

        warm = Path(tmp) / "warm.jsonl"
        write_items(warm, 200)
        for runner in runs:
            one(runner, 200, warm)
        source = Path(tmp) / "items.jsonl"
        write_items(source, items)  # once, shared: writing it is not part of a run
        for number in range(1, repeat + 1):
            # Rotate who goes first, so a drift of the machine's speed falls on all three.
            order = list(runs)[number % 3 :] + list(runs)[: number % 3]
            for runner in order:
                result = one(runner, items, source)
                runs[runner].append(result)
                print_row(result, items, number)

    keys = ("whole", "submit", "collect", "cpu", "emu_cpu")
    med = {r: {k: statistics.median(x[k] for x in xs) for k in keys} for r, xs in runs.items()}
    print("\nmedians")
    for runner, m in med.items():
        rss = max(x["rss_mb"] for x in runs[runner])
        print(
            f"{runner:<8} whole {m['whole']:6.2f} s ({items / m['whole']:,.0f} items/s)  "
            f"ingest+submit {m['submit']:5.2f} s  poll+collect {m['collect']:5.2f} s  "
            f"CPU {m['cpu']:5.2f} s  emulator CPU {m['emu_cpu']:5.2f} s  RSS {rss:.0f} MB"
        )
    print()
    for floor in ("floor", "overlap"):
        rounds = list(zip(runs["batchor"], runs[floor], strict=True))
        ratios = [b["whole"] / f["whole"] for b, f in rounds]
        cpu = [b["cpu"] / f["cpu"] for b, f in rounds]
        print(
            f"batchor / {floor}, whole run: median {statistics.median(ratios):.2f}x "
            f"(rounds {', '.join(f'{p:.2f}' for p in ratios)}); "
            f"ratio of medians {med['batchor']['whole'] / med[floor]['whole']:.2f}x; "
            f"CPU of the runner's process: median {statistics.median(cpu):.2f}x"
        )


def main() -> None:
    """One run, printed; or, with ``--floor``, batchor beside the floor."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument(
        "--store",
        help="store URL (default: a SQLite file in a temporary directory), e.g. "
        "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    )
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the run to FILE")
    parser.add_argument("-v", "--verbose", action="store_true", help="log engine steps, timed")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="run batchor and bench/floor.py alternately, each in a fresh process; print "
        "batchor's time as a ratio to the floor's",
    )
    parser.add_argument("--repeat", type=int, default=3, help="with --floor: rounds of runs")
    parser.add_argument(
        "--drop-raw-outputs",
        action="store_true",
        help="run batchor with ArtifactPolicy(keep_raw_outputs=False), as the floor does "
        "(by default a job keeps each batch's raw output and error files)",
    )
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)  # set for --floor runs
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        if args.profile or args.verbose:
            parser.error("--profile and -v are for a single run, not with --floor")
        side_by_side(args.items, args.repeat, args.store, keep_raw=not args.drop_raw_outputs)
        return
    if args.verbose:
        import logging

        logging.basicConfig(format="%(relativeCreated)8.0f ms  %(message)s")
        logging.getLogger("batchor").setLevel(logging.INFO)
    with tempfile.TemporaryDirectory() as tmp:
        source = args.source
        if source is None:
            source = Path(tmp) / "items.jsonl"
            write_items(source, args.items)
        result = run_batchor(
            source,
            args.store,
            args.profile,
            read_back=not args.json,
            keep_raw_outputs=not args.drop_raw_outputs,
        )
    if args.json:
        print(json.dumps(result))
    else:
        print_run(result, args.items)


if __name__ == "__main__":
    main()
