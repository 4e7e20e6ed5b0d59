"""How an orchestrator is given a `BatchJob`: the job itself, a callable that builds it, or
the ``"module:name"`` import path of either (the only form a DAG argument, a deployment
parameter or a run config can carry), loaded with `batchor.loading.load_object`, the one
importer of such paths; and the run's time and money limits an orchestrator task may set
over the job's own (`with_limits`), in the forms a template or a JSON parameter carries."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from batchor.errors import ConfigurationError
from batchor.jobs import BatchJob, check_cost_cap, check_deadline
from batchor.loading import load_object

__all__ = [
    "DeadlineSpec",
    "JobSpec",
    "build_job",
    "cost_cap_from",
    "deadline_from",
    "describe_job",
    "load_object",
    "with_limits",
]

JobSpec: TypeAlias = BatchJob | Callable[..., BatchJob] | str
"""A `BatchJob`, a callable returning one, or the ``"package.module:name"`` path of either."""

DeadlineSpec: TypeAlias = timedelta | datetime | float | str
"""A run's deadline as an orchestrator task takes it: a ``timedelta`` from the run's
creation, a timezone-aware ``datetime``, a number of seconds from the run's creation, or a
string of either of the last two (``"3600"``, ``"2026-11-23T06:00:00+00:00"``), as an
Airflow template or a deployment's JSON parameter renders them."""


def build_job(
    spec: JobSpec,
    kwargs: Mapping[str, Any] | None = None,
    *,
    deadline: DeadlineSpec | None = None,
    max_cost_usd: float | str | None = None,
) -> BatchJob:
    """The `BatchJob` that ``spec`` gives: imported if it is a path, called with ``kwargs``
    if it is a callable, and checked; with ``deadline`` and ``max_cost_usd``, when given, in
    place of the job's own (`with_limits`; they are checked before the factory is called).

    An exception the factory raises propagates unchanged, so `batchor.is_permanent` decides
    whether a retry can fix it (a store or file the factory reads may be down for a moment).

    Raises:
        ConfigurationError: ``spec`` cannot be imported, ``kwargs`` were given for a job
            object, the result is not a `BatchJob`, or a limit is not valid.
    """
    deadline = deadline_from(deadline)
    max_cost_usd = cost_cap_from(max_cost_usd)
    value: Any = load_object(spec, what="job") if isinstance(spec, str) else spec
    if not isinstance(value, BatchJob):
        if not callable(value):
            raise ConfigurationError(
                f"job must be a BatchJob, a callable returning one or the 'module:name' path of "
                f"either; got {describe_job(spec)}"
            )
        value = value(**dict(kwargs or {}))  # its own errors propagate as they are
    elif kwargs:
        raise ConfigurationError(
            f"job {describe_job(spec)} is a BatchJob, not a factory: it takes no arguments "
            f"(got {', '.join(sorted(kwargs))})"
        )
    if not isinstance(value, BatchJob):
        raise ConfigurationError(
            f"job factory {describe_job(spec)} returned {type(value).__name__}, not a BatchJob"
        )
    return with_limits(value, deadline=deadline, max_cost_usd=max_cost_usd)


def with_limits(
    job: BatchJob,
    *,
    deadline: DeadlineSpec | None = None,
    max_cost_usd: float | str | None = None,
) -> BatchJob:
    """``job`` with ``deadline`` and ``max_cost_usd`` in place of its own, where given
    (``None`` keeps the job's). The one place an orchestrator task's limits meet the job.

    Raises:
        ConfigurationError: a limit is not valid (names the setting and the value).
    """
    changes: dict[str, Any] = {}
    if (when := deadline_from(deadline)) is not None:
        changes["deadline"] = when
    if (cap := cost_cap_from(max_cost_usd)) is not None:
        changes["max_cost_usd"] = cap
    return dataclasses.replace(job, **changes) if changes else job


def deadline_from(value: object, name: str = "deadline") -> timedelta | datetime | None:
    """A `DeadlineSpec` as `BatchJob.deadline` takes it: seconds become a ``timedelta``, an
    ISO 8601 string a ``datetime``; ``None`` stays ``None``.

    Raises:
        ConfigurationError: ``value`` is none of these, not positive, or a datetime without
            a timezone (names ``name`` and the value).
    """
    if value is None:
        return None
    parsed: object = value
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise ConfigurationError(
                    f"{name} must be a timedelta, an aware datetime, a number of seconds or an "
                    f"ISO 8601 datetime with its offset, got {value!r}"
                ) from None
    if isinstance(parsed, int | float) and not isinstance(parsed, bool):
        if not math.isfinite(parsed):
            raise ConfigurationError(f"{name} must be a finite number of seconds, got {value!r}")
        parsed = timedelta(seconds=parsed)
    check_deadline(name, parsed)
    assert isinstance(parsed, timedelta | datetime)  # check_deadline refuses anything else
    return parsed


def cost_cap_from(value: object, name: str = "max_cost_usd") -> float | None:
    """A spending cap as `BatchJob.max_cost_usd` takes it: a number of USD, or its string
    (``"12.5"``); ``None`` stays ``None``.

    Raises:
        ConfigurationError: ``value`` is not a positive, finite number (names ``name``).
    """
    if value is None:
        return None
    parsed: object = value
    if isinstance(value, str):
        try:
            parsed = float(value.strip())
        except ValueError:
            raise ConfigurationError(f"{name} must be a number of USD, got {value!r}") from None
    check_cost_cap(name, parsed)
    assert isinstance(parsed, int | float)
    return float(parsed)


def describe_job(spec: object) -> str:
    """A short, secret-free description of a job spec, for parameters, logs and errors."""
    if isinstance(spec, str):
        return repr(spec)
    if isinstance(spec, BatchJob):
        config = spec.provider_config
        return f"<BatchJob model={config.model} endpoint={config.endpoint}>"
    module = getattr(spec, "__module__", None)
    name = getattr(spec, "__qualname__", None) or type(spec).__qualname__
    return f"<callable {module}:{name}>" if module else f"<callable {name}>"
