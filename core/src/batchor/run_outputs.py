"""The reading half of a run handle: its results (streamed, or page by page while it runs),
their export, and the run's files (exported for audit, pruned)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from batchor.artifacts.base import ArtifactStore
from batchor.engine.context import RunContext
from batchor.errors import RunNotFoundError
from batchor.exports import export_rows
from batchor.reading import ResultBuilder, cursor_of, cursor_position
from batchor.results import ItemResult, ResultPage
from batchor.retention import ArtifactExport, PruneReport, export_artifacts, prune_artifacts
from batchor.states import ItemStatus

if TYPE_CHECKING:
    from pydantic import BaseModel

_RESULT_PAGE = 2_000


class RunOutputs:
    """What `Run` reads and exports. It works from the run's context alone, so a run read
    back by `BatchRunner.get_run` in any process has all of it."""

    _ctx: RunContext

    @property
    def run_id(self) -> str:
        """The run's id."""
        return self._ctx.run.run_id

    def _reload(self) -> None:
        record = self._ctx.store.get_run(self.run_id)
        if record is None:
            raise RunNotFoundError(f"run {self.run_id!r} no longer exists in the store")
        self._ctx.run = record

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
