"""A flow for test_services.py, run as a script in its own process against a real Prefect server
(PREFECT_API_URL) and the emulator (OPENAI_BASE_URL, OPENAI_API_KEY):

    python services_flow.py RUN_KEY DESTINATION

It starts the run of the Prefect example's job (``classify_reviews:make_job``, so the example's
folder must be on PYTHONPATH) and collects it at once, before the run has ended, with a collect
task that retries every second. It prints one JSON line: the flow run's id, its final state
and the collect handle; the exit status is 0 only if the flow run completed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from batchor_prefect import collect_batch_run, start_batch_run
from prefect import flow

from batchor import steps

JOB = "classify_reviews:make_job"
RETRIES = 60
"""Collect attempts after the first, one second apart: far more than the run needs."""


@flow(name="batchor-collect-before-the-end")
def collect_before_the_end(run_key: str, destination: str) -> steps.CollectResult:
    """Start the run, then collect it right away: not ready (retried) until it has ended."""
    handle = start_batch_run(JOB, run_key)
    collect = collect_batch_run.with_options(retries=RETRIES, retry_delay_seconds=1)
    return collect(handle.run_id, destination)


def main() -> int:
    run_key, destination = sys.argv[1:3]
    state = collect_before_the_end(run_key, destination, return_state=True)
    result = state.result(raise_on_failure=False)
    print(
        json.dumps(
            {
                "flow_run_id": str(state.state_details.flow_run_id),
                "state": state.name,
                "result": asdict(result) if isinstance(result, steps.CollectResult) else None,
                "error": None if state.is_completed() else repr(result),
            }
        )
    )
    return 0 if state.is_completed() else 1


if __name__ == "__main__":
    sys.exit(main())
