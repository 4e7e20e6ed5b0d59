"""How an orchestrator is given a `BatchJob`: the job itself, a callable that builds it, or
the ``"module:name"`` import path of either (the only form a DAG argument, a deployment
parameter or a run config can carry), loaded with `batchor.loading.load_object`, the one
importer of such paths."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from batchor.errors import ConfigurationError
from batchor.jobs import BatchJob
from batchor.loading import load_object

__all__ = ["JobSpec", "build_job", "describe_job", "load_object"]

JobSpec: TypeAlias = BatchJob | Callable[..., BatchJob] | str
"""A `BatchJob`, a callable returning one, or the ``"package.module:name"`` path of either."""


def build_job(spec: JobSpec, kwargs: Mapping[str, Any] | None = None) -> BatchJob:
    """The `BatchJob` that ``spec`` gives: imported if it is a path, called with ``kwargs``
    if it is a callable, and checked.

    An exception the factory raises propagates unchanged, so `batchor.is_permanent` decides
    whether a retry can fix it (a store or file the factory reads may be down for a moment).

    Raises:
        ConfigurationError: ``spec`` cannot be imported, ``kwargs`` were given for a job
            object, or the result is not a `BatchJob`.
    """
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
    return value


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
