"""Builders and checks shared by the fast engine tests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel

from batchor import (
    BatchItem,
    BatchJob,
    BatchLimits,
    ItemResult,
    ItemStatus,
    OpenAIProviderConfig,
    PromptParts,
    RetryPolicy,
    Run,
    RunSummary,
)
from batchor.testing import InProcessBatchTransport

MODEL = "gpt-4.1-mini"
BATCH_KEY = "batchor_batch_key"
CREATE = ("POST", "/v1/batches")
UPLOAD = ("POST", "/v1/files")
RETRIEVE = ("GET", "/v1/batches/{id}")
LIST = ("GET", "/v1/batches")
DOWNLOAD = ("GET", "/v1/files/{id}/content")


class Verdict(BaseModel):
    """The structured output most tests ask for."""

    label: Literal["positive", "negative", "neutral"]
    score: float


def make_items(n: int, text: str = "review {i}") -> list[BatchItem]:
    """``n`` items ``item-0``... whose prompt is ``text`` and whose metadata holds the row."""
    return [
        BatchItem(
            item_id=f"item-{i}",
            payload={"text": text.format(i=i)},
            metadata={"row": i, "tag": f"t{i % 3}"},
        )
        for i in range(n)
    ]


def prompt(item: BatchItem) -> PromptParts:
    return PromptParts(prompt=str(item.payload["text"]))


def make_job(
    items: Iterable[BatchItem] | Any,
    *,
    structured: type[BaseModel] | None = Verdict,
    max_attempts: int = 3,
    max_requests: int | None = None,
    max_bytes: int = 190_000_000,
    model: str = MODEL,
    endpoint: Any = "/v1/responses",
    token_limit: int | None = None,
    request_params: dict[str, Any] | None = None,
    build_prompt: Callable[[BatchItem], PromptParts] = prompt,
) -> BatchJob:
    return BatchJob(
        items=items,
        build_prompt=build_prompt,
        provider_config=OpenAIProviderConfig(
            model=model,
            endpoint=endpoint,
            enqueued_token_limit=token_limit,
            request_params=request_params or {},
        ),
        structured_output=structured,
        retry_policy=RetryPolicy(max_attempts=max_attempts),
        limits=BatchLimits(max_requests=max_requests, max_bytes=max_bytes),
    )


def drive(run: Run, timeout: float = 20.0) -> RunSummary:
    """Refresh ``run`` until it ends, polling often (the in-process provider is quick)."""
    return run.wait(timeout, poll_interval=0.01, max_poll_interval=0.05)


def by_id(run: Run) -> dict[str, ItemResult]:
    return {r.item_id: r for r in run.results(include_pending=True)}


def status_counts(run: Run) -> Counter[ItemStatus]:
    return Counter(r.status for r in run.results(include_pending=True))


def batches_per_key(transport: InProcessBatchTransport) -> Counter[str]:
    """How many provider batches were created for each batch key."""
    return transport.stats.batches_by_metadata(BATCH_KEY)


def assert_exactly_once(transport: InProcessBatchTransport) -> None:
    """Every batch key was created at the provider once, and no more batches than keys."""
    per_key = batches_per_key(transport)
    assert per_key, "no batch was created"
    assert set(per_key.values()) == {1}, per_key
    assert transport.stats.batches_created == len(per_key)


def line_fault_on(
    texts: Iterable[str], fault: str, times: int | None = None
) -> Callable[[str, dict[str, Any]], str | None]:
    """A ``line_fault`` callback answering ``fault`` for requests whose input is one of
    ``texts``: on every attempt, or on the first ``times`` attempts of each."""
    wanted = set(texts)
    seen: Counter[str] = Counter()

    def pick(custom_id: str, body: dict[str, Any]) -> str | None:
        text = body.get("input")
        if text not in wanted:
            return None
        seen[text] += 1
        if times is not None and seen[text] > times:
            return None
        return fault

    return pick
