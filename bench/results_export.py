"""Results export benchmark: `batchor results RUN --output out.jsonl` on a finished run of N
tiny structured items (SQLite store), timed in a fresh process as an operator would run it.

The run is made first (emulator in a child process, as in throughput.py). Then the export is
timed twice: in-process (`run.export_results`) and through the CLI (a subprocess; its time
includes starting Python). Peak RSS is the exporting process's; run it at two sizes to see
memory stay flat. Run by hand:

    uv run python bench/results_export.py                 # 100,000 items
    uv run python bench/results_export.py --items 20000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from throughput import Label, build_prompt, serve, write_items

from batchor import BatchJob, BatchRunner, JsonlItemSource, OpenAIProviderConfig

_CLI_WITH_RSS = """
import resource, sys
from batchor.cli.main import main
sys.argv = ["batchor", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    args = parser.parse_args()
    n = args.items

    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=serve, args=(child,), daemon=True)
    server.start()
    base_url, api_key = parent.recv()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = root / "items.jsonl"
        write_items(source, n)
        store, artifacts = f"sqlite:///{root / 'batchor.db'}", root / "artifacts"
        job = BatchJob(
            items=JsonlItemSource(source, id_field="id"),
            build_prompt=build_prompt,
            provider_config=OpenAIProviderConfig(
                model="gpt-4.1-mini", base_url=base_url, api_key=api_key
            ),
            structured_output=Label,
        )
        with BatchRunner(store, artifacts) as runner:
            run = runner.start(job, "bench")
            run.wait(poll_interval=0.05, max_poll_interval=0.2)
            t0 = time.perf_counter()
            written = run.export_results(root / "in-process.jsonl")
            in_process = time.perf_counter() - t0
        parent.send("stop")
        parent.recv()
        server.join(timeout=10)

        env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
        # The CLI in a fresh interpreter that reports its own peak RSS on its last stderr line
        # (RUSAGE_CHILDREN would also count the emulator's process).
        command = [sys.executable, "-c", _CLI_WITH_RSS, "results", "bench", "--json"]
        command += ["--output", str(root / "cli.jsonl"), "--store", store]
        command += ["--artifacts", str(artifacts)]
        t0 = time.perf_counter()
        done = subprocess.run(command, check=True, env=env, capture_output=True, text=True)
        cli = time.perf_counter() - t0
        export_phase = json.loads(done.stdout)["seconds"]
        cli_rss = int(done.stderr.strip().splitlines()[-1]) / 1024
        with open(root / "cli.jsonl", "rb") as fh:
            lines = sum(1 for _ in fh)
        size = (root / "cli.jsonl").stat().st_size

    print(f"results                       {written:,} (CLI file: {lines:,} lines, {size:,} B)")
    print(
        f"export in-process             {in_process:6.2f} s   {written / in_process:,.0f} results/s"
    )
    phase_rate = lines / export_phase
    print(f"batchor results: the export   {export_phase:6.2f} s   {phase_rate:,.0f} results/s")
    print(f"batchor results: process wall {cli:6.2f} s   (starting Python and imports included)")
    print(f"peak RSS of the CLI process   {cli_rss:6.0f} MB")


if __name__ == "__main__":
    main()
