"""A Dagster code location that labels the sentiment of each day's reviews through the OpenAI
Batch API: a partitioned upstream asset writes the day's rows, a batchor asset classifies them.

Run it against the emulator (see docs/how-to/dagster.md):

    uv run dagster asset materialize -f examples/dagster/definitions.py \
        --select reviews,review_labels --partition 2026-11-23

or in the Dagster UI and daemon: ``uv run dagster dev -f examples/dagster/definitions.py``.
Materialising a partition again with the same reviews reuses its run (nothing is bought
twice); the run config ``{"ops": {"review_labels": {"config": {"rerun": true}}}}`` buys anew.
"""

import json
import os
import random
from pathlib import Path
from typing import Literal

from batchor_dagster import BatchorResource, batchor_asset, batchor_sensor_assets
from dagster import (
    AssetExecutionContext,
    AssetIn,
    DailyPartitionsDefinition,
    Definitions,
    EnvVar,
    asset,
)
from pydantic import BaseModel

from batchor import BatchJob, JsonlItemSource, OpenAIProviderConfig, PromptParts

DATA = Path(os.environ.get("EXAMPLE_DATA_DIR", ".batchor/example"))
"""Where the example writes its input rows and results (relative to the working directory)."""

days = DailyPartitionsDefinition(start_date="2026-11-20", end_date="2026-11-27")

_OPENINGS = ["Loved it", "Terrible", "It was fine", "Would not buy again", "Great value"]
_SUBJECTS = ["the battery", "delivery", "the screen", "customer service", "the price"]


class Sentiment(BaseModel):
    """The label the model gives each review."""

    label: Literal["positive", "negative", "neutral"]
    complaint: str | None


@asset(partitions_def=days, group_name="reviews", kinds={"jsonl"})
def reviews(context: AssetExecutionContext) -> str:
    """The day's reviews as a JSONL file (one row per review); returns its path."""
    day = context.partition_key
    rng = random.Random(day)
    path = DATA / "reviews" / f"{day}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for i in range(20):
            text = f"{rng.choice(_OPENINGS)}: {rng.choice(_SUBJECTS)}, order {day}-{i}."
            out.write(json.dumps({"id": f"{day}-{i:03d}", "day": day, "text": text}) + "\n")
    return str(path)


def label_reviews(context: AssetExecutionContext, reviews: str) -> BatchJob:
    """The batch job over the day's file: no key or base URL here, the resource has them."""
    return BatchJob(
        items=JsonlItemSource(reviews, id_field="id"),
        build_prompt=lambda item: PromptParts(
            prompt=str(item.payload["text"]),
            system="Label the sentiment of this product review; name the complaint, if any.",
        ),
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
        structured_output=Sentiment,
    )


review_labels = batchor_asset(
    name="review_labels",
    ins={"reviews": AssetIn()},
    job=label_reviews,
    destination=str(DATA / "review_labels" / "{partition_key}.jsonl"),
    partitions_def=days,
    group_name="reviews",
    max_failure_rate=0.02,
)

# The same job in the non-blocking mode: a submit asset returns at once, a sensor (stopped
# until you turn it on) requests the collect asset when the run has ended.
review_labels_async = batchor_sensor_assets(
    name="review_labels_async",
    ins={"reviews": AssetIn()},
    job=label_reviews,
    destination=str(DATA / "review_labels_async" / "{partition_key}.parquet"),
    partitions_def=days,
    group_name="reviews",
    minimum_interval_seconds=60,
)

defs = Definitions(
    assets=[reviews, review_labels, *review_labels_async.assets],
    sensors=[review_labels_async.sensor],
    resources={
        # Store and artifacts: $BATCHOR_STORE / $BATCHOR_ARTIFACTS, else ./.batchor/.
        # Base URL: $OPENAI_BASE_URL (the emulator's, to try it out), else the public API.
        "batchor": BatchorResource(openai_api_key=EnvVar("OPENAI_API_KEY")),
    },
)
