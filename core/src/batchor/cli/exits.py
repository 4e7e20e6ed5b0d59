"""Exit codes and one-line errors: batchor's exceptions, click's usage errors and anything
unexpected become one ``error: ...`` line on stderr and a documented exit code."""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
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
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
RESUME = "the run is durable: run the same command again to resume"
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
       a bad option or argument, a pause/resume/cancel the run's state forbids,
       or an export-artifacts DEST that is a file or not empty (see --force)
  3    run and wait: the run completed but some items failed
  130  interrupted (Ctrl-C, SIGINT); runs are durable: the same command resumes
       them
  143  terminated (SIGTERM), as for 130

Errors are one line on stderr starting with "error: ".
"""


def exit_code(status: RunStatus) -> int:
    """0 when every item completed, 3 when the run completed with failures, 1 otherwise."""
    if status is RunStatus.COMPLETED:
        return EXIT_OK
    if status is RunStatus.COMPLETED_WITH_FAILURES:
        return EXIT_FAILURES
    return EXIT_ERROR


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as SIGINT raises `KeyboardInterrupt`, so that a
    command stops the same way on either (the run is durable; nothing is lost)."""


class DeadlinePassed(BaseException):
    """A command's ``--timeout`` passed (raised by `deadline` wherever the command was)."""


@contextlib.contextmanager
def errors(*usage: type[Exception], resume: str = RESUME) -> Iterator[None]:
    """Errors raised in the block become one line on stderr and an exit code: 2 for bad
    input (and for the extra exception types in ``usage``), 1 for everything else, never a
    traceback (unless ``--verbose``). SIGINT and SIGTERM print ``resume`` (how to go on)
    and exit with 130 and 143. Over-long words (a 10,000-character run id) are cut."""
    try:
        with _sigterm_raises():
            yield
    except (*USAGE_ERRORS, *usage) as exc:
        fail(shorten(str(exc)), EXIT_USAGE)
    except BatchorError as exc:
        fail(shorten(str(exc)), EXIT_ERROR)
    except Terminated:
        fail(f"terminated (SIGTERM); {shorten(resume)}", EXIT_TERMINATED)
    except KeyboardInterrupt:
        fail(f"interrupted; {shorten(resume)}", EXIT_INTERRUPTED)
    except click.ClickException:
        raise  # the group prints these
    except Exception as exc:
        if _verbose():
            raise
        fail(shorten(f"{type(exc).__name__}: {exc}"), EXIT_ERROR)


_LONG_WORD = re.compile(r"[^\s'\"]{201,}")


def shorten(message: str) -> str:
    """``message`` with every word over 200 characters (longer than any valid run id) cut
    to its first 60 and its length: ``aaaa… (10000 characters)``."""
    return _LONG_WORD.sub(lambda m: f"{m.group()[:60]}… ({len(m.group())} characters)", message)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises `Terminated` in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Raise `DeadlinePassed` in the main thread once ``seconds`` have passed in the block,
    wherever it is (a provider call being retried included), as SIGINT would interrupt it.
    Uses SIGALRM where there is one, and gives back an alarm set before (pytest-timeout's):
    without it (Windows, another thread) the block is not interrupted."""
    if seconds is None or not hasattr(signal, "setitimer"):
        yield
        return
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    armed = True

    def expire(signum: int, frame: FrameType | None) -> None:
        if armed:
            raise DeadlinePassed

    began = time.monotonic()
    previous = signal.signal(signal.SIGALRM, expire)
    earlier, interval = signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if earlier:
            left = max(earlier - (time.monotonic() - began), 1e-3)
            signal.setitimer(signal.ITIMER_REAL, left, interval)


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
        message = shorten(exc.format_message())
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
