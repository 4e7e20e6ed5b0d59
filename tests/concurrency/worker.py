"""One worker process: start (or attach to) the shared run and drive it to its end.

    python tests/concurrency/worker.py STORE ARTIFACTS SOURCE RUN_ID [die-in-collect MARKER]

With ``die-in-collect`` the process creates the file MARKER when it starts applying the
first chunk of a batch's results, and SIGKILLs itself right after that chunk is applied (it
holds that batch's collect claim when it dies).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    JsonlItemSource,
    OpenAIProviderConfig,
    PromptParts,
    RetryPolicy,
)
from batchor.stores.sql import SqlStateStore

MAX_REQUESTS = 2_000


def main() -> None:
    store, artifacts, source, run_id = sys.argv[1:5]
    if sys.argv[5:6] == ["die-in-collect"]:
        marker = sys.argv[6]
        original = SqlStateStore.apply_outcomes

        def apply_then_die(self: Any, *args: Any, **kwargs: Any) -> None:
            open(marker, "a").close()
            original(self, *args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)

        SqlStateStore.apply_outcomes = apply_then_die  # type: ignore[method-assign]
    job = BatchJob(
        items=JsonlItemSource(source, id_field="id"),
        build_prompt=lambda item: PromptParts(prompt=str(item.payload["text"])),
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
        retry_policy=RetryPolicy(max_attempts=3),
        limits=BatchLimits(max_requests=MAX_REQUESTS),
    )
    with BatchRunner(store, artifacts) as runner:
        run = runner.start(job, run_id)
        summary = run.wait(poll_interval=0.05, max_poll_interval=0.3)
    print(json.dumps(summary.to_dict()))


if __name__ == "__main__":
    main()
