"""batchor for Apache Airflow 3: retry-safe, deferrable operators, a sensor and a trigger that
run provider batch workloads (OpenAI, Azure OpenAI, Anthropic, Gemini) through batchor
exactly once.

Importing this package does not import Airflow; the operator, sensor, trigger and hook
classes are loaded on first access (``from batchor_airflow import BatchorRunOperator``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchor_airflow.hooks import BatchorHook
    from batchor_airflow.operators import (
        BatchorCollectOperator,
        BatchorRunOperator,
        BatchorStartOperator,
    )
    from batchor_airflow.sensors import BatchorSensor
    from batchor_airflow.triggers import BatchorRunTrigger

__version__ = "0.1.0"

_LAZY = {
    "BatchorHook": "batchor_airflow.hooks",
    "BatchorStartOperator": "batchor_airflow.operators",
    "BatchorCollectOperator": "batchor_airflow.operators",
    "BatchorRunOperator": "batchor_airflow.operators",
    "BatchorSensor": "batchor_airflow.sensors",
    "BatchorRunTrigger": "batchor_airflow.triggers",
}

__all__ = [
    "BatchorCollectOperator",
    "BatchorHook",
    "BatchorRunOperator",
    "BatchorRunTrigger",
    "BatchorSensor",
    "BatchorStartOperator",
    "get_provider_info",
]

_INTEGRATION = "batchor"


def get_provider_info() -> dict[str, Any]:
    """The provider metadata Airflow reads through the ``apache_airflow_provider`` entry point.

    It imports nothing from Airflow. No connection type is registered: the hook reads the
    ``openai`` connection format (password = API key, host = base URL) for any provider
    (the ``provider`` extra names which).
    """
    return {
        "package-name": "batchor-airflow",
        "name": "batchor",
        "description": (
            "Run provider batch API workloads (OpenAI, Anthropic, ...) durably and exactly "
            "once with batchor: retry-safe, deferrable operators, a sensor and a trigger."
        ),
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": _INTEGRATION,
                "external-doc-url": "https://github.com/batchor/batchor",
                "how-to-guide": [],
                "tags": ["software"],
            }
        ],
        "operators": [
            {"integration-name": _INTEGRATION, "python-modules": ["batchor_airflow.operators"]}
        ],
        "sensors": [
            {"integration-name": _INTEGRATION, "python-modules": ["batchor_airflow.sensors"]}
        ],
        "triggers": [
            {"integration-name": _INTEGRATION, "python-modules": ["batchor_airflow.triggers"]}
        ],
        "hooks": [{"integration-name": _INTEGRATION, "python-modules": ["batchor_airflow.hooks"]}],
    }


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'batchor_airflow' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
