"""Keeping the interpreter's cycle collector off the process's old objects while a run's
loops allocate by the hundred thousand.

Ingestion and collection keep thousands of records alive at a time (a slice's new items, a
chunk of outcomes: named tuples, which the collector never stops tracking), so they reach
the oldest generation, and every few tens of thousands of them the interpreter runs a full
collection, which walks every object the process holds (the provider SDK's, SQLAlchemy's
and the user's modules: about 150,000 objects). Over a million items that was 28 full
collections and 1.6 s of a 30 s run. Frozen objects are left out of those walks.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def old_objects_frozen() -> Iterator[None]:
    """Freeze the objects that exist on entry (`gc.freeze`) and unfreeze them on exit, so
    full collections meanwhile walk only what was allocated since.

    Does nothing where the process already manages freezing (objects are frozen on entry)
    or collects no cycles. Frozen garbage is not lost: it is collected as usual after the
    exit. The freeze is the process's: objects another thread freezes meanwhile are
    unfrozen on exit too, and a process forked meanwhile (a pool started by
    ``build_prompt``) keeps the freeze; both only make collection less thorough there.
    """
    if not gc.isenabled() or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
