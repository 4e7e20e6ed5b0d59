"""The spending-cap tests' job, and one process driving it.

    python tests/core/cap_worker.py start STORE ARTIFACTS RUN_ID BASE_URL N CAP
    python tests/core/cap_worker.py resume STORE ARTIFACTS RUN_ID CAP

``start`` starts (or attaches to) the run of N items under the cap (each reply capped at
`OUTPUT_CAP` tokens) and waits; ``resume`` rehydrates it from the store alone and resumes
it with the cap. Either drives the run until it ends or stalls (paused with nothing in
flight) and prints its summary as JSON. The API key is read from OPENAI_API_KEY.
"""

from __future__ import annotations

import json
import sys

from batchor import (
    BatchItem,
    BatchJob,
    BatchLimits,
    BatchRunner,
    ModelPrice,
    OpenAIProviderConfig,
    PromptParts,
    RunStateError,
)
from batchor.results import RunSummary

MODEL = "gpt-4.1-mini"
#: USD per million tokens: a cent per thousand input tokens, and (for the tests that set an
#: output cap or price) output tokens at twice that.
PRICES = {MODEL: ModelPrice(10.0, 20.0)}
BATCH = 10  # requests per batch
OUTPUT_CAP = 64  # tokens per reply (the emulator's replies to these prompts bill 51)


def items(n: int) -> list[BatchItem]:
    """``n`` items whose prompts are all the same length (so every batch costs the same)."""
    return [
        BatchItem(item_id=f"c{k:04d}", payload={"text": f"review {k:04d} " + "x" * 188})
        for k in range(n)
    ]


def prompt(item: BatchItem) -> PromptParts:
    """The item's text, as the whole prompt."""
    return PromptParts(prompt=str(item.payload["text"]))


def capped_job(
    base_url: str,
    n: int,
    cap: float | None,
    *,
    api_key: str | None = None,
    output_cap: int | None = None,
    model: str = MODEL,
) -> BatchJob:
    """A text job of ``n`` items in batches of `BATCH`, under ``cap`` USD."""
    params = {} if output_cap is None else {"max_output_tokens": output_cap}
    return BatchJob(
        items=items(n),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model=model, base_url=base_url, api_key=api_key, request_params=params
        ),
        limits=BatchLimits(max_requests=BATCH),
        max_cost_usd=cap,
    )


def drive(runner: BatchRunner, run_id: str, resume_cap: float | None = None) -> RunSummary:
    """Drive the run until it ends or stalls; its summary."""
    run = runner.get_run(run_id)
    if resume_cap is not None:
        run.resume(max_cost_usd=resume_cap)
    try:
        return run.wait(60, poll_interval=0.05, max_poll_interval=0.25)
    except RunStateError:  # paused (by its cap) with nothing in flight
        return run.summary()


def main() -> None:
    mode, store, artifacts, run_id = sys.argv[1:5]
    with BatchRunner(store, artifacts, prices=PRICES) as runner:
        if mode == "start":
            base_url, n, cap = sys.argv[5], int(sys.argv[6]), float(sys.argv[7])
            runner.start(capped_job(base_url, n, cap, output_cap=OUTPUT_CAP), run_id)
            summary = drive(runner, run_id)
        else:
            summary = drive(runner, run_id, resume_cap=float(sys.argv[5]))
    print(json.dumps(summary.to_dict()))


if __name__ == "__main__":
    main()
