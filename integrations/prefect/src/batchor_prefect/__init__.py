"""batchor for Prefect: a `BatchorConfig` block, cached and retry-safe tasks to start, wait for
and collect a batchor run, and the ready flow `run_batch_job` composing them.

Importing it registers the block type (the ``prefect.collections`` entry point points here).
"""

from batchor.errors import PERMANENT_ERRORS, is_permanent
from batchor.steps import JobSpec, build_job
from batchor_prefect.config import BatchorConfig
from batchor_prefect.flows import BatchJobFlow, run_batch_job
from batchor_prefect.keys import flow_run_key
from batchor_prefect.retries import retry_unless_permanent
from batchor_prefect.summary import artifact_key, publish_summary
from batchor_prefect.tasks import collect_batch_run, start_batch_run, wait_for_batch_run

__all__ = [
    "PERMANENT_ERRORS",
    "BatchJobFlow",
    "BatchorConfig",
    "JobSpec",
    "artifact_key",
    "build_job",
    "collect_batch_run",
    "flow_run_key",
    "is_permanent",
    "publish_summary",
    "retry_unless_permanent",
    "run_batch_job",
    "start_batch_run",
    "wait_for_batch_run",
]
