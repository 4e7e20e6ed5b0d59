"""Exponential backoff with jitter, bounded: how long to leave something alone after the
provider refused or failed it ``failures`` times in a row."""

from __future__ import annotations

import random

BASE_SECONDS = 2.0
CAP_SECONDS = 600.0


def backoff_delay(failures: int, *, base: float | None = None, cap: float | None = None) -> float:
    """Seconds to wait after the ``failures``-th consecutive failure (1-based): doubling from
    ``base`` up to ``cap``, with "equal jitter" (between half and all of it) so workers that
    failed together do not retry together."""
    base = BASE_SECONDS if base is None else base
    cap = CAP_SECONDS if cap is None else cap
    ceiling = min(cap, base * 2 ** max(0, failures - 1))
    return random.uniform(ceiling / 2, ceiling)
