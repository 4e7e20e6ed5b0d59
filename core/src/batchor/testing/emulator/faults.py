"""Fault injection knobs for the OpenAI Batch emulator.

`EmulatorFaults` is a plain mutable dataclass: tests may change any field between calls. The
emulator consumes it through the thread-safe ``take_*``/``draw_*`` methods defined here.
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

LineFault = Literal["server_error", "rate_limit", "invalid_json", "schema_mismatch", "bad_request"]
"""How one request line of a batch is answered when it is faulted.

``server_error``, ``rate_limit`` and ``bad_request`` answer the line 500, 429 or 400 (error
file) on every endpoint. ``invalid_json`` answers 200 with reply text that is not valid JSON
(on ``/v1/embeddings``: each vector replaced by half of its encoded text, a string) and
``schema_mismatch`` 200 with valid JSON that does not fit the requested schema (on
``/v1/embeddings``: ``data`` entries without their ``embedding``).
"""

BatchOutcome = Literal["token_limit", "fail", "expire", "hold"]
"""A fault that decides the fate of a whole batch at creation time."""

LINE_FAULTS: frozenset[str] = frozenset(get_args(LineFault))
"""Every value a `EmulatorFaults.line_fault` callback may return (besides ``None``)."""


@dataclass
class EmulatorFaults:
    """Faults the emulator injects; every knob defaults to off.

    Random choices come from generators seeded with `seed`, so a run is reproducible. Count
    knobs (``*_count``) decrement each time they fire. All consumption is thread-safe.
    """

    seed: int = 0
    """Seed of the random generators behind every ``*_rate`` knob."""
    line_server_error_rate: float = 0.0
    """Fraction of request lines answered with HTTP 500 (error file)."""
    line_rate_limit_rate: float = 0.0
    """Fraction of request lines answered with HTTP 429 (error file)."""
    line_invalid_json_rate: float = 0.0
    """Fraction of request lines answered 200 with content that is not valid JSON (on
    ``/v1/embeddings``, with vectors that are not arrays of floats)."""
    line_fault: Callable[[str, dict[str, Any]], str | None] | None = None
    """Called with ``(custom_id, body)`` for every line; returns a `LineFault` name or ``None``.

    A non-``None`` answer takes precedence over the ``line_*_rate`` knobs.
    """
    create_insufficient_quota_count: int = 0
    """The next N ``POST /v1/batches`` calls are answered 429 ``insufficient_quota`` (the
    account is out of credit) without creating anything; applied before
    `create_rate_limit_count`."""
    create_rate_limit_count: int = 0
    """The next N ``POST /v1/batches`` calls are answered 429 without creating anything."""
    create_reject_count: int = 0
    """The next N ``POST /v1/batches`` calls are answered 400 ``invalid_request_error`` (the
    provider refuses the batch itself) without creating anything; applied after
    `create_rate_limit_count`."""
    route_server_error_counts: dict[str, int] = field(default_factory=dict)
    """The next N calls to a route, keyed ``"METHOD route"`` as in `EmulatorStats.calls`
    (e.g. ``"POST /v1/files"``), are answered 500 before anything else happens."""
    http_server_error_rate: float = 0.0
    """Probability that any HTTP call is answered 500 before anything else happens."""
    http_server_error_count: int = 0
    """The next N HTTP calls of any kind are answered 500."""
    fail_token_limit_count: int = 0
    """The next N created batches fail with ``token_limit_exceeded``."""
    expire_count: int = 0
    """The next N created batches expire with only the first half of their lines answered."""
    hold_count: int = 0
    """The next N created batches answer only the first `hold_fraction` of their lines, then
    stay ``in_progress`` until they are cancelled (a batch past its timeout); cancelled, they
    end ``cancelled`` with the answered lines in their output file, as OpenAI's do (after
    `expire_count`)."""
    hold_fraction: float = 0.5
    """The fraction of its lines a batch held by `hold_count` answers (rounded down), read
    when the batch starts answering."""
    cancelling_seconds: float | None = None
    """How long a cancelled batch stays ``cancelling`` before it ends ``cancelled`` (OpenAI
    takes up to 10 minutes); ``None``: one ``phase_seconds``."""
    fail_batch_count: int = 0
    """The next N created batches end ``failed`` during validation with `fail_batch_errors`
    (after `fail_token_limit_count`, before `expire_count`)."""
    fail_batch_errors: list[tuple[str, str]] = field(
        default_factory=lambda: [
            (
                "insufficient_quota",
                "You exceeded your current quota, please check your plan and billing details.",
            )
        ]
    )
    """The ``(code, message)`` entries of the ``errors`` of a batch failed by
    `fail_batch_count`; the account running out of credit by default."""
    line_rewrite: Callable[[dict[str, Any]], dict[str, Any] | str | None] | None = None
    """Called with every answered line (the parsed JSON of an output or error file line);
    returns the line to write instead: a dict (written to the error file unless its
    ``response`` has status 200), raw text (written where the line was), or ``None`` to leave
    the line out of both files (a provider that loses answers). The line still counts as
    answered in `EmulatorStats.lines_answered`."""
    latency: float = 0.0
    """Seconds added to every HTTP call."""
    create_response_delay: float = 0.0
    """Seconds ``POST /v1/batches`` sleeps after recording the batch and before answering."""
    output_file_delay: float = 0.0
    """Seconds after a batch ends during which its output and error files answer 404 (to
    ``GET /v1/files/{id}`` and ``GET /v1/files/{id}/content``), though the batch already
    shows their ids, as the real service sometimes does right after completion."""
    content_cut_count: int = 0
    """The next N ``GET /v1/files/{id}/content`` downloads announce the whole file but send
    only its first half, then close the connection (a connection lost mid-download)."""
    shuffle_output: bool = False
    """Write output and error lines in a shuffled order (within each slice of up to 2,000
    lines), as the real service does not promise input order."""

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
    _shuffle_rng: random.Random = field(
        default_factory=random.Random, init=False, repr=False, compare=False
    )
    _sync_rng: random.Random = field(
        default_factory=random.Random, init=False, repr=False, compare=False
    )

    def _reseed_locked(self) -> None:
        if self._seeded != self.seed:
            self._line_rng.seed(f"line:{self.seed}")
            self._http_rng.seed(f"http:{self.seed}")
            self._shuffle_rng.seed(f"shuffle:{self.seed}")
            self._sync_rng.seed(f"sync:{self.seed}")
            self._seeded = self.seed

    def take_http_server_error(self) -> bool:
        """Decide whether the current HTTP call is answered 500 (consumes the count knob)."""
        with self._lock:
            if self.http_server_error_count > 0:
                self.http_server_error_count -= 1
                return True
            if self.http_server_error_rate > 0.0:
                self._reseed_locked()
                return self._http_rng.random() < self.http_server_error_rate
            return False

    def take_create_insufficient_quota(self) -> bool:
        """Decide whether the current batch creation is refused for quota (consumes the count)."""
        with self._lock:
            if self.create_insufficient_quota_count > 0:
                self.create_insufficient_quota_count -= 1
                return True
            return False

    def take_route_server_error(self, method: str, route: str) -> bool:
        """Decide whether this call to ``route`` is answered 500 (consumes its count)."""
        key = f"{method} {route}"
        with self._lock:
            if self.route_server_error_counts.get(key, 0) > 0:
                self.route_server_error_counts[key] -= 1
                return True
            return False

    def take_content_cut(self) -> bool:
        """Decide whether the current download is cut half-way (consumes the count)."""
        with self._lock:
            if self.content_cut_count > 0:
                self.content_cut_count -= 1
                return True
            return False

    def take_create_reject(self) -> bool:
        """Decide whether the current batch creation is refused with a 400 (consumes the
        count)."""
        with self._lock:
            if self.create_reject_count > 0:
                self.create_reject_count -= 1
                return True
            return False

    def take_create_rate_limit(self) -> bool:
        """Decide whether the current batch creation is answered 429 (consumes the count)."""
        with self._lock:
            if self.create_rate_limit_count > 0:
                self.create_rate_limit_count -= 1
                return True
            return False

    def take_batch_outcome(self) -> BatchOutcome | None:
        """Pick the forced outcome of a batch being created (consumes a count), if any."""
        with self._lock:
            if self.fail_token_limit_count > 0:
                self.fail_token_limit_count -= 1
                return "token_limit"
            if self.fail_batch_count > 0:
                self.fail_batch_count -= 1
                return "fail"
            if self.expire_count > 0:
                self.expire_count -= 1
                return "expire"
            if self.hold_count > 0:
                self.hold_count -= 1
                return "hold"
            return None

    def rewrite_lines(self, outputs: list[str], errors: list[str]) -> None:
        """Pass every line of ``outputs`` and ``errors`` through `line_rewrite`, in place."""
        rewrite = self.line_rewrite
        if rewrite is None:
            return
        kept: tuple[list[str], list[str]] = ([], [])
        for is_error, lines in ((False, outputs), (True, errors)):
            for line in lines:
                new = rewrite(json.loads(line))
                if isinstance(new, str):
                    kept[is_error].append(new)
                elif new is not None:
                    response = new.get("response")
                    ok = isinstance(response, dict) and response.get("status_code") == 200
                    kept[not ok].append(json.dumps(new, separators=(",", ":")))
        outputs[:], errors[:] = kept

    def shuffle(self, lines: list[str]) -> None:
        """Shuffle ``lines`` in place if `shuffle_output` is on."""
        if self.shuffle_output and len(lines) > 1:
            with self._lock:
                self._reseed_locked()
                self._shuffle_rng.shuffle(lines)

    def line_fault_sampler(self) -> LineFaultSampler:
        """Snapshot the line knobs into a fast sampler used by the batch worker."""
        with self._lock:
            self._reseed_locked()
        return LineFaultSampler(self, self._line_rng)

    def pick_sync_fault(self, request_id: str, body: dict[str, Any]) -> LineFault | None:
        """Pick the fault of one synchronous request, as the line knobs pick a batch line's.

        ``request_id`` stands for the line's custom_id (the client's ``X-Client-Request-Id``
        header, or ``""``). Draws come from a generator of their own, so synchronous requests
        do not change which batch lines are faulted.
        """
        with self._lock:
            self._reseed_locked()
            draw = self._sync_rng.random()
        return LineFaultSampler(self, self._sync_rng).choose(draw, request_id, body)


class LineFaultSampler:
    """The line knobs of `EmulatorFaults`, snapshotted for one slice of a batch's lines.

    One random number is drawn per line whatever the knobs say, so the sequence of draws
    (and hence reproducibility) does not depend on which knobs are on. Only the batch worker
    draws from this generator (so without the lock); it is reseeded, under the lock, only
    when `EmulatorFaults.seed` changes.
    """

    def __init__(self, faults: EmulatorFaults, rng: random.Random) -> None:
        """Snapshot the knobs of ``faults``; draw from ``rng``."""
        self._random = rng.random
        self._callback = faults.line_fault
        self._cut_server = faults.line_server_error_rate
        self._cut_rate = self._cut_server + faults.line_rate_limit_rate
        self._cut_json = self._cut_rate + faults.line_invalid_json_rate
        self.wants_body = self._callback is not None
        """Whether `pick` needs each line's body (a `line_fault` callback is set)."""
        self.idle = not self.wants_body and self._cut_json <= 0.0
        """Whether no knob is on: every line is answered without a fault, `skip` will do."""

    def skip(self, count: int) -> None:
        """Draw for ``count`` lines answered without a fault (only when `idle`)."""
        random_ = self._random
        for _ in range(count):
            random_()

    def pick(self, custom_id: str, body: dict[str, Any] | None) -> LineFault | None:
        """Draw for one line and pick its fault (pass its body if `wants_body`)."""
        return self.choose(self._random(), custom_id, body)

    def choose(self, draw: float, custom_id: str, body: dict[str, Any] | None) -> LineFault | None:
        """Pick the fault of one line given its ``draw`` (uniform in ``[0, 1)``)."""
        callback = self._callback
        if callback is not None:
            chosen = callback(custom_id, body if body is not None else {})
            if chosen is not None:
                if chosen not in LINE_FAULTS:
                    raise ValueError(f"line_fault returned unknown fault {chosen!r}")
                return cast(LineFault, chosen)
        if draw < self._cut_server:
            return "server_error"
        if draw < self._cut_rate:
            return "rate_limit"
        if draw < self._cut_json:
            return "invalid_json"
        return None
