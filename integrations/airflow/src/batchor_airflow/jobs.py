"""Build the `BatchJob` of an operator at execute time, from a callable or a
``"module:function"`` path (never at DAG parse time)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from batchor import BatchJob

JobFactory = Callable[..., BatchJob] | str
"""A callable returning a `BatchJob`, or the ``"module:function"`` path of one."""


def build_job(factory: JobFactory, kwargs: Mapping[str, Any] | None = None) -> BatchJob:
    """Import ``factory`` if it is a path, call it with ``kwargs`` and check the result.

    Raises:
        AirflowFailException: the path cannot be imported or the callable returns no
            `BatchJob` (a retry would not help).
    """
    func = _resolve(factory) if isinstance(factory, str) else factory
    if not callable(func):
        raise AirflowFailException(f"job must be callable or 'module:function', got {factory!r}")
    job = func(**dict(kwargs or {}))
    if not isinstance(job, BatchJob):
        raise AirflowFailException(
            f"job factory {factory!r} returned {type(job).__name__}, not a batchor BatchJob"
        )
    return job


def _resolve(path: str) -> Any:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise AirflowFailException(
            f"job path must look like 'package.module:function', got {path!r}"
        )
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise AirflowFailException(f"cannot import job factory {path!r}: {exc}") from exc
    return obj
