"""A dry run: what a job would send and roughly cost, without creating anything."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from batchor.engine.budget import output_cap
from batchor.engine.ingest import encoded_body, positions, prompt_parts
from batchor.items import BatchItem
from batchor.jobrecord import job_codec
from batchor.jobs import BatchJob
from batchor.pricing import ModelPrice, PriceTable, price_table
from batchor.results import Usage
from batchor.sources.base import CheckpointedItemSource
from batchor.structured import strict_json_schema


@dataclass(frozen=True, slots=True)
class JobEstimate:
    """What `estimate_job` found.

    Attributes:
        model: The job's model.
        requests: Requests the job would send.
        input_bytes: Bytes of the batch input files.
        estimated_input_tokens: Estimated prompt tokens (see `batchor.providers.openai.tokens`).
        batches: Provider batches the requests pack into under the job's limits.
        too_large: Requests that fit in no batch (they would fail as ``request_too_large``).
        max_output_tokens: The per-request output cap from ``request_params``, if set; ``0``
            for an embeddings job (a vector bills no output tokens).
        estimated_input_cost_usd: The input tokens' cost (``None`` for an unknown model).
        estimated_max_cost_usd: Input cost plus every request using its whole output cap;
            ``None`` without a cap or for an unknown model. Output tokens cannot be known
            before the replies, so without a cap only the input cost is estimated. For an
            embeddings job it is the input cost.
    """

    model: str
    requests: int
    input_bytes: int
    estimated_input_tokens: int
    batches: int
    too_large: int
    max_output_tokens: int | None
    estimated_input_cost_usd: float | None
    estimated_max_cost_usd: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


def estimate_job(
    job: BatchJob,
    *,
    prices: PriceTable | Mapping[str, ModelPrice | tuple[float, float]] | None = None,
) -> JobEstimate:
    """Read the job's items, render every request and pack them as a run would, without
    writing or sending anything. A plain iterator is consumed by this; a file source or a
    list is not.

    Args:
        job: The job.
        prices: Prices to use instead of the default table's.

    Raises:
        ConfigurationError: the job's structured output is a schema the provider's strict
            mode refuses (the same one-line error as `BatchJob` and `BatchRunner.start`
            give; see `batchor.schema_check`). Nothing is read before it.
    """
    if job.structured_output is not None:
        # The check runner.start makes, made here first so the estimate reports the same.
        strict_json_schema(job.structured_output)
    codec = job_codec(job)
    settings = job.provider_config
    limits = job.limits
    max_requests = limits.max_requests or settings.limits.max_requests
    token_limit = settings.enqueued_token_limit
    requests = total_bytes = total_tokens = too_large = 0
    batches = in_batch = batch_bytes = batch_tokens = 0
    for item in _items(job):
        parts = prompt_parts(item, job.build_prompt)
        tokens = codec.estimate_tokens(parts)
        size = len(codec.frame(requests + 1, encoded_body(item, parts, codec)))
        requests += 1
        total_bytes += size
        total_tokens += tokens
        if size > limits.max_bytes or (token_limit is not None and tokens > token_limit):
            too_large += 1
            continue
        fits = (
            in_batch < max_requests
            and batch_bytes + size <= limits.max_bytes
            and (token_limit is None or batch_tokens + tokens <= token_limit)
        )
        if not in_batch or not fits:
            batches += 1
            in_batch = batch_bytes = batch_tokens = 0
        in_batch += 1
        batch_bytes += size
        batch_tokens += tokens
    # The same reading of the cap as the spending cap's projection makes of a run's config.
    cap = output_cap(settings.record(), vector=codec.output_kind == "vector")
    table = price_table(prices)
    input_cost = table.cost(settings.model, Usage(total_tokens, 0))
    max_cost = None
    if cap is not None:
        max_cost = table.cost(settings.model, Usage(total_tokens, cap * requests))
    return JobEstimate(
        model=settings.model,
        requests=requests,
        input_bytes=total_bytes,
        estimated_input_tokens=total_tokens,
        batches=batches,
        too_large=too_large,
        max_output_tokens=cap,
        estimated_input_cost_usd=input_cost,
        estimated_max_cost_usd=max_cost,
    )


def _items(job: BatchJob) -> Iterator[BatchItem]:
    if isinstance(job.items, CheckpointedItemSource):
        for item, _ in job.items.iter_from(None):
            yield item
    else:
        for item, _ in positions(job.items):
            yield item
