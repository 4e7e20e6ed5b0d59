"""What `throughput.py` and `floor.py` share: the job's source and output model, and the
emulator they both run against (in a child process, so its CPU is not the runner's).

Importing this module does not import batchor (the floor's process must not pay for it)."""

from __future__ import annotations

import json
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

BATCH_SIZE = 50_000  # requests per provider batch (the OpenAI limit, batchor's default)
POLL_INTERVAL = 0.05  # seconds; doubles while nothing changes ...
MAX_POLL_INTERVAL = 0.2  # ... up to this


class Label(BaseModel):
    """A tiny structured output."""

    label: Literal["positive", "negative", "neutral"]
    score: float


def write_items(path: Path, n: int) -> None:
    """The job's source: ``n`` JSONL records ``{"id": i, "text": ...}``."""
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": i, "text": f"tiny review number {i}"}) + "\n")


def serve(conn: Connection) -> None:
    """Child process: run the emulator (answering at once) until told to stop, then report
    its counters and its own CPU time."""
    from batchor.testing import OpenAIBatchEmulator

    with OpenAIBatchEmulator() as emu:
        conn.send((emu.base_url, emu.api_key))
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


class Emulator:
    """The emulator in a spawned child process: ``base_url`` and ``api_key`` once started,
    its counters from `stop`."""

    def __init__(self) -> None:
        import multiprocessing as mp

        self._conn, child = mp.Pipe()
        self._process = mp.get_context("spawn").Process(target=serve, args=(child,), daemon=True)
        self._process.start()
        self.base_url, self.api_key = self._conn.recv()

    def stop(self) -> dict[str, Any]:
        """Stop the emulator; its counters (calls, batches, its CPU seconds)."""
        self._conn.send("stop")
        counters: dict[str, Any] = self._conn.recv()
        self._process.join(timeout=10)
        return counters
