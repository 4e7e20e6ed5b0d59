"""batchor for Apache Airflow (work in progress)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    """The provider metadata Airflow reads through the ``apache_airflow_provider`` entry point."""
    return {"package-name": "batchor-airflow", "name": "batchor", "description": "batchor"}
