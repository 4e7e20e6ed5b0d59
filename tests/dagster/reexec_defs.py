"""Definitions loaded by reconstruction for the re-execution test: a partitioned batchor asset
whose resource is configured by environment variables and crashes once after submission."""

from __future__ import annotations

import os

from batchor_dagster import batchor_asset
from dagster import Definitions, JobDefinition, define_asset_job, in_process_executor

from .conftest import DAYS, day_job
from .crashing import CrashOnceResource

labels = batchor_asset(
    name="labels",
    job=day_job,
    destination=os.environ.get("REEXEC_OUT", "out") + "/{partition_key}.jsonl",
    partitions_def=DAYS,
    poll_interval=0.2,
)

defs = Definitions(
    assets=[labels],
    jobs=[define_asset_job("labels_job", [labels], executor_def=in_process_executor)],
    resources={"batchor": CrashOnceResource(crash_flag=os.environ.get("CRASH_FLAG", "crash"))},
)


def labels_job() -> JobDefinition:
    """The job, for `reconstructable`."""
    return defs.resolve_job_def("labels_job")
