"""The time and money options: ``--max-cost-usd``, ``--deadline``, ``--batch-timeout``,
``--finish-sync-at`` and ``--finish-sync-after`` of ``run`` and ``start`` (they become
`BatchJob.max_cost_usd`, `BatchJob.deadline`, `BatchLimits.batch_timeout` and
`BatchJob.finish_sync`), ``--max-cost-usd`` of ``resume``; their value types, and how
``status`` words the time left."""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import click

from batchor.errors import ConfigurationError
from batchor.jobs import BatchJob, FinishSync
from batchor.pricing import PriceTable

_UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400, "w": 604_800}
_PART = r"(\d+(?:\.\d+)?)\s*([smhdw])"
_DURATION = re.compile(rf"(?:{_PART}\s*)+")
#: How long few enough items must be left before ``--finish-sync-at`` starts, by default.
DEFAULT_FINISH_SYNC_AFTER = timedelta(minutes=15)
#: How a duration is written, for messages.
DURATION_HELP = "a duration such as 45s, 90m, 2h, 1d or 1h30m"


def parse_duration(text: str) -> timedelta:
    """A positive duration written as numbers with units (``s``, ``m``, ``h``, ``d``,
    ``w``): ``90m``, ``2h``, ``1d``, ``1h30m``, ``1.5h``.

    Raises:
        ValueError: it is not one, or it is not positive.
    """
    cleaned = text.strip().lower()
    if not _DURATION.fullmatch(cleaned):
        raise ValueError(f"{text!r} is not {DURATION_HELP}")
    seconds = sum(float(n) * _UNITS[unit] for n, unit in re.findall(_PART, cleaned))
    if not seconds > 0 or not math.isfinite(seconds):
        raise ValueError(f"{text!r} must be longer than zero")
    return timedelta(seconds=seconds)


def parse_deadline(text: str) -> timedelta | datetime:
    """A deadline: a duration from the run's creation (``90m``, ``2h``, ``1d``), or an ISO
    8601 date and time with its UTC offset (``2026-12-24T18:00:00+01:00``, ``...Z``).

    Raises:
        ValueError: it is neither, or the time has no offset.
    """
    try:
        return parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither {DURATION_HELP} nor an ISO 8601 date and time with its "
            "offset, such as 2026-12-24T18:00:00+01:00"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(
            f"{text!r} has no UTC offset: add one, such as {when.isoformat()}+00:00 (or Z)"
        )
    return when


def parse_cost(text: str) -> float:
    """A spending cap in USD: a positive number (``5``, ``12.50``, ``$20``).

    Raises:
        ValueError: it is not one.
    """
    try:
        value = float(text.strip().removeprefix("$").replace(",", ""))
    except ValueError:
        raise ValueError(f"{text!r} is not a number of USD, such as 25 or 12.50") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{text!r} must be a number of USD more than 0, such as 25")
    return value


def _parsed(
    parse: Callable[[str], Any],
) -> Callable[[click.Context, click.Parameter, str | None], Any]:
    """A click callback that parses the option's value with ``parse``; a bad value becomes
    click's one-line ``Invalid value for '--flag': ...`` (exit 2)."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
        if value is None:
            return None
        try:
            return parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return callback


def max_cost_option(help_text: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--max-cost-usd``, with the command's own help."""
    return click.option(
        "--max-cost-usd", metavar="USD", callback=_parsed(parse_cost), help=help_text
    )


@dataclass(frozen=True, slots=True)
class JobLimits:
    """The time and money options given to ``run`` or ``start``."""

    max_cost_usd: float | None = None
    deadline: timedelta | datetime | None = None
    batch_timeout: timedelta | None = None
    finish_sync_at: int | None = None
    finish_sync_after: timedelta | None = None

    def apply(self, job: BatchJob) -> BatchJob:
        """``job`` with these limits (the job's own where an option was not given).

        Raises:
            ConfigurationError: ``--max-cost-usd`` on a model whose price batchor does not
                know (its cost could not be projected).
        """
        if self.max_cost_usd is not None:
            config = job.provider_config
            model = getattr(config, "price_model", None) or config.model
            if PriceTable().price(model) is None:
                raise ConfigurationError(
                    f"--max-cost-usd needs the price of model {model!r} to project costs, "
                    "and batchor's price table has none: leave --max-cost-usd out, or run "
                    "the job from Python with BatchRunner(prices=...)"
                )
        limits = job.limits
        if self.batch_timeout is not None:
            limits = dataclasses.replace(limits, batch_timeout=self.batch_timeout)
        return dataclasses.replace(
            job,
            max_cost_usd=self.max_cost_usd if self.max_cost_usd is not None else job.max_cost_usd,
            deadline=self.deadline if self.deadline is not None else job.deadline,
            limits=limits,
            finish_sync=self._finish_sync(job.finish_sync),
        )

    def _finish_sync(self, current: FinishSync | None) -> FinishSync | None:
        """The job's `FinishSync` with ``--finish-sync-at`` / ``--finish-sync-after``.

        Raises:
            ConfigurationError: ``--finish-sync-after`` without ``--finish-sync-at`` (and a
                job that has none).
        """
        if self.finish_sync_at is None and self.finish_sync_after is None:
            return current
        if self.finish_sync_at is None and current is None:
            raise ConfigurationError(
                "--finish-sync-after needs --finish-sync-at N (how few items left start it)"
            )
        at = self.finish_sync_at
        if current is None:
            assert at is not None
            return FinishSync(at, self.finish_sync_after or DEFAULT_FINISH_SYNC_AFTER)
        return dataclasses.replace(
            current,
            when_remaining_at_most=current.when_remaining_at_most if at is None else at,
            after=self.finish_sync_after or current.after,
        )


_FIELDS = tuple(f.name for f in dataclasses.fields(JobLimits))

_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    max_cost_option(
        "Spending cap in USD: before each batch is created, its projected cost plus what "
        "the run has committed must fit, else the run pauses (reason budget) until "
        "`batchor resume RUN_ID --max-cost-usd MORE`. The model must be in batchor's price "
        "table."
    ),
    click.option(
        "--deadline",
        metavar="WHEN",
        callback=_parsed(parse_deadline),
        help="When the run must end: a duration from its start (90m, 2h, 1d) or an ISO 8601 "
        "time with offset (2026-12-24T18:00:00+01:00). Past it nothing more is sent and "
        "open items fail (class deadline).",
    ),
    click.option(
        "--batch-timeout",
        metavar="DURATION",
        callback=_parsed(parse_duration),
        help="The longest one provider batch may run (a duration: 30m, 2h); past it, it is "
        "cancelled and its unanswered items sent again.",
    ),
]


def _positive_count(text: str) -> int:
    """A whole number of at least 1.

    Raises:
        ValueError: it is not one.
    """
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number, such as 50") from None
    if value < 1:
        raise ValueError(f"{text!r} must be at least 1")
    return value


_OPTIONS += [
    click.option(
        "--finish-sync-at",
        metavar="N",
        callback=_parsed(_positive_count),
        help="Finish the stragglers: once at most N items are left in live batches for "
        "--finish-sync-after, those batches are cancelled and their unanswered items sent "
        "through the synchronous API (at the standard price, twice the batch price). "
        "OpenAI and Azure OpenAI only.",
    ),
    click.option(
        "--finish-sync-after",
        metavar="DURATION",
        callback=_parsed(parse_duration),
        help="How long at most --finish-sync-at items must be left first (a duration: 10m, "
        "1h; default 15m).",
    ),
]


def limit_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The time and money options of ``run`` and ``start``; the command receives them as
    one `JobLimits`, keyword ``limits``."""

    @functools.wraps(func)
    def command(*args: Any, **kwargs: Any) -> Any:
        limits = JobLimits(**{name: kwargs.pop(name) for name in _FIELDS})
        return func(*args, limits=limits, **kwargs)

    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def time_left(seconds: float) -> str:
    """A span of time in words: ``2d 3h``, ``1h 29m``, ``4m 10s``, ``12s``."""
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
