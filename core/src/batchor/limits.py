"""The limits a job sets on its run (deadline, spending caps), checked and stored when
`BatchRunner.start` creates or attaches to the run."""

from __future__ import annotations

from batchor.errors import ConfigurationError
from batchor.jobs import BatchJob, deadline_at
from batchor.pricing import PriceTable
from batchor.stores.base import RunRecord, StateStore


def check_priced(job: BatchJob, prices: PriceTable) -> None:
    """Refuse a spending cap on a model the price table does not know (its cost could
    not be projected), before anything is created.

    Raises:
        ConfigurationError: names the model and how to price it.
    """
    sync_cap = None if job.finish_sync is None else job.finish_sync.max_cost_usd
    setting = "BatchJob.max_cost_usd" if job.max_cost_usd is not None else "FinishSync.max_cost_usd"
    if job.max_cost_usd is None and sync_cap is None:
        return
    model = getattr(job.provider_config, "price_model", None) or job.provider_config.model
    if prices.price(model) is None:
        raise ConfigurationError(
            f"{setting} is set but the price table has no price for model "
            f"{model!r}: add it (BatchRunner(prices={{{model!r}: ModelPrice(input, "
            "output)}})) or set price_model to a priced model"
        )


def apply_limits(store: StateStore, record: RunRecord, job: BatchJob, created: bool) -> RunRecord:
    """Store the job's deadline and spending cap with a new run. A job attached to an
    existing run may raise its cap (never lower or remove it: a cap raised by
    `Run.resume` stays) and set a deadline the run has not got; a deadline already
    set is kept."""
    deadline = record.deadline_at
    if created or deadline is None:
        deadline = deadline_at(job.deadline, record.created_at)
    cap = record.max_cost_usd
    if job.max_cost_usd is not None and (created or cap is None or job.max_cost_usd > cap):
        cap = job.max_cost_usd
    if (deadline, cap) == (record.deadline_at, record.max_cost_usd):
        return record
    store.set_run_limits(record.pk, deadline_at=deadline, max_cost_usd=cap)
    return store.get_run(record.run_id) or record
