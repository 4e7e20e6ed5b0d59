"""Spies on a real store: the calls a test counts pass through to it unchanged."""

from __future__ import annotations

import pytest

from batchor.states import ItemStatus
from batchor.stores.base import StateStore


def count_item_counts(monkeypatch: pytest.MonkeyPatch, store: StateStore) -> list[int]:
    """Record the run of every ``store.item_counts`` call (a scan of the run's items) in the
    returned list, for the rest of the test."""
    counted: list[int] = []
    count = store.item_counts

    def counting(run_pk: int) -> dict[ItemStatus, int]:
        counted.append(run_pk)
        return count(run_pk)

    monkeypatch.setattr(store, "item_counts", counting)
    return counted
