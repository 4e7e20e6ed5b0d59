"""A `BatchorResource` whose run crashes once, right after the run's batches were submitted:
the failure a worker killed mid-materialisation leaves behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from batchor_dagster import BatchorResource

from batchor import BatchJob, BatchRunner, Run


class SimulatedCrash(RuntimeError):
    """Raised once after submission."""


class _CrashAfterStart(BatchRunner):
    def __init__(self, flag: Path, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flag = flag

    def start(self, job: BatchJob, run_id: str | None = None, **kwargs: Any) -> Run:
        run = super().start(job, run_id, **kwargs)  # ingests and submits every batch
        if self._flag.exists():
            self._flag.unlink()
            raise SimulatedCrash(f"worker lost after submitting run {run.run_id}")
        return run


class CrashOnceResource(BatchorResource):
    """Crashes after submission while the file ``crash_flag`` exists (and removes it)."""

    crash_flag: str

    def runner(self) -> BatchRunner:
        """A runner that crashes after `start` submitted, once."""
        return _CrashAfterStart(
            Path(self.crash_flag),
            store=self.store,
            artifacts=self.artifacts,
            api_key=self.openai_api_key,
            base_url=self.openai_base_url,
        )
