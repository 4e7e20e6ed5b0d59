"""Driving a run from other processes: fresh `BatchRunner`s that only know the store, the
artifacts and the run id, as a worker in another process (or after a crash) would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchor.testing import OpenAIBatchEmulator

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from batchor import BatchRunner, ModelPrice
    store, artifacts, run_id, prices = sys.argv[1:5]
    prices = {m: ModelPrice(*p) for m, p in json.loads(prices).items()}
    with BatchRunner(store, artifacts, prices=prices) as runner:
        summary = runner.get_run(run_id).wait(poll_interval=0.05, max_poll_interval=0.25,
                                              timeout=60)
    print(json.dumps(summary.to_dict()))
    """
)


def drive_in_processes(
    emu: OpenAIBatchEmulator,
    store: str,
    tmp_path: Path,
    run_id: str,
    count: int,
    *,
    prices: Mapping[str, tuple[float, float]] | None = None,
) -> list[dict[str, Any]]:
    """``count`` fresh processes, each `BatchRunner.get_run(run_id).wait()`, at once (with
    ``prices`` added to their price tables); their final summaries."""
    env = dict(os.environ, OPENAI_API_KEY=emu.api_key, PYTHONPATH=str(Path(__file__).parents[2]))
    args = [
        sys.executable, "-c", _SCRIPT, store, str(tmp_path / "artifacts"), run_id,
        json.dumps(dict(prices or {})),
    ]  # fmt: skip
    procs = [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]
    summaries = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        summaries.append(json.loads(out.splitlines()[-1]))
    return summaries
