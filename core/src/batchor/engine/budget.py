"""The spending cap (`BatchJob.max_cost_usd`): each batch's projected cost, and the gate it
passes before its create.

A batch's projected cost is the price table's price of its estimated input tokens (the
packer's estimate, as `batchor.estimate_job` makes it) plus its expected output tokens:
every request at its output cap (``max_output_tokens`` / ``max_completion_tokens`` /
``max_tokens`` in the request parameters, or the provider config's own ``max_tokens``;
none for embeddings), or without a cap the mean output tokens the run's answered requests
billed so far (none before the first batch is collected). Only a cap makes the projection
an upper bound.

The run's committed cost is what its collected batches billed plus what its other batches
reserved. A batch is created only if the committed cost plus its projection fits under the
cap; the reservation is made by `StateStore.reserve_cost`, serialised per run, so two
workers never both pass the cap. Otherwise the run pauses with code ``budget``: nothing
more is sent until it is resumed with a higher cap; batches in flight are still collected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from batchor.engine.context import RunContext, log
from batchor.pricing import usd
from batchor.results import Usage
from batchor.states import BatchStatus, PauseCode, RunStatus
from batchor.stores.base import BatchRecord

#: Request parameters that cap a reply's tokens (the Responses API's, Chat Completions'
#: two, and Gemini's generation_config field in its proto JSON spelling).
OUTPUT_CAP_PARAMS = ("max_output_tokens", "max_completion_tokens", "max_tokens", "maxOutputTokens")
#: The provider status of a batch ended without ever being created (it costs nothing).
_NOT_SENT = "not_sent"


class OverBudget(Exception):
    """The next batch does not fit under the run's spending cap; the run was paused."""


def output_cap(config: Mapping[str, Any], *, vector: bool) -> int | None:
    """The most output tokens one request may bill, from a provider config's record (what a
    run stores as its config): an output cap in its ``request_params``, else the config's
    own ``max_tokens`` (Anthropic's); ``0`` for embeddings (a vector bills no output
    tokens); ``None`` when nothing caps the replies."""
    if vector:
        return 0
    params = config.get("request_params") or {}
    for key in OUTPUT_CAP_PARAMS:
        value = params.get(key)
        if value is not None:
            return int(value)
    cap = config.get("max_tokens")
    return None if cap is None else int(cap)


def committed_cost(batches: Iterable[BatchRecord]) -> float:
    """The committed cost of a run's batches: each one's billed cost once collected, else
    the projected cost it reserved (nothing for a batch that has not reserved, or that was
    ended without being sent)."""
    total = 0.0
    for batch in batches:
        if batch.provider_status == _NOT_SENT:
            continue
        cost = batch.cost_usd if batch.cost_usd is not None else batch.est_cost_usd
        total += cost or 0.0
    return total


def expected_output_tokens(ctx: RunContext) -> int:
    """The output tokens one request of the run is expected to bill: its output cap, else
    the mean billed per answered request of the run's collected batches (rounded up; 0
    before any)."""
    cap = output_cap(ctx.run.config, vector=ctx.codec.output_kind == "vector")
    if cap is not None:
        return cap
    answered = billed = 0
    for batch in ctx.store.batches(ctx.run.pk, [BatchStatus.COLLECTED]):
        if batch.provider_status == _NOT_SENT or batch.output_tokens is None:
            continue
        answered += max(batch.request_count - (batch.requeued or 0), 0)
        billed += batch.output_tokens
    return -(-billed // answered) if answered else 0


def projected_cost(ctx: RunContext, batch: BatchRecord) -> float | None:
    """The batch's projected cost in USD (``None``: the price table has no price for the
    run's model)."""
    price = None if ctx.prices is None else ctx.prices.price(ctx.settings.price_model)
    if price is None:
        return None
    output = batch.request_count * expected_output_tokens(ctx)
    return price.cost(Usage(batch.est_tokens or 0, output))


def billed_cost(ctx: RunContext, input_tokens: int, output_tokens: int) -> float | None:
    """What a batch billed in USD at the run's price, from the usage in its results
    (``None`` for a model without a price)."""
    price = None if ctx.prices is None else ctx.prices.price(ctx.settings.price_model)
    return None if price is None else price.cost(Usage(input_tokens, output_tokens))


def admit(ctx: RunContext, batch: BatchRecord) -> None:
    """Let the batch be created if the run has no spending cap, or its projected cost fits
    under it (reserving that cost); otherwise pause the run with code ``budget``.

    Raises:
        OverBudget: it does not fit (or cannot be priced); the run is paused.
    """
    cap = ctx.run.max_cost_usd
    if cap is None or batch.est_cost_usd is not None:
        return  # no cap, or reserved already
    projected = projected_cost(ctx, batch)
    if projected is None:
        _pause(
            ctx,
            f"the run's spending cap {usd(cap)} cannot be kept: this process's price table "
            f"has no price for model {ctx.settings.price_model!r} (give the runner its price: "
            "BatchRunner(prices=...))",
        )
    elif not ctx.store.reserve_cost(ctx.run.pk, batch.pk, projected, cap):
        committed = committed_cost(ctx.store.batches(ctx.run.pk, list(BatchStatus)))
        current = ctx.store.get_run(ctx.run.run_id)
        if current is not None and current.max_cost_usd is not None:
            cap = max(cap, current.max_cost_usd)
        need = _suggested_cap(committed + projected)
        _pause(
            ctx,
            f"spending cap reached: the next batch's projected cost {usd(projected)} plus the "
            f"run's committed cost {usd(committed)} exceeds the cap {usd(cap)}; raise it "
            f"(`batchor resume {ctx.run.run_id} --max-cost-usd {need}` or "
            f"Run.resume(max_cost_usd={need}))",
        )


def reserve_adopted(ctx: RunContext, batch: BatchRecord) -> None:
    """Record the projected cost of a batch adopted from the provider (it is in flight
    whatever the cap), so the run's committed cost counts it; best effort."""
    if ctx.run.max_cost_usd is None or batch.est_cost_usd is not None:
        return
    projected = projected_cost(ctx, batch)
    if projected is not None:
        ctx.store.reserve_cost(ctx.run.pk, batch.pk, projected, math.inf)


def _pause(ctx: RunContext, reason: str) -> None:
    """Pause the run with code ``budget`` (unless it is no longer running) and stop."""
    if ctx.store.set_run_status(
        ctx.run.pk,
        RunStatus.PAUSED,
        expected=[RunStatus.RUNNING],
        pause_reason=reason,
        pause_code=PauseCode.BUDGET,
    ):
        log.warning("run %s paused: %s", ctx.run.run_id, reason)
    raise OverBudget(reason)


def _suggested_cap(amount: float) -> str:
    """``amount`` rounded up to two significant digits, written plainly (``28``,
    ``0.013``): a cap to suggest that leaves room for it."""
    step = 10 ** (math.floor(math.log10(amount)) - 1) if amount > 0 else 0.01
    rounded = math.ceil(amount / step * (1 - 1e-12)) * step
    return f"{rounded:.12f}".rstrip("0").rstrip(".")
