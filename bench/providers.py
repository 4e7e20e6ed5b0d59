"""Providers side by side: the same N-item structured job on each provider's emulator.

One invocation runs `throughput.py`'s job (JSONL source, two-field structured output, SQLite
store, local artifacts, the emulator answering at once in a child process) on OpenAI, Azure
OpenAI, Anthropic and Gemini in turn, R rounds interleaved, each run in a fresh process of its
own (so its peak RSS is its own), with the same `BatchLimits` for all. Prints every run, then
per provider the median whole run and its ratio to OpenAI's median. Bytecode is cached (in a
temporary ``PYTHONPYCACHEPREFIX``, even under ``PYTHONDONTWRITEBYTECODE``) and warmed by one
small untimed run per provider, as an installed SDK's would be. Run by hand:

    uv run python bench/providers.py                      # 100,000 items, 3 rounds
    uv run python bench/providers.py --items 20000 --rounds 1 --providers openai,gemini
    uv run python bench/providers.py --one anthropic --profile anthropic.prof  # -v: timed log

(``--one`` runs as it is called: under ``PYTHONDONTWRITEBYTECODE`` set ``PYTHONPYCACHEPREFIX``.)
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
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from throughput import Label, build_prompt, write_items

from batchor import (
    AnthropicProviderConfig,
    AzureOpenAIProviderConfig,
    BatchJob,
    BatchLimits,
    BatchRunner,
    GeminiProviderConfig,
    JsonlItemSource,
    OpenAIProviderConfig,
)

PROVIDERS = ("openai", "azure", "anthropic", "gemini")
LIMITS = BatchLimits(max_requests=50_000)  # 2 batches of 50,000 for every provider
AZURE_API_VERSION = "2024-10-21"


def serve(conn: Connection, provider: str) -> None:
    """Child process: run the provider's emulator until told to stop, then report counters."""
    from batchor.testing import (
        AnthropicBatchEmulator,
        EmulatorLimits,
        GeminiBatchEmulator,
        OpenAIBatchEmulator,
    )

    emulator: Any
    if provider == "openai":
        emulator = OpenAIBatchEmulator()
    elif provider == "azure":
        emulator = OpenAIBatchEmulator(limits=EmulatorLimits.azure())
    elif provider == "anthropic":
        emulator = AnthropicBatchEmulator()
    else:
        emulator = GeminiBatchEmulator()
    with emulator as emu:
        endpoint = emu.azure_endpoint if provider == "azure" else emu.base_url
        conn.send((endpoint, emu.api_key))
        conn.recv()
        stats = emu.stats
        conn.send(
            {
                "total_calls": stats.total_calls,
                "batches_created": stats.batches_created,
                "cpu": time.process_time(),  # the emulator process's, start-up included
                "calls": {f"{m} {r}": n for (m, r), n in sorted(stats.calls.items())},
            }
        )


def provider_config(provider: str, endpoint: str, api_key: str) -> Any:
    if provider == "openai":
        return OpenAIProviderConfig(model="gpt-4.1-mini", base_url=endpoint, api_key=api_key)
    if provider == "azure":
        return AzureOpenAIProviderConfig(
            deployment="gpt-4.1-mini",
            azure_endpoint=endpoint,
            api_version=AZURE_API_VERSION,
            api_key=api_key,
        )
    if provider == "anthropic":
        return AnthropicProviderConfig(
            model="claude-haiku-4-5", max_tokens=256, base_url=endpoint, api_key=api_key
        )
    return GeminiProviderConfig(model="gemini-2.5-flash", base_url=endpoint, api_key=api_key)


def run_one(provider: str, source: Path, profile: str | None) -> dict[str, Any]:
    """One run in this process, against the provider's emulator in a child process."""
    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=serve, args=(child, provider), daemon=True)
    server.start()
    endpoint, api_key = parent.recv()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        job = BatchJob(
            items=JsonlItemSource(source, id_field="id"),
            build_prompt=build_prompt,
            provider_config=provider_config(provider, endpoint, api_key),
            structured_output=Label,
            limits=LIMITS,
        )
        if profiler is not None:
            profiler.enable()
        t0, c0 = time.perf_counter(), time.process_time()
        with BatchRunner(f"sqlite:///{root / 'batchor.db'}", root / "artifacts") as runner:
            run = runner.start(job, f"bench-{provider}-{time.time_ns()}")
            t1 = time.perf_counter()
            summary = run.wait(poll_interval=0.05, max_poll_interval=0.2)
            t2, c2 = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
    parent.send("stop")
    emulator = parent.recv()
    server.join(timeout=10)
    return {
        "provider": provider,
        "status": summary.status.value,
        "completed": summary.completed,
        "failed": summary.failed,
        "submit": t1 - t0,
        "collect": t2 - t1,
        "whole": t2 - t0,
        "cpu": c2 - c0,
        "emu_cpu": emulator["cpu"],
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "batches": emulator["batches_created"],
        "calls": emulator["total_calls"],
        "routes": emulator["calls"],
    }


ROW = "{:<10} {:>5} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>6}  {}"


def print_row(r: dict[str, Any], n: int, rnd: Any = "") -> None:
    print(
        ROW.format(
            r["provider"],
            rnd,
            f"{r['whole']:.2f} s",
            f"{r['cpu']:.2f} s",
            f"{r['emu_cpu']:.2f} s",
            f"{r['submit']:.2f} s",
            f"{r['collect']:.2f} s",
            f"{n / r['whole']:,.0f}",
            f"{r['rss_mb']:.0f} MB",
            r["batches"],
            r["calls"],
            f"{r['status']} ({r['completed']:,} ok, {r['failed']:,} failed)",
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--providers", default=",".join(PROVIDERS), help="comma-separated")
    parser.add_argument("--one", choices=PROVIDERS, help="one run in this process, printed")
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)  # set for --one children
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--profile", metavar="FILE", help="with --one: cProfile the run to FILE")
    parser.add_argument("-v", "--verbose", action="store_true", help="with --one: timed log")
    args = parser.parse_args()
    if args.verbose:
        import logging

        logging.basicConfig(format="%(relativeCreated)8.0f ms  %(message)s")
        logging.getLogger("batchor").setLevel(logging.INFO)
    header = ROW.format(
        "provider", "round", "whole", "CPU", "emu CPU", "ingest+", "poll+", "items/s",
        "peak RSS", "batches", "calls", "status",
    )  # fmt: skip
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            source = args.source
            if source is None:
                source = Path(tmp) / "items.jsonl"
                write_items(source, args.items)
            result = run_one(args.one, source, args.profile)
        if args.json:
            print(json.dumps(result))
        else:
            print(header)
            print_row(result, args.items)
            for route, count in result["routes"].items():
                print(f"    {route:<44} {count}")
        return

    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    unknown = sorted(set(providers) - set(PROVIDERS))
    if unknown:
        parser.error(f"unknown providers {unknown}; choose from {', '.join(PROVIDERS)}")
    print(f"{args.items:,} items, {args.rounds} rounds, {LIMITS}, {time.strftime('%Y-%m-%d')}")
    print(header)
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in providers}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPYCACHEPREFIX=str(Path(tmp) / "pycache"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)

        def one(provider: str, items: int, source: Path) -> dict[str, Any]:
            cmd = [sys.executable, __file__, "--one", provider, "--json"]
            cmd += ["--items", str(items), "--source", str(source)]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env=env)
            return json.loads(out.stdout.strip().splitlines()[-1])

        warm = Path(tmp) / "warm.jsonl"
        write_items(warm, 200)
        for provider in providers:  # compiles and caches the bytecode every run imports
            one(provider, 200, warm)
        source = Path(tmp) / "items.jsonl"
        write_items(source, args.items)  # once, shared: writing it is not part of a run
        for rnd in range(1, args.rounds + 1):
            for provider in providers:
                result = one(provider, args.items, source)
                runs[provider].append(result)
                print_row(result, args.items, rnd)

    print("\nmedians")
    keys = ("whole", "cpu", "emu_cpu", "submit", "collect")
    med = {p: {k: statistics.median(r[k] for r in rs) for k in keys} for p, rs in runs.items()}
    base = med.get("openai")
    for provider, m in med.items():
        rss = max(r["rss_mb"] for r in runs[provider])
        ratio = ""
        if base:
            ratio = f"  {m['whole'] / base['whole']:.2f}x OpenAI, CPU {m['cpu'] / base['cpu']:.2f}x"
        print(
            f"{provider:<10} whole {m['whole']:6.2f} s ({args.items / m['whole']:,.0f} items/s)"
            f"  CPU {m['cpu']:5.2f} s  emulator CPU {m['emu_cpu']:5.2f} s  ingest+submit "
            f"{m['submit']:5.2f} s  poll+collect {m['collect']:5.2f} s  RSS {rss:.0f} MB{ratio}"
        )


if __name__ == "__main__":
    main()
