"""How an orchestrator is given a `BatchJob`: the job itself, a callable that builds it, or
the ``"module:name"`` import path of either (the only form a DAG argument, a deployment
parameter or a run config can carry). `load_object` is the one importer of such paths."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from batchor.errors import ConfigurationError
from batchor.jobs import BatchJob

JobSpec: TypeAlias = BatchJob | Callable[..., BatchJob] | str
"""A `BatchJob`, a callable returning one, or the ``"package.module:name"`` path of either."""


def load_object(path: str, *, what: str = "object") -> Any:
    """The object at ``"package.module:attribute"`` (dots after the colon walk attributes).

    Args:
        path: The import path.
        what: What the path names, for the error message (``"job"``, ``"schema"``...).

    Raises:
        ConfigurationError: The path is malformed, its module cannot be imported or the
            attribute does not exist; the message names the path.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"{what} path {path!r} must look like 'package.module:name'")
    try:
        value: Any = importlib.import_module(module_name)
    except Exception as exc:  # an import error, or the module raised while importing
        raise ConfigurationError(
            f"{what} path {path!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise ConfigurationError(f"{what} path {path!r}: no attribute {part!r}") from None
    return value


def build_job(spec: JobSpec, kwargs: Mapping[str, Any] | None = None) -> BatchJob:
    """The `BatchJob` that ``spec`` gives: imported if it is a path, called with ``kwargs``
    if it is a callable, and checked.

    Raises:
        ConfigurationError: ``spec`` cannot be imported, ``kwargs`` were given for a job
            object, the callable raised, or the result is not a `BatchJob`.
    """
    value: Any = load_object(spec, what="job") if isinstance(spec, str) else spec
    if not isinstance(value, BatchJob):
        if not callable(value):
            raise ConfigurationError(
                f"job must be a BatchJob, a callable returning one or the 'module:name' path of "
                f"either; got {describe_job(spec)}"
            )
        try:
            value = value(**dict(kwargs or {}))
        except ConfigurationError:
            raise
        except Exception as exc:
            raise ConfigurationError(
                f"job factory {describe_job(spec)} failed: {type(exc).__name__}: {exc}"
            ) from exc
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
