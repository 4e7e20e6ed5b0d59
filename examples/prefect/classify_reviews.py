"""Classify the sentiment of a JSONL file of reviews with batchor's ready Prefect flow.

    uv run python examples/prefect/classify_reviews.py
    uv run python examples/prefect/classify_reviews.py --run-key reviews-demo  # run it twice

With OPENAI_BASE_URL unset it starts batchor's built-in emulator of the OpenAI Batch API, so
it runs offline. To use OpenAI, set OPENAI_BASE_URL=https://api.openai.com/v1 and
OPENAI_API_KEY. Runs are kept in ./.batchor/, results written to ./.batchor/example/prefect/.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from batchor_prefect import BatchorConfig, run_batch_job
from prefect.settings import (
    PREFECT_SERVER_ANALYTICS_ENABLED,
    PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    temporary_settings,
)
from pydantic import BaseModel

from batchor import BatchItem, BatchJob, JsonlItemSource, OpenAIProviderConfig, PromptParts

REVIEWS = Path(__file__).with_name("reviews.jsonl")


class Sentiment(BaseModel):
    """The label wanted for each review."""

    label: Literal["positive", "negative", "neutral"]
    complaint: str | None


def build_prompt(item: BatchItem) -> PromptParts:
    """The request for one review."""
    return PromptParts(
        prompt=str(item.payload["text"]),
        system="Label the sentiment of the product review; name the complaint if any.",
    )


def make_job() -> BatchJob:
    """The job: every review of reviews.jsonl, labelled by gpt-4.1-mini. The flow calls it
    inside its start task, so the job object never becomes a flow parameter."""
    return BatchJob(
        items=JsonlItemSource(REVIEWS, id_field="id"),
        build_prompt=build_prompt,
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
        structured_output=Sentiment,
    )


@contextlib.contextmanager
def api() -> Iterator[BatchorConfig | None]:
    """The API to use: the environment's when OPENAI_BASE_URL is set, else a built-in
    emulator for the duration of the example."""
    if os.environ.get("OPENAI_BASE_URL"):
        yield None  # BatchorConfig() reads OPENAI_API_KEY and OPENAI_BASE_URL
        return
    from batchor.testing import OpenAIBatchEmulator

    with OpenAIBatchEmulator() as emulator:
        print(f"OPENAI_BASE_URL is not set: using batchor's emulator at {emulator.base_url}")
        yield BatchorConfig(openai_base_url=emulator.base_url, openai_api_key=emulator.api_key)


def temporary_server_settings() -> contextlib.AbstractContextManager[object]:
    """Without PREFECT_API_URL, Prefect starts a temporary server for the flow run. On a cold
    environment or a busy machine it can take longer than Prefect's default 20 s to come up,
    and offline its telemetry only logs errors: wait up to 120 s and leave telemetry off,
    unless the environment says otherwise."""
    updates: dict[Any, object] = {}
    if "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS" not in os.environ:
        updates[PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS] = 120
    if "PREFECT_SERVER_ANALYTICS_ENABLED" not in os.environ:
        updates[PREFECT_SERVER_ANALYTICS_ENABLED] = False
    if os.environ.get("PREFECT_API_URL") or not updates:
        return contextlib.nullcontext()
    return temporary_settings(updates=updates)


def main() -> None:
    """Run the flow once and print what it collected."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--destination", default=".batchor/example/prefect/reviews.jsonl")
    parser.add_argument("--run-key", default=None, help="reuse the run of an earlier call")
    args = parser.parse_args()
    with temporary_server_settings(), api() as config:
        result = run_batch_job(
            job=make_job, destination=args.destination, run_key=args.run_key, config=config
        )
    print(
        f"run {result.run_id}: {result.run_status}, {result.counts}, "
        f"{result.input_tokens + result.output_tokens} tokens, "
        f"${result.cost_usd or 0:.6f}; results in {result.uri}"
    )


if __name__ == "__main__":
    main()
