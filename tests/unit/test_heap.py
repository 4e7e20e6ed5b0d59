"""The cycle collector during a run's loops: old objects frozen while items are ingested and
outcomes applied, the process's own freezing left alone and restored after."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from batchor import BatchRunner, ItemStatus
from batchor.engine.heap import old_objects_frozen

from .helpers import drive, make_items, make_job, status_counts


@pytest.fixture(autouse=True)
def _nothing_frozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def tracked(obj: object) -> bool:
    """Whether the collector walks ``obj`` (frozen objects are in no generation)."""
    return any(o is obj for o in gc.get_objects())


def test_objects_that_exist_on_entry_are_frozen_until_the_exit() -> None:
    before = object.__new__(type("Old", (), {}))  # a tracked object made before entering
    with old_objects_frozen():
        assert gc.get_freeze_count() > 0
        assert not tracked(before)
    assert gc.get_freeze_count() == 0
    assert tracked(before)


def test_an_exception_still_unfreezes() -> None:
    with pytest.raises(KeyError), old_objects_frozen():
        raise KeyError("boom")
    assert gc.get_freeze_count() == 0


def test_a_process_that_froze_its_own_objects_is_left_as_it_was() -> None:
    old = object.__new__(type("Old", (), {}))
    gc.freeze()
    young = object.__new__(type("Young", (), {}))
    with old_objects_frozen():
        assert tracked(young)  # nothing more frozen
    assert not tracked(old)  # and not unfrozen: the process froze it


def test_with_the_collector_off_nothing_is_frozen() -> None:
    gc.disable()
    try:
        with old_objects_frozen():
            assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_a_run_ingests_and_collects_with_old_objects_frozen_and_leaves_none_frozen(
    runner: BatchRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, int] = {}
    store = runner.store
    for method in ("add_items", "apply_outcomes"):
        real = getattr(store, method)

        def spy(*args: object, _real: object = real, _name: str = method, **kw: object) -> object:
            seen[_name] = gc.get_freeze_count()
            return _real(*args, **kw)  # type: ignore[operator]

        monkeypatch.setattr(store, method, spy)
    run = runner.start(make_job(make_items(5)), "frozen")
    summary = drive(run)
    assert summary.completed == 5
    assert status_counts(run) == {ItemStatus.COMPLETED: 5}
    assert seen["add_items"] > 0
    assert seen["apply_outcomes"] > 0
    assert gc.get_freeze_count() == 0
