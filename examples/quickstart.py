"""Plain-Python quickstart: a structured job through the emulator, then the same run
rehydrated from the store alone.

    uv run python examples/quickstart.py

Point it at the real API by removing the emulator and setting OPENAI_API_KEY.
"""

from __future__ import annotations

import tempfile
from typing import Literal

from pydantic import BaseModel

from batchor import BatchItem, BatchJob, BatchRunner, OpenAIProviderConfig, PromptParts
from batchor.testing import OpenAIBatchEmulator

REVIEWS = {
    "r1": "Arrived broken and support never answered.",
    "r2": "Does exactly what it promises; I use it every day.",
    "r3": "It is fine.",
}


class Sentiment(BaseModel):
    """The label we want for each review."""

    label: Literal["positive", "negative", "neutral"]
    complaint: str | None


def main() -> None:
    workdir = tempfile.mkdtemp(prefix="batchor-example-")
    with OpenAIBatchEmulator() as emulator:
        runner = BatchRunner(store=f"sqlite:///{workdir}/batchor.db", artifacts=f"{workdir}/art")
        job = BatchJob(
            items=[BatchItem(item_id=k, payload={"text": v}) for k, v in REVIEWS.items()],
            build_prompt=lambda item: PromptParts(
                prompt=item.payload["text"], system="Label the sentiment of the review."
            ),
            provider_config=OpenAIProviderConfig(
                model="gpt-4.1-mini", base_url=emulator.base_url, api_key=emulator.api_key
            ),
            structured_output=Sentiment,
        )
        run = runner.start(job, run_id="quickstart")
        summary = run.wait()
        print(f"run {summary.run_id}: {summary.status.value}, {summary.completed} completed")

        # Any process can pick the run up again from the store alone.
        again = BatchRunner(store=f"sqlite:///{workdir}/batchor.db", artifacts=f"{workdir}/art")
        for result in again.get_run("quickstart").results():
            print(result.item_id, result.status.value, result.output)


if __name__ == "__main__":
    main()
