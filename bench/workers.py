"""Several workers on one Postgres run: one process starts a 200,000-item run (ingest, pack,
submit), then N worker processes drive it to its end side by side
(``BatchRunner(...).get_run(run_id).wait()`` in each), against the same with one worker.

Prints, for 1 and N workers, the wall time of the start, of the drive (after the start
returned; with ``--join`` the workers already run during the start) and of the whole run,
the provider batches created per batch key (from the emulator's counters: each key must
have exactly one), the input files uploaded (one per batch, unless workers race), how many
cores the machine kept busy on average during the start and the drive (``/proc/stat``, all
processes) and the CPU seconds Postgres spent (its server processes). Each
configuration gets a fresh Postgres schema and its own emulator (in a child process,
answering at once). Run by hand:

    uv run python bench/workers.py                       # 200,000 items, 1 vs 4 workers
    uv run python bench/workers.py --items 50000 --workers 3 --rounds 2
    uv run python bench/workers.py --join                # workers start beside the starter

The store is used as it is: on Postgres it writes with COPY, claims batches with SKIP LOCKED
and lets one worker at a time pack the run (the others skip packing that step), so no batch
is packed twice and thrown away.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pg_speed import PG_URL, Label, build_prompt, serve, write_items


def start(url: str, artifacts: str, source: str, run_id: str) -> None:
    """The starting process: create the run, ingest it, pack and submit its batches."""
    from batchor import BatchJob, BatchRunner, JsonlItemSource, OpenAIProviderConfig

    job = BatchJob(
        items=JsonlItemSource(source, id_field="id"),
        build_prompt=build_prompt,
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
        structured_output=Label,
    )
    with BatchRunner(url, artifacts) as runner:
        runner.start(job, run_id)


def work(url: str, artifacts: str, run_id: str, poll: float, *, warm: bool = False) -> None:
    """A worker process: drive the run until it is terminal (waiting for it to exist, with
    ``--join`` or ``--warm``); print its summary. With ``warm``, it first loads what a
    long-running worker has loaded before any run (the provider SDK, the store's driver, a
    connection) and says "ready" on its standard output."""
    from batchor import BatchRunner
    from batchor.errors import RunNotFoundError

    with BatchRunner(url, artifacts) as runner:
        if warm:
            import openai  # noqa: F401 - loaded by a deployed worker's earlier runs

            with contextlib.suppress(RunNotFoundError):  # the store opened and connected
                runner.get_run(run_id)
            print("ready", flush=True)
        while True:
            try:
                run = runner.get_run(run_id, model=Label)
                break
            except RunNotFoundError:
                time.sleep(0.05)
        summary = run.wait(poll_interval=poll, max_poll_interval=poll * 4)
    print(json.dumps(summary.to_dict()))


def busy_cores() -> float:
    """CPU seconds this machine has spent busy, all processes (Linux ``/proc/stat``;
    0 elsewhere): the difference over a phase, divided by its wall time, is how many cores
    were busy on average."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except OSError:
        return 0.0
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> float:
    """CPU seconds of every postgres process on this machine (Linux ``/proc``)."""
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/comm") as fh:
                if fh.read().strip() not in ("postgres", "postmaster"):
                    continue
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # its own and its ended children's
    return total / os.sysconf("SC_CLK_TCK")


def one_configuration(
    workers: int,
    source: Path,
    root: Path,
    *,
    join: bool,
    warm: bool,
    poll: float,
) -> dict[str, Any]:
    """One run driven by ``workers`` processes, on a fresh schema with its own emulator
    (with ``join``, the workers start beside the starting process instead of after it; with
    ``warm``, they are started and ready before the clock starts)."""
    import sqlalchemy as sa

    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=serve, args=(child,), daemon=True)
    server.start()
    base_url, api_key = parent.recv()
    env = {**os.environ, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": api_key}
    schema = f"workers_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    artifacts = str(root / f"artifacts-{schema}")
    run_id = f"workers-{workers}-{time.time_ns()}"
    me = [sys.executable, __file__]
    try:

        def launch() -> list[subprocess.Popen[str]]:
            return [
                subprocess.Popen(
                    [*me, "--work", url, artifacts, run_id, "--poll", str(poll)]
                    + (["--warm"] if warm else []),
                    env=env,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for _ in range(workers)
            ]

        procs = []
        if warm:  # started and ready (imports done, store connected) before the clock starts
            procs = launch()
            for p in procs:
                assert p.stdout is not None
                if p.stdout.readline().strip() != "ready":
                    raise RuntimeError("a worker failed to start")
        t0, b0, p0 = time.perf_counter(), busy_cores(), postgres_cpu()
        starter = subprocess.Popen([*me, "--start", url, artifacts, str(source), run_id], env=env)
        procs = procs or (launch() if join else [])
        if starter.wait():
            raise RuntimeError("the starting process failed")
        t1, b1 = time.perf_counter(), busy_cores()
        procs = procs or launch()
        outputs = [p.communicate()[0] for p in procs]
        t2, b2, p2 = time.perf_counter(), busy_cores(), postgres_cpu()
        if any(p.returncode for p in procs):
            raise RuntimeError(f"a worker failed: {[p.returncode for p in procs]}")
        summaries = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    finally:
        parent.send("stop")
        emulator = parent.recv()
        server.join(timeout=10)
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        admin.dispose()
    per_key: dict[str, int] = emulator["per_key"]
    return {
        "workers": workers,
        "start": t1 - t0,
        "drive": t2 - t1,
        "whole": t2 - t0,
        "pg_cpu": p2 - p0,
        "busy_start": (b1 - b0) / (t1 - t0),
        "busy_drive": (b2 - b1) / (t2 - t1),
        "status": {s["status"] for s in summaries},
        "completed": max(s["items"]["completed"] for s in summaries),
        "batch_keys": len(per_key),
        "batches": sum(per_key.values()),
        "max_per_key": max(per_key.values(), default=0),
        "http_calls": emulator["total_calls"],
        "uploads": emulator["uploads"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1, help="alternate 1 and N this many times")
    parser.add_argument(
        "--join", action="store_true", help="workers start beside the starting process"
    )
    parser.add_argument(
        "--warm",
        action="store_true",
        help="workers are started, and ready, before the clock starts (deployed workers)",
    )
    parser.add_argument(
        "--poll",
        type=float,
        default=0.25,
        help="each worker's first pause between refreshes, s (it doubles to 4x while "
        "nothing changes); every refresh counts the run's items",
    )
    parser.add_argument("--start", nargs=4, metavar=("URL", "ARTIFACTS", "SOURCE", "RUN_ID"))
    parser.add_argument("--work", nargs=3, metavar=("URL", "ARTIFACTS", "RUN_ID"))
    parser.add_argument("-v", "--verbose", action="store_true", help="log every process's steps")
    args = parser.parse_args()
    if args.verbose:
        import logging

        logging.basicConfig(format="%(relativeCreated)8.0f ms  pid %(process)d  %(message)s")
        logging.getLogger("batchor").setLevel(logging.INFO)
        os.environ["BATCHOR_BENCH_VERBOSE"] = "1"
    elif os.environ.get("BATCHOR_BENCH_VERBOSE"):
        import logging

        logging.basicConfig(format="%(created).3f  pid %(process)d  %(message)s")
        logging.getLogger("batchor").setLevel(logging.INFO)
    if args.start:
        start(*args.start)
        return
    if args.work:
        work(*args.work, poll=args.poll, warm=args.warm)
        return
    results: dict[int, list[dict[str, Any]]] = {1: [], args.workers: []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = root / "items.jsonl"
        write_items(source, args.items)
        for r in range(args.rounds):
            for n in results:
                f = one_configuration(
                    n, source, root, join=args.join, warm=args.warm, poll=args.poll
                )
                results[n].append(f)
                print(
                    f"round {r + 1}  {n} worker(s)  start {f['start']:6.2f} s  drive "
                    f"{f['drive']:6.2f} s  whole {f['whole']:6.2f} s  busy cores "
                    f"{f['busy_start']:.2f} / {f['busy_drive']:.2f}  postgres CPU "
                    f"{f['pg_cpu']:.2f} s  {sorted(f['status'])} "
                    f"{f['completed']:,} completed  {f['batches']} provider batches for "
                    f"{f['batch_keys']} batch keys (at most {f['max_per_key']} per key)  "
                    f"{f['http_calls']} HTTP calls, {f['uploads']} uploads",
                    flush=True,
                )
    print(f"\n{args.items:,} items, medians of {args.rounds} round(s)")
    for n, runs in results.items():
        print(
            f"{n} worker(s): whole {statistics.median(f['whole'] for f in runs):6.2f} s, "
            f"drive {statistics.median(f['drive'] for f in runs):6.2f} s, "
            f"postgres CPU {statistics.median(f['pg_cpu'] for f in runs):5.2f} s; "
            f"one provider batch per key: {all(f['max_per_key'] == 1 for f in runs)}"
        )


if __name__ == "__main__":
    main()
