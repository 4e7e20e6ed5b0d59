"""Exit codes and one-line errors: batchor's exceptions, click's usage errors and anything
unexpected become one ``error: ...`` line on stderr and a documented exit code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import click

from batchor.cli.output import fail
from batchor.errors import (
    BatchorError,
    ConfigurationError,
    JobMismatchError,
    RunNotFoundError,
    SourceError,
)
from batchor.states import RunStatus

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_FAILURES = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
USAGE_ERRORS: tuple[type[Exception], ...] = (
    ConfigurationError,
    SourceError,
    JobMismatchError,
    RunNotFoundError,
)

EXIT_CODES_HELP = """\b
Exit codes:
  0    success; for run and wait: every item completed
  1    any other error; for run and wait: the run ended cancelled, is paused
       with nothing in flight, or --timeout passed
  2    bad input or usage: an unknown run id, an unreadable input file or row,
       a bad option or argument, or a pause/resume/cancel the run's state forbids
  3    run and wait: the run completed but some items failed
  130  interrupted (runs are durable: the same command resumes them)

Errors are one line on stderr starting with "error: ".
"""


def exit_code(status: RunStatus) -> int:
    """0 when every item completed, 3 when the run completed with failures, 1 otherwise."""
    if status is RunStatus.COMPLETED:
        return EXIT_OK
    if status is RunStatus.COMPLETED_WITH_FAILURES:
        return EXIT_FAILURES
    return EXIT_ERROR


@contextlib.contextmanager
def errors(*usage: type[Exception]) -> Iterator[None]:
    """Errors raised in the block become one line on stderr and an exit code: 2 for bad
    input (and for the extra exception types in ``usage``), 1 for everything else, never a
    traceback (unless ``--verbose``)."""
    try:
        yield
    except (*USAGE_ERRORS, *usage) as exc:
        fail(str(exc), EXIT_USAGE)
    except BatchorError as exc:
        fail(str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        fail("interrupted; the run is durable: run the same command again to resume", 130)
    except click.ClickException:
        raise  # the group prints these
    except Exception as exc:
        if _verbose():
            raise
        fail(f"{type(exc).__name__}: {exc}", EXIT_ERROR)


def _verbose() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("verbose"))


@contextlib.contextmanager
def _usage_errors() -> Iterator[None]:
    """click's usage errors (unknown option, missing argument, bad value) as one line."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:
        raise  # a bare group or command prints its help
    except click.ClickException as exc:
        message = exc.format_message()
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            message = f"{message} (see '{exc.ctx.command_path} --help')"
        fail(message, exc.exit_code)


class OneLineErrorGroup(click.Group):
    """A command group whose usage errors print one line on stderr instead of click's usage
    block, with click's exit code (2)."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        with _usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _usage_errors():
            return super().invoke(ctx)
