"""Classify the support tickets of a CSV file with a Pydantic schema, through the OpenAI Batch
API, in one retry-safe, deferrable Airflow task (see docs/how-to/airflow.md).

The job is built at execute time, never when the scheduler parses this file. The results land
in ``$BATCHOR_EXAMPLE_RESULTS`` (default ``.batchor/example/airflow``, relative to the worker's
working directory); use an object-store URL (``s3://bucket/prefix``) when workers differ.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Literal

from airflow.sdk import DAG
from batchor_airflow import BatchorRunOperator
from pydantic import BaseModel, Field

from batchor import (
    BatchItem,
    BatchJob,
    BatchLimits,
    CsvItemSource,
    OpenAIProviderConfig,
    PromptParts,
)

TICKETS = Path(__file__).with_name("tickets.csv")
RESULTS = os.environ.get("BATCHOR_EXAMPLE_RESULTS", ".batchor/example/airflow")
# A real batch takes minutes to hours: poll every 5-15 minutes in production.
POLL_INTERVAL = float(os.environ.get("BATCHOR_EXAMPLE_POLL_INTERVAL", "10"))


class TicketLabel(BaseModel):
    """What we want to know about each ticket."""

    category: Literal["billing", "bug", "feature_request", "account", "other"]
    urgent: bool = Field(description="The customer is blocked or is losing money.")
    summary: str = Field(description="The ticket in at most ten words.")


def ticket_prompt(item: BatchItem) -> PromptParts:
    """One request per CSV row: the row's ``text`` column is the prompt."""
    return PromptParts(
        system="Classify this customer support ticket.",
        prompt=item.payload["text"],
    )


def tickets_job() -> BatchJob:
    """The batchor job: every row of tickets.csv, one model, one schema."""
    return BatchJob(
        items=CsvItemSource(TICKETS, id_field="ticket_id"),
        build_prompt=ticket_prompt,
        provider_config=OpenAIProviderConfig(model="gpt-4.1-mini"),
        structured_output=TicketLabel,
        limits=BatchLimits(max_requests=10),  # small batches, to show several at once
    )


with DAG(
    dag_id="batchor_classify_tickets",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["batchor", "example"],
    doc_md=__doc__,
):
    BatchorRunOperator(
        task_id="classify",
        job=tickets_job,
        # One file per DAG run. `run_id` exists for every run; `ds`, `ts_nodash` and the other
        # logical-date fields do not exist in manual runs (`airflow dags trigger`, the UI).
        destination=RESULTS + "/tickets-{{ run_id | replace(':', '') }}.jsonl",
        deferrable=True,
        poll_interval=POLL_INTERVAL,
    )
