"""A run handle: refresh (one reconcile step), wait, summary, results."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from batchor.engine.budget import committed_cost
from batchor.engine.cancel import wind_down
from batchor.engine.collect import collect
from batchor.engine.context import RunContext, RunSettings
from batchor.engine.deadline import deadline_passed, enforce_deadline
from batchor.engine.ending import end_if_done
from batchor.engine.finish import finish_stragglers, reclaim_abandoned
from batchor.engine.heap import old_objects_frozen
from batchor.engine.ingest import ingest, positions
from batchor.engine.pack import pack
from batchor.engine.poll import poll
from batchor.engine.submit import submit
from batchor.engine.sync_send import SYNC_PRICE_FACTOR
from batchor.errors import RunStateError, WaitTimeout
from batchor.handles import CollectResult
from batchor.items import BatchItem
from batchor.jobs import check_cost_cap
from batchor.pacing import Pacer, progress, wait_arguments
from batchor.results import BatchInfo, RunSummary, Usage, in_flight
from batchor.run_outputs import RunOutputs
from batchor.sources.base import CheckpointedItemSource, part_locator
from batchor.states import BatchStatus, PauseCode, RunStatus
from batchor.stores.base import FINISH_MODE_SYNC

if TYPE_CHECKING:
    from batchor.jobs import BatchJob
    from batchor.runner import BatchRunner
    from batchor.stores.base import RunRecord


class Run(RunOutputs):
    """A handle on one durable run. Get one from `BatchRunner.start` or
    `BatchRunner.get_run`; any number of handles, in any processes, may drive the same
    run."""

    def __init__(
        self,
        runner: BatchRunner,
        ctx: RunContext,
        job: BatchJob | None = None,
        items: CheckpointedItemSource | Iterator[BatchItem] | None = None,
    ) -> None:
        self._runner = runner
        self._ctx = ctx
        self._job = job
        self._items = items

    # ---- driving ---------------------------------------------------------------------
    def refresh(self) -> RunSummary:
        """One reconcile step: ingest what remains (when the job is at hand), poll live
        batches (stopping those past the run's deadline or their timeout), collect ended
        ones, end what the deadline leaves unsent, finish the stragglers synchronously when
        due (`FinishSync`), else pack pending items and submit new batches. Returns the
        summary after it."""
        self._step()
        return self.summary()

    def _step(self) -> None:
        """`refresh` without the summary (which counts the run's items)."""
        self._reload()
        status = self._ctx.run.status
        if status.is_terminal:
            return
        if status is RunStatus.RUNNING:
            self.ingest_pending()
        poll(self._ctx)
        collect(self._ctx)
        self._reload()
        late = enforce_deadline(self._ctx)  # past the deadline: nothing more is sent
        status = self._ctx.run.status
        if status is RunStatus.RUNNING and not late:
            if finish_stragglers(self._ctx):  # the last items go synchronously
                submit(self._ctx)  # a batch packed just before, stopped at the next step
            else:
                self._pack_and_submit()
        elif late:
            reclaim_abandoned(self._ctx)
        if status is RunStatus.CANCELLING:
            wind_down(self._ctx)
        end_if_done(self._ctx)

    def _pack_and_submit(self) -> None:
        """Submit what earlier steps left, then pack batch after batch, each submitted as
        soon as it is packed. Where the store may be used from two threads, a batch is
        uploaded and created on a second thread while the next one is packed (uploads wait
        on the network; packing works the CPU and the disk)."""
        ctx = self._ctx
        if not ctx.store.thread_safe:
            submit(ctx)  # batches left prepared or uploaded by an earlier step
            while ctx.run.status is RunStatus.RUNNING and self._pack_one():
                submit(ctx)
                self._reload()
            return
        with ThreadPoolExecutor(1, thread_name_prefix="batchor-submit") as pool:
            sending = pool.submit(submit, ctx)
            while ctx.run.status is RunStatus.RUNNING and self._pack_one():
                sending.result()  # one batch in flight at a time; errors surface here
                self._reload()
                sending = pool.submit(submit, ctx)
            sending.result()
            self._reload()

    def _pack_one(self) -> int:
        """Pack one batch, unless another worker is packing the run (then 0: this step only
        submits, polls and collects), or once the run's deadline has passed. The batches
        this worker cut while ingesting are sealed whoever is packing: nobody else may seal
        them, and sealing reads no pending item another packer could take."""
        ctx = self._ctx
        if deadline_passed(ctx.run) or ctx.run.finish_mode == FINISH_MODE_SYNC:
            return 0
        if ctx.plan is not None and ctx.plan.ready:
            return pack(ctx, max_batches=1)
        with ctx.store.packing(ctx.run.pk) as mine:
            return pack(ctx, max_batches=1) if mine else 0

    def ingest_pending(self, on_progress: Callable[[int], None] | None = None) -> None:
        """Accept what remains of the source, when this handle has the job (from
        `BatchRunner.start`) and ingestion is not complete; otherwise do nothing."""
        job = self._job
        run = self._ctx.run
        if job is None or self._items is None or run.ingest_complete:
            return
        part_of = None
        if isinstance(self._items, CheckpointedItemSource):
            stream: Iterator[tuple[Any, Any]] = self._items.iter_from(run.source_checkpoint)
            part_of = part_locator(self._items)
        elif run.ingested_count:
            raise RunStateError(
                f"run {run.run_id!r} was interrupted mid-ingest and its items come from a plain "
                "iterable, which cannot resume; use a CheckpointedItemSource (JsonlItemSource, "
                "CsvItemSource, ParquetItemSource, CompositeItemSource or your own) or start a "
                "new run"
            )
        else:
            stream = positions(self._items)
        with old_objects_frozen():
            ingest(
                self._ctx,
                stream,
                job.build_prompt,
                on_progress=on_progress,
                part_of=part_of,
            )
        self._reload()

    def wait(
        self,
        timeout: float | None = None,
        *,
        poll_interval: float = 0.5,
        max_poll_interval: float = 30.0,
        on_progress: Callable[[RunSummary], None] | None = None,
        progress_every: float = 0.0,
    ) -> RunSummary:
        """Refresh until the run is terminal; returns its final summary.

        The pause between refreshes starts at ``poll_interval`` (or ``max_poll_interval``,
        if shorter) and doubles up to ``max_poll_interval`` while nothing changes but what
        another worker's ingestion adds (items pending or queued, batches still forming); a
        change of status, of the batches, or of the items ended (collected, answered
        synchronously, failed, cancelled) starts it again at ``poll_interval`` (see
        `batchor.pacing`). While webhooks flow (a provider webhook drove the run in the last
        15 minutes, see `batchor.webhooks`), every pause is ``max_poll_interval``: the
        webhooks move the run on, polling is only the fallback.

        ``on_progress`` gets the summary after the first refresh, then at most once every
        ``progress_every`` seconds, and the final one. A summary counts the run's items (a
        scan of them all), so it is built only for those calls, at the end, and once no
        batch is live (to tell whether the run is done): workers waiting on one large run
        cost the store little.

        Raises:
            ConfigurationError: an argument is not a finite number of seconds, is negative,
                or a pause is 0 (checked before anything is refreshed).
            WaitTimeout: ``timeout`` seconds passed first (the run goes on; wait again).
            RunStateError: the run is paused and nothing is in flight any more.
        """
        timeout, poll_interval, max_poll_interval, progress_every = wait_arguments(
            timeout, poll_interval, max_poll_interval, progress_every
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        pacer = Pacer(poll_interval, max_poll_interval)
        reported: float | None = None  # when on_progress last had a summary

        def ended(summary: RunSummary, due: bool) -> bool:
            nonlocal reported
            if on_progress is not None and (due or summary.is_terminal):
                on_progress(summary)
                reported = time.monotonic()
            return summary.is_terminal

        while True:
            self._step()
            self._reload()
            run = self._ctx.run
            due = on_progress is not None and (
                reported is None or time.monotonic() - reported >= progress_every
            )
            summary = self.summary() if due or run.status.is_terminal else None
            if summary is not None:
                if ended(summary, due):
                    return summary
                run = self._ctx.run
            batches = self._ctx.store.batch_counts(run.pk)
            if run.status is RunStatus.PAUSED and not in_flight(batches):
                raise RunStateError(
                    f"run {self.run_id!r} is paused ({run.pause_reason}) with nothing in "
                    f"flight: resume it (`batchor resume {self.run_id}`, or Run.resume())"
                )
            interval = pacer.pause(progress(run, batches), run.webhook_at, time.time())
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    last = summary or self.summary()
                    if ended(last, False):  # ended elsewhere since this refresh
                        return last
                    raise WaitTimeout(
                        f"run {self.run_id!r} still {last.status.value} after {timeout} s", last
                    )
                interval = min(interval, left)
            time.sleep(interval)

    # ---- controls --------------------------------------------------------------------
    def pause(self, reason: str = "paused by request") -> RunSummary:
        """Stop sending new batches; batches in flight are still polled and collected.

        Raises:
            RunStateError: the run is not running (or already paused).
        """
        self._reload()
        if self._ctx.run.status is RunStatus.PAUSED:
            return self.summary()
        if not self._ctx.store.set_run_status(
            self._ctx.run.pk,
            RunStatus.PAUSED,
            expected=[RunStatus.RUNNING],
            pause_reason=reason,
            pause_code=PauseCode.REQUEST,
        ):
            raise RunStateError(f"cannot pause run {self.run_id!r}: it is {self._status()}")
        return self.summary()

    def resume(self, *, max_cost_usd: float | None = None) -> RunSummary:
        """Continue a paused run (also one paused by the provider's ``insufficient_quota``
        or by its spending cap), then take one reconcile step.

        On a running run it only takes the step.

        Args:
            max_cost_usd: The run's new spending cap in USD (it replaces the cap, the
                deadline is kept). A run paused by its cap goes on only once the cap leaves
                room for its next batch; resumed without raising it, it pauses again there.

        Raises:
            ConfigurationError: ``max_cost_usd`` is not a positive number (nothing changed).
            RunStateError: the run is cancelling or has ended.
        """
        check_cost_cap("max_cost_usd", max_cost_usd)
        self._reload()
        run = self._ctx.run
        if max_cost_usd is not None:
            if run.status not in (RunStatus.RUNNING, RunStatus.PAUSED):
                raise RunStateError(f"cannot resume run {self.run_id!r}: it is {self._status()}")
            self._ctx.store.set_run_limits(
                run.pk, deadline_at=run.deadline_at, max_cost_usd=float(max_cost_usd)
            )
        if run.status is not RunStatus.RUNNING:
            if not self._ctx.store.set_run_status(
                run.pk, RunStatus.RUNNING, expected=[RunStatus.PAUSED]
            ):
                raise RunStateError(f"cannot resume run {self.run_id!r}: it is {self._status()}")
            self._ctx.store.set_backoff(run.pk, None, 0)
        return self.refresh()

    def cancel(self, *, remote: bool = False) -> RunSummary:
        """Cancel the run: nothing new is sent, and items never sent end ``cancelled``.

        With ``remote=False`` batches already at the provider run to their end and their
        results are collected. With ``remote=True`` they are cancelled at the provider too;
        the lines they answered before stopping are still collected (and paid for), the rest
        end ``cancelled``. Cancelling is irreversible. Returns the summary after one step.

        Raises:
            RunStateError: the run already completed.
        """
        self._reload()
        status = self._ctx.run.status
        if status in (RunStatus.CANCELLING, RunStatus.CANCELLED):
            return self.refresh()
        if not self._ctx.store.request_cancel(self._ctx.run.pk, remote=remote):
            raise RunStateError(f"cannot cancel run {self.run_id!r}: it is {self._status()}")
        return self.refresh()

    def _status(self) -> str:
        self._reload()
        return self._ctx.run.status.value

    # ---- reading ---------------------------------------------------------------------
    def summary(self) -> RunSummary:
        """Counts and status from the store (no provider call)."""
        self._reload()
        run = self._ctx.run
        usage = Usage(run.input_tokens, run.output_tokens)
        sync_usage = Usage(run.sync_input_tokens, run.sync_output_tokens)
        sync_cost = self._cost(sync_usage)
        failed, timed_out, requeued = self._stop_counts(run)
        return RunSummary(
            run_id=run.run_id,
            status=run.status,
            items=self._ctx.store.item_counts(run.pk),
            batches=self._ctx.store.batch_counts(run.pk),
            ingest_complete=run.ingest_complete,
            usage=usage,
            pause_reason=run.pause_reason,
            cost_usd=self._cost(usage),
            pause_code=run.pause_code,
            deadline_at=run.deadline_at,
            max_cost_usd=run.max_cost_usd,
            deadline_failed=failed,
            timed_out_batches=timed_out,
            timeout_requeued=requeued,
            committed_cost_usd=None
            if run.max_cost_usd is None
            else committed_cost(self._ctx.store.batches(run.pk, list(BatchStatus))),
            sync_answered=run.sync_answered,
            sync_usage=sync_usage,
            sync_cost_usd=None if sync_cost is None else SYNC_PRICE_FACTOR * sync_cost,
            duplicate_answers=0
            if run.finish_mode is None
            else self._ctx.store.duplicate_count(run.pk),
        )

    def _stop_counts(self, run: RunRecord) -> tuple[int, int, int]:
        """Items the deadline failed, batches stopped for their timeout and the items those
        handed back: one query, none for a run with neither limit (items are counted only
        once the deadline has passed)."""
        if run.deadline_at is None and self._ctx.settings.batch_timeout is None:
            return 0, 0, 0
        return self._ctx.store.stop_counts(run.pk, deadline_items=deadline_passed(run))

    def batches(self) -> list[BatchInfo]:
        """The run's provider batches, oldest first, with the tokens each billed and its
        cost."""
        infos = []
        for b in self._ctx.store.batches(self._ctx.run.pk, list(BatchStatus)):
            usage = Usage(b.input_tokens or 0, b.output_tokens or 0)
            infos.append(
                BatchInfo(
                    batch_key=b.batch_key,
                    status=b.status.value,
                    provider_batch_id=b.provider_batch_id,
                    provider_status=b.provider_status,
                    requests=b.request_count,
                    usage=usage,
                    cost_usd=self._cost(usage),
                )
            )
        return infos

    def _cost(self, usage: Usage) -> float | None:
        config = self._ctx.run.config
        return self._runner.prices.cost(str(config.get("price_model") or config["model"]), usage)

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the run's job definition."""
        return self._ctx.run.fingerprint

    @property
    def collected(self) -> CollectResult | None:
        """What `batchor.steps.collect` last wrote for this run, if anything."""
        self._reload()
        stored = self._ctx.run.collected
        return None if stored is None else CollectResult.from_dict(dict(stored))

    def record_collected(self, result: CollectResult) -> None:
        """Remember what `batchor.steps.collect` wrote (so a repeat writes nothing)."""
        self._ctx.store.record_collected(self._ctx.run.pk, result.to_dict())

    @property
    def model(self) -> str:
        """The model the run's requests name (e.g. ``"gpt-4.1-mini"``)."""
        return str(self._ctx.run.config["model"])

    @property
    def settings(self) -> RunSettings:
        """The run's stored settings."""
        return self._ctx.settings
