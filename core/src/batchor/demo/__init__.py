"""The bundled demo: 1,000 synthetic product reviews labelled with a structured schema.

``batchor demo`` runs it against the emulator; it is also a compact example of a job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from batchor.items import BatchItem, PromptParts
from batchor.jobs import BatchJob
from batchor.providers.openai.config import OpenAIProviderConfig
from batchor.sources.jsonl import JsonlItemSource

DATASET = Path(__file__).with_name("reviews.jsonl")
"""The demo's input: one review per line (``id``, ``product``, ``stars``, ``text``)."""

SYSTEM = "You label product reviews. Answer with the requested JSON only."


class ReviewAnalysis(BaseModel):
    """What the model extracts from one review."""

    sentiment: Literal["positive", "negative", "neutral"]
    confidence: float = Field(ge=0, le=1, description="How sure the label is, 0 to 1.")
    topics: list[str] = Field(description="Aspects the review talks about.")
    complaint: str | None = Field(description="The main complaint, if there is one.")


def build_prompt(item: BatchItem) -> PromptParts:
    """The prompt for one review."""
    return PromptParts(
        prompt=f"Product: {item.payload['product']}\nReview: {item.payload['text']}",
        system=SYSTEM,
    )


def demo_job(*, base_url: str | None = None, api_key: str | None = None) -> BatchJob:
    """The demo job, pointed at ``base_url`` (the emulator when run by ``batchor demo``)."""
    return BatchJob(
        items=JsonlItemSource(DATASET, id_field="id", metadata_fields=("product", "stars")),
        build_prompt=build_prompt,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini", base_url=base_url, api_key=api_key
        ),
        structured_output=ReviewAnalysis,
    )
