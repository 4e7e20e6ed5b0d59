"""A batchor run in a child process that SIGKILLs itself at a chosen step boundary.

    python tests/crash/child.py WORKDIR RUN_ID KILL_POINT     (KILL_POINT "none": no kill)

The kill points wrap real methods of the store and the provider, so what dies is the real
engine between two real steps. The provider comes from OPENAI_BASE_URL / OPENAI_API_KEY.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    JsonlItemSource,
    OpenAIProviderConfig,
    PromptParts,
)
from batchor.providers.openai.transport import OpenAITransport
from batchor.states import BatchStatus
from batchor.stores.sql import SqlStateStore

ITEMS = 12_000
MAX_REQUESTS = 6_000  # 2 batches, each collected in 2 chunks; ingestion takes 3 slices


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def after_call(
    owner: Any, name: str, nth: int, when: Callable[..., bool] = lambda *a, **k: True
) -> None:
    """SIGKILL right after the nth matching call of owner.name returns."""
    original = getattr(owner, name)
    seen = [0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        if when(*args, **kwargs):
            seen[0] += 1
            if seen[0] == nth:
                die()
        return result

    setattr(owner, name, wrapper)


def kill_during_create() -> None:
    """The server creates the batch (and delays its answer); the client dies waiting."""
    original = OpenAITransport.create_batch

    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        threading.Timer(0.3, die).start()
        return original(self, *args, **kwargs)

    OpenAITransport.create_batch = wrapper  # type: ignore[method-assign]


def kill_during_download() -> None:
    """Die after the first chunk of the first output file reached the disk."""
    original = OpenAITransport.download_file

    def wrapper(self: Any, file_id: str, dest: Any) -> int:
        write = dest.write

        def dying_write(chunk: bytes) -> int:
            written = write(chunk)
            dest.flush()
            die()
            return written

        dest.write = dying_write
        return original(self, file_id, dest)

    OpenAITransport.download_file = wrapper  # type: ignore[method-assign]


KILL_POINTS: dict[str, Callable[[], None]] = {
    "mid-ingest": lambda: after_call(SqlStateStore, "add_items", 2),
    "after-pack": lambda: after_call(SqlStateStore, "record_batch", 1),
    "upload-unrecorded": lambda: after_call(OpenAITransport, "upload_file", 1),
    "after-upload": lambda: after_call(
        SqlStateStore,
        "update_batch",
        1,
        lambda *a, **k: k.get("status") is BatchStatus.UPLOADED,
    ),
    "during-create": kill_during_create,
    "after-create": lambda: after_call(OpenAITransport, "create_batch", 1),
    "during-download": kill_during_download,
    "during-persist": lambda: after_call(SqlStateStore, "apply_outcomes", 1),
}


def main() -> None:
    workdir, run_id, point = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    source = workdir / "items.jsonl"
    if not source.exists():
        source.write_text(
            "".join(json.dumps({"id": f"i{k}", "text": f"item {k}"}) + "\n" for k in range(ITEMS))
        )
    if point != "none":
        KILL_POINTS[point]()
    runner = BatchRunner(store=f"sqlite:///{workdir}/batchor.db", artifacts=workdir / "artifacts")
    job = BatchJob(
        items=JsonlItemSource(source, id_field="id"),
        build_prompt=lambda item: PromptParts(prompt=item.payload["text"]),
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
        limits=BatchLimits(max_requests=MAX_REQUESTS),
    )
    run = runner.start(job, run_id=run_id)
    summary = run.wait(poll_interval=0.05, max_poll_interval=0.2)
    with open(workdir / f"{run_id}.results.jsonl", "w") as fh:
        for r in run.results():
            fh.write(json.dumps([r.item_id, r.status.value, r.output_text, r.attempts]) + "\n")
    print(summary.status.value)


if __name__ == "__main__":
    main()
