"""A run handle: refresh (one reconcile step), wait, summary, results."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from batchor.artifacts.base import ArtifactStore
from batchor.engine.cancel import wind_down
from batchor.engine.collect import collect
from batchor.engine.context import RunContext, RunSettings, log
from batchor.engine.ingest import ingest, positions
from batchor.engine.pack import pack
from batchor.engine.poll import poll
from batchor.engine.submit import submit
from batchor.errors import RunNotFoundError, RunStateError, WaitTimeout
from batchor.exports import export_rows
from batchor.handles import CollectResult
from batchor.items import BatchItem
from batchor.reading import ResultBuilder, cursor_of, cursor_position
from batchor.results import BatchInfo, ItemResult, ResultPage, RunSummary, Usage
from batchor.retention import ArtifactExport, PruneReport, export_artifacts, prune_artifacts
from batchor.sources.base import CheckpointedItemSource, part_locator
from batchor.states import BatchStatus, ItemStatus, RunStatus

if TYPE_CHECKING:
    from pydantic import BaseModel

    from batchor.jobs import BatchJob
    from batchor.runner import BatchRunner

_RESULT_PAGE = 2_000
_OPEN = (ItemStatus.PENDING, ItemStatus.QUEUED, ItemStatus.SUBMITTED)


class Run:
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

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self._ctx.run.run_id

    def _reload(self) -> None:
        record = self._ctx.store.get_run(self.run_id)
        if record is None:
            raise RunNotFoundError(f"run {self.run_id!r} no longer exists in the store")
        self._ctx.run = record

    # ---- driving ---------------------------------------------------------------------
    def refresh(self) -> RunSummary:
        """One reconcile step: ingest what remains (when the job is at hand), poll live
        batches, collect ended ones, pack pending items and submit new batches. Returns the
        summary after it."""
        self._reload()
        status = self._ctx.run.status
        if status.is_terminal:
            return self.summary()
        if status is RunStatus.RUNNING:
            self.ingest_pending()
        poll(self._ctx)
        collect(self._ctx)
        self._reload()
        status = self._ctx.run.status
        if status is RunStatus.RUNNING:
            self._pack_and_submit()
        elif status is RunStatus.CANCELLING:
            wind_down(self._ctx)
        return self._finish_if_done()

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
        submits, polls and collects)."""
        with self._ctx.store.packing(self._ctx.run.pk) as mine:
            return pack(self._ctx, max_batches=1) if mine else 0

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
        ingest(
            self._ctx,
            stream,
            job.build_prompt,
            on_progress=on_progress,
            part_of=part_of,
        )
        self._reload()

    def _finish_if_done(self) -> RunSummary:
        summary = self.summary()
        run = self._ctx.run
        if run.status.is_terminal or _live_batches(summary):
            return summary
        if run.status is RunStatus.CANCELLING:
            self._ctx.store.cancel_items(run.pk)
            if self._ctx.store.set_run_status(
                run.pk, RunStatus.CANCELLED, expected=[RunStatus.CANCELLING]
            ):
                log.info("run %s: cancelled", run.run_id)
            return self.summary()
        if not run.ingest_complete or any(summary.items[s] for s in _OPEN):
            return summary
        final = RunStatus.COMPLETED_WITH_FAILURES if summary.failed else RunStatus.COMPLETED
        if self._ctx.store.set_run_status(
            run.pk, final, expected=[RunStatus.RUNNING, RunStatus.PAUSED]
        ):
            log.info("run %s: %s", run.run_id, final.value)
        return self.summary()

    def wait(
        self,
        timeout: float | None = None,
        *,
        poll_interval: float = 0.5,
        max_poll_interval: float = 30.0,
        on_progress: Callable[[RunSummary], None] | None = None,
    ) -> RunSummary:
        """Refresh until the run is terminal; returns its final summary.

        The pause between refreshes starts at ``poll_interval`` and doubles up to
        ``max_poll_interval`` while nothing changes.

        Raises:
            WaitTimeout: ``timeout`` seconds passed first (the run goes on; wait again).
            RunStateError: the run is paused and nothing is in flight any more.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = poll_interval
        previous: dict[str, Any] | None = None
        while True:
            summary = self.refresh()
            if on_progress is not None:
                on_progress(summary)
            if summary.is_terminal:
                return summary
            if summary.is_stalled:
                raise RunStateError(
                    f"run {self.run_id!r} is paused ({summary.pause_reason}) with nothing in "
                    f"flight: resume it (`batchor resume {self.run_id}`, or Run.resume())"
                )
            state = summary.to_dict()
            interval = poll_interval if state != previous else min(interval * 2, max_poll_interval)
            previous = state
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise WaitTimeout(
                        f"run {self.run_id!r} still {summary.status.value} after {timeout} s",
                        summary,
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
            self._ctx.run.pk, RunStatus.PAUSED, expected=[RunStatus.RUNNING], pause_reason=reason
        ):
            raise RunStateError(f"cannot pause run {self.run_id!r}: it is {self._status()}")
        return self.summary()

    def resume(self) -> RunSummary:
        """Continue a paused run (also one paused by the provider's ``insufficient_quota``),
        then take one reconcile step.

        On a running run it only takes the step.

        Raises:
            RunStateError: the run is cancelling or has ended.
        """
        self._reload()
        run = self._ctx.run
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
        return RunSummary(
            run_id=run.run_id,
            status=run.status,
            items=self._ctx.store.item_counts(run.pk),
            batches=self._ctx.store.batch_counts(run.pk),
            ingest_complete=run.ingest_complete,
            usage=usage,
            pause_reason=run.pause_reason,
            cost_usd=self._cost(usage),
        )

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

    def results(
        self, *, model: type[BaseModel] | None = None, include_pending: bool = False
    ) -> Iterator[ItemResult]:
        """Terminal results in item order, streamed page by page from the store.

        Args:
            model: The Pydantic model to validate structured outputs into; defaults to the
                job's model, else the one stored with the run (imported by path). When none
                can be had, ``output`` is the parsed JSON.
            include_pending: Also yield items that are not terminal yet.
        """
        self._reload()
        builder = self._builder(model)
        statuses = (
            None
            if include_pending
            else (ItemStatus.COMPLETED, ItemStatus.FAILED, ItemStatus.CANCELLED)
        )
        after = 0
        while rows := self._ctx.store.item_rows(self._ctx.run.pk, after, _RESULT_PAGE, statuses):
            for row in rows:
                yield builder.result(row)
            after = rows[-1].seq

    def read_results(
        self, *, after: int = 0, limit: int = 1_000, model: type[BaseModel] | None = None
    ) -> ResultPage:
        """One page of terminal results in the order items ended, for reading a run while it
        is still going: start with ``after=0`` and pass each page's ``next_cursor`` on. Each
        terminal item is returned exactly once across pages.

        Args:
            after: The cursor of the previous page (0 for the first).
            limit: The most results in a page.
            model: As for `results`.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self._reload()  # before reading rows: a terminal run has every item ended
        terminal = self._ctx.run.status.is_terminal
        rows = self._ctx.store.terminal_rows(self._ctx.run.pk, cursor_position(after), limit)
        builder = self._builder(model)
        return ResultPage(
            results=[builder.result(row) for row in rows],
            next_cursor=cursor_of(rows[-1]) if rows else after,
            complete=terminal and len(rows) < limit,
        )

    def export_results(self, path: str | os.PathLike[str]) -> int:
        """Write every terminal result to ``path`` as JSONL, CSV or Parquet (by extension),
        streamed page by page and renamed into place when complete. Returns how many.

        JSONL lines are `ItemResult.to_dict` objects. CSV and Parquet have one column
        per field (``item_id, status, output, output_text, error_class, error_message,
        error_retryable, error_attempt, attempts, input_tokens, output_tokens, source, row,
        metadata``), with a structured ``output`` and the ``metadata`` as JSON text. An
        embeddings run's ``output`` is a JSON array in JSONL, its JSON text in CSV, a
        ``list<double>`` column in Parquet.
        """
        self._reload()
        structured, vectors = self._ctx.settings.structured, self._vectors
        return export_rows(self._ctx.store, self._ctx.run, structured, path, vectors=vectors)

    def export_artifacts(
        self, dest: str | os.PathLike[str] | ArtifactStore, *, force: bool = False
    ) -> ArtifactExport:
        """Copy the run's request files, batch inputs and raw outputs to ``dest`` (a new or
        empty directory or artifact store; ``force`` allows a non-empty one, where only files
        batchor wrote are replaced, else `ConfigurationError`), with a ``manifest.json``
        listing every file's kind, size and SHA-256 and every batch's usage, for audit."""
        self._reload()
        return export_artifacts(self._ctx, dest, force=force)

    def prune_artifacts(
        self, *, include_raw_outputs: bool = False, force: bool = False
    ) -> PruneReport:
        """Delete the files of a terminal run to reclaim space: request files and batch
        inputs, and with ``include_raw_outputs`` the raw output and error files too. Results
        stay readable (they are in the store).

        Raises:
            RunStateError: The run is not terminal; or raw outputs would be deleted that no
                `export_artifacts` made since they were collected holds (pass
                ``force=True`` to delete them anyway).
        """
        self._reload()
        return prune_artifacts(self._ctx, include_raw_outputs=include_raw_outputs, force=force)

    @property
    def _vectors(self) -> bool:
        """Whether outputs are embedding vectors (the codec's rule, built from the stored
        config, so a run read back by `BatchRunner.get_run` knows it too)."""
        return self._ctx.codec.output_kind == "vector"

    def _builder(self, model: type[BaseModel] | None) -> ResultBuilder:
        output_model = model or self._ctx.output_model
        structured = self._ctx.settings.structured
        return ResultBuilder(self._ctx.run, structured, output_model, vectors=self._vectors)


def _live_batches(summary: RunSummary) -> int:
    return sum(n for status, n in summary.batches.items() if status != "collected")
