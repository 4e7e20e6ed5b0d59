"""Fault injection knobs for the Anthropic Message Batches emulator.

`AnthropicEmulatorFaults` is a plain mutable dataclass: tests may change any field between
calls. Knobs that mean what a `batchor.testing.EmulatorFaults` knob means carry its name
(``seed``, ``line_fault``, ``line_rewrite``, ``route_server_error_counts``,
``http_server_error_*``, ``create_response_delay``, ``expire_count``, ``latency``,
``shuffle_output``); the rest are Anthropic's own.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from batchor.testing.anthropic.errors import (
    AnthropicApiError,
    api_error,
    overloaded,
    rate_limited,
)

LineFault = Literal[
    "overloaded_error", "api_error", "invalid_request_error", "invalid_json", "schema_mismatch"
]
"""How one request of a batch is answered when it is faulted.

``overloaded_error``, ``api_error`` and ``invalid_request_error`` make it an ``errored``
result with that error type. ``invalid_json`` answers ``succeeded`` with reply text that is
not valid JSON (cut short), and ``schema_mismatch`` with valid JSON that does not fit the
requested schema; on a forced ``tool_use`` reply, whose ``input`` the API always parses,
both give an ``input`` object that does not fit the tool's ``input_schema``.
"""

LINE_FAULTS: frozenset[str] = frozenset(get_args(LineFault))
"""Every value a `AnthropicEmulatorFaults.line_fault` callback may return (besides ``None``)."""


@dataclass
class AnthropicEmulatorFaults:
    """Faults the Anthropic emulator injects; every knob defaults to off.

    Random choices come from generators seeded with `seed`, so a run is reproducible. Count
    knobs (``*_count``, ``*_counts``) decrement each time they fire. Route keys are
    ``"METHOD route"`` as in `batchor.testing.EmulatorStats.calls`, e.g.
    ``"POST /v1/messages/batches"`` or ``"GET /v1/messages/batches/{id}/results"``.
    """

    seed: int = 0
    """Seed of the random generators behind every ``*_rate`` knob."""
    line_overloaded_rate: float = 0.0
    """Fraction of requests whose result is ``errored`` with an ``overloaded_error``."""
    line_api_error_rate: float = 0.0
    """Fraction of requests whose result is ``errored`` with an ``api_error``."""
    line_invalid_request_rate: float = 0.0
    """Fraction of requests whose result is ``errored`` with an ``invalid_request_error``."""
    line_invalid_json_rate: float = 0.0
    """Fraction of requests answered with reply text that is not valid JSON."""
    line_schema_mismatch_rate: float = 0.0
    """Fraction of requests answered with JSON that does not fit the requested schema."""
    line_fault: Callable[[str, dict[str, Any]], str | None] | None = None
    """Called with ``(custom_id, params)`` for every request; returns a `LineFault` name or
    ``None``. A non-``None`` answer takes precedence over the ``line_*_rate`` knobs."""
    line_rewrite: Callable[[dict[str, Any]], dict[str, Any] | str | None] | None = None
    """Called with every answered result line (``succeeded`` or ``errored``, parsed); returns
    the line to write instead (a dict, or raw text), or ``None`` to leave it out of the
    results (a provider that loses answers). The batch's counts are not changed."""
    route_server_error_counts: dict[str, int] = field(default_factory=dict)
    """The next N calls to a route are answered 500 ``api_error`` before anything else."""
    route_overloaded_counts: dict[str, int] = field(default_factory=dict)
    """The next N calls to a route are answered 529 ``overloaded_error``."""
    route_rate_limit_counts: dict[str, int] = field(default_factory=dict)
    """The next N calls to a route are answered 429 ``rate_limit_error`` (``retry-after:
    0``)."""
    http_server_error_rate: float = 0.0
    """Probability that any HTTP call is answered 500 before anything else happens."""
    http_server_error_count: int = 0
    """The next N HTTP calls of any kind are answered 500."""
    http_overloaded_rate: float = 0.0
    """Probability that any HTTP call is answered 529 ``overloaded_error``."""
    http_overloaded_count: int = 0
    """The next N HTTP calls of any kind are answered 529."""
    create_response_delay: float = 0.0
    """Seconds ``POST /v1/messages/batches`` sleeps after creating the batch and before
    answering: past the client's timeout, the batch exists but its id never arrives."""
    create_drop_connection_count: int = 0
    """The next N ``POST /v1/messages/batches`` calls create their batch, then close the
    connection without answering (the client sees a dropped connection)."""
    expire_count: int = 0
    """The next N created batches expire with only `expire_fraction` of their requests
    answered; the rest are ``expired``."""
    expire_fraction: float = 0.5
    """Share of its requests an expiring batch answers before it expires."""
    hold_count: int = 0
    """The next N created batches (not picked by `expire_count`) answer only the first
    `hold_fraction` of their requests, then stay ``in_progress`` until they are cancelled
    (a batch the provider is slow to finish); cancelled, they end with those answers in
    their results and the rest ``canceled``."""
    hold_fraction: float = 0.5
    """Share of its requests (rounded down) a batch held by `hold_count` answers."""
    latency: float = 0.0
    """Seconds added to every HTTP call."""
    shuffle_output: bool = False
    """Write results in a shuffled order (within each slice of up to 2,000 requests): the
    real service does not keep request order."""

    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    _seeded: int | None = field(default=None, init=False, repr=False, compare=False)
    _line_rng: random.Random = field(
        default_factory=random.Random, init=False, repr=False, compare=False
    )
    _http_rng: random.Random = field(
        default_factory=random.Random, init=False, repr=False, compare=False
    )
    _sync_rng: random.Random = field(
        default_factory=random.Random, init=False, repr=False, compare=False
    )

    def _reseed_locked(self) -> None:
        if self._seeded != self.seed:
            self._line_rng.seed(f"anthropic-line:{self.seed}")
            self._http_rng.seed(f"anthropic-http:{self.seed}")
            self._sync_rng.seed(f"anthropic-sync:{self.seed}")
            self._seeded = self.seed

    def _take_locked(self, name: str) -> bool:
        count: int = getattr(self, name)
        if count > 0:
            setattr(self, name, count - 1)
            return True
        return False

    @staticmethod
    def _take_route(counts: dict[str, int], key: str) -> bool:
        if counts.get(key, 0) > 0:
            counts[key] -= 1
            return True
        return False

    def take_http_error(self, method: str, route: str) -> AnthropicApiError | None:
        """The error to answer this call with before anything else, if any (consumes the
        count knobs, then draws for the rate knobs)."""
        key = f"{method} {route}"
        with self._lock:
            if self._take_locked("http_server_error_count"):
                return api_error()
            if self._take_locked("http_overloaded_count"):
                return overloaded()
            if self._take_route(self.route_server_error_counts, key):
                return api_error()
            if self._take_route(self.route_overloaded_counts, key):
                return overloaded()
            if self._take_route(self.route_rate_limit_counts, key):
                return rate_limited()
            if self.http_server_error_rate > 0.0 or self.http_overloaded_rate > 0.0:
                self._reseed_locked()
                draw = self._http_rng.random()
                if draw < self.http_server_error_rate:
                    return api_error()
                if draw < self.http_server_error_rate + self.http_overloaded_rate:
                    return overloaded()
            return None

    def take_create_drop(self) -> bool:
        """Decide whether this batch creation loses its answer (consumes the count)."""
        with self._lock:
            return self._take_locked("create_drop_connection_count")

    def take_expire(self) -> bool:
        """Decide whether the batch being created expires (consumes the count)."""
        with self._lock:
            return self._take_locked("expire_count")

    def take_hold(self) -> bool:
        """Decide whether the batch being created is held (consumes the count)."""
        with self._lock:
            return self._take_locked("hold_count")

    def pick_sync_fault(self, custom_id: str, params: dict[str, Any]) -> LineFault | None:
        """The fault of one synchronous request (``POST /v1/messages``), picked as the line
        knobs pick a batch request's (``custom_id`` is ``""``: a synchronous request has
        none). Draws come from a generator of their own, so synchronous requests do not
        change which batch requests are faulted."""
        with self._lock:
            self._reseed_locked()
            draw = self._sync_rng.random()
            sampler = FaultSampler(self, self._sync_rng)
        return sampler.choose(draw, custom_id, params)

    def shuffle(self, lines: list[str]) -> None:
        """Shuffle ``lines`` in place if `shuffle_output` is on."""
        if self.shuffle_output and len(lines) > 1:
            with self._lock:
                self._reseed_locked()
                self._line_rng.shuffle(lines)

    def sampler(self) -> FaultSampler:
        """Snapshot the line knobs into a sampler for one slice of a batch's requests."""
        with self._lock:
            self._reseed_locked()
        return FaultSampler(self, self._line_rng)


class FaultSampler:
    """The line knobs of `AnthropicEmulatorFaults`, snapshotted for one slice of requests.

    One random number is drawn per request whatever the knobs say, so the sequence of draws
    (and hence reproducibility) does not depend on which knobs are on. Only the batch worker
    draws from this generator.
    """

    def __init__(self, faults: AnthropicEmulatorFaults, rng: random.Random) -> None:
        """Snapshot the knobs of ``faults``; draw from ``rng``."""
        self._random = rng.random
        self._callback = faults.line_fault
        cuts: list[tuple[float, LineFault]] = []
        total = 0.0
        for rate, fault in (
            (faults.line_overloaded_rate, "overloaded_error"),
            (faults.line_api_error_rate, "api_error"),
            (faults.line_invalid_request_rate, "invalid_request_error"),
            (faults.line_invalid_json_rate, "invalid_json"),
            (faults.line_schema_mismatch_rate, "schema_mismatch"),
        ):
            if rate > 0.0:
                total += rate
                cuts.append((total, cast(LineFault, fault)))
        self._cuts = cuts

    @property
    def wants_params(self) -> bool:
        """Whether `pick` needs each request's ``params`` (a `line_fault` callback is set)."""
        return self._callback is not None

    def pick(self, custom_id: str, params: dict[str, Any] | None) -> LineFault | None:
        """Draw for one request and pick its fault, if any (``params`` may be ``None`` unless
        `wants_params`)."""
        return self.choose(self._random(), custom_id, params)

    def choose(
        self, draw: float, custom_id: str, params: dict[str, Any] | None
    ) -> LineFault | None:
        """The fault of one request given its draw (see `pick`)."""
        if self._callback is not None:
            assert params is not None
            chosen = self._callback(custom_id, params)
            if chosen is not None:
                if chosen not in LINE_FAULTS:
                    raise ValueError(f"line_fault returned unknown fault {chosen!r}")
                return cast(LineFault, chosen)
        for cut, fault in self._cuts:
            if draw < cut:
                return fault
        return None
