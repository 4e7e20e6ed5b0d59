"""How a flow or task is given its `batchor.BatchJob`: the job, a callable returning it, or the
import path of either. Only the import path is a value Prefect can store and a deployment can
pass; a job object stays in memory and is never serialised."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeAlias

from batchor import BatchJob
from batchor.errors import ConfigurationError

JobSpec: TypeAlias = BatchJob | Callable[[], BatchJob] | str
"""A `BatchJob`, a callable taking no argument and returning one, or the ``"module:name"``
import path of either (the form a deployment parameter takes)."""


def build_job(spec: JobSpec) -> BatchJob:
    """The `BatchJob` ``spec`` gives (calling or importing it as needed).

    Raises:
        ConfigurationError: ``spec`` cannot be imported or does not give a `BatchJob`.
    """
    value: object = import_object(spec) if isinstance(spec, str) else spec
    if not isinstance(value, BatchJob) and callable(value):
        value = value()
    if not isinstance(value, BatchJob):
        raise ConfigurationError(
            f"job must be a BatchJob, a callable returning one or the 'module:name' path of "
            f"either; {describe_job(spec)} gave {type(value).__name__}"
        )
    return value


def import_object(path: str) -> object:
    """The object at ``"package.module:attribute"`` (dots after the colon walk attributes).

    Raises:
        ConfigurationError: The path is malformed or names nothing.
    """
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"job path {path!r} must look like 'package.module:name'")
    try:
        value: object = importlib.import_module(module_name)
    except ImportError as exc:
        message = f"job path {path!r}: cannot import {module_name!r}: {exc}"
        raise ConfigurationError(message) from exc
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError as exc:
            raise ConfigurationError(f"job path {path!r}: no attribute {part!r}") from exc
    return value


def describe_job(spec: object) -> str:
    """A short, secret-free description of a job spec, for parameters, logs and errors."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, BatchJob):
        config = spec.provider_config
        return f"<BatchJob model={config.model} endpoint={config.endpoint}>"
    module = getattr(spec, "__module__", None)
    name = getattr(spec, "__qualname__", None) or type(spec).__qualname__
    return f"<callable {module}:{name}>" if module else f"<callable {name}>"
