"""Worker claims and leases (engine/claims.py and the store's claim_batch): who may create or
collect a batch, until when, and when a claim is taken over - on a real SQLite file and on
the real Postgres server. Time passes through an injected clock, never a sleep."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time as real_time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from batchor import BatchJob, BatchLimits, BatchRunner, ConfigurationError, OpenAIProviderConfig
from batchor.engine import claims
from batchor.states import BatchStatus
from batchor.stores.base import BatchRecord
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator

from .conftest import make_items, prompt


class Clock:
    """Stands in for the ``time`` module of the code under test: ``time()`` is ``now``,
    which the test moves; everything else is the real module's."""

    def __init__(self) -> None:
        self.now = real_time.time()

    def time(self) -> float:
        return self.now

    def __getattr__(self, name: str) -> Any:
        return getattr(real_time, name)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr("batchor.stores.sql.connector.time", c)
    return c


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---- claim names ------------------------------------------------------------------------


def test_owner_names_this_host_process_and_thread() -> None:
    host, pid, thread = claims.owner().split(":")
    assert host == claims._HOST
    assert ":" not in host
    assert pid == str(os.getpid())
    assert thread.split("-")[0] == str(threading.get_ident())
    assert claims.owner() == claims.owner()  # one name for the thread's life
    seen: list[str] = []
    worker = threading.Thread(target=lambda: seen.append(claims.owner()))
    worker.start()
    worker.join()
    assert seen[0] != claims.owner()  # another thread is another claimant
    assert seen[0].rsplit(":", 1)[0] == claims.owner().rsplit(":", 1)[0]


def _in_own_pid_namespace(code: str) -> str:
    """What ``code`` prints, run by a Python process that is pid 1 of a new pid namespace
    (as in a container that shares this host's node name); skips where none can be made."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare command")
    done = subprocess.run(
        [unshare, "--pid", "--fork", "--mount-proc", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        pytest.skip(f"no new pid namespace here: {done.stderr.strip()[-200:]}")
    return done.stdout.strip()


def test_pid_1_of_two_containers_sharing_a_node_name_are_two_workers() -> None:
    # Containers run with the host's network share its node name, and each numbers its
    # processes from 1. Each must see the other's claims as another worker's (only the lease
    # can tell), or it would take a create under way there for its own that has returned.
    imports = "from batchor.engine.claims import owner, owner_gone, this_process\n"
    first = _in_own_pid_namespace(imports + "import os; print(os.getpid(), owner())")
    pid, claim = first.split()
    assert pid == "1"
    seen = _in_own_pid_namespace(
        imports + f"import os; print(os.getpid(), this_process({claim!r}), owner_gone({claim!r}))"
    )
    assert seen == "1 False False"


def test_the_lease_is_sixty_seconds_unless_the_environment_says_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BATCHOR_LEASE_SECONDS", raising=False)
    assert claims.lease_seconds() == 60.0 == claims.DEFAULT_LEASE_SECONDS
    monkeypatch.setenv("BATCHOR_LEASE_SECONDS", "")
    assert claims.lease_seconds() == 60.0
    monkeypatch.setenv("BATCHOR_LEASE_SECONDS", "2.5")
    assert claims.lease_seconds() == 2.5


@pytest.mark.parametrize("raw", ["soon", "0", "-5", "nan", "inf"])
def test_a_lease_that_is_not_a_positive_number_of_seconds_is_named(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("BATCHOR_LEASE_SECONDS", raw)
    with pytest.raises(ConfigurationError) as caught:
        claims.lease_seconds()
    assert str(caught.value) == (
        f"BATCHOR_LEASE_SECONDS must be a positive number of seconds, got {raw!r}"
    )


def test_this_process_recognises_its_own_threads_only() -> None:
    me = claims.owner()
    assert claims.this_process(me)
    assert claims.this_process(me.rsplit(":", 1)[0] + ":12345")  # another thread of it
    assert not claims.this_process(None)
    assert not claims.this_process("")
    assert not claims.this_process(f"{claims._HOST}:{_dead_pid()}:1")
    assert not claims.this_process(f"elsewhere:{os.getpid()}:{threading.get_ident()}")


def test_owner_gone_tells_dead_claimants_from_live_and_unknowable_ones() -> None:
    host = claims._HOST
    assert claims.owner_gone(None)
    assert claims.owner_gone("")
    # Another machine's worker, or a name that is not ours: only its lease can tell.
    assert not claims.owner_gone(f"other-host:{os.getpid()}:1")
    assert not claims.owner_gone(f"{host}:notapid:1")
    assert not claims.owner_gone(host)
    # This process: alive while the thread runs, gone once it has ended.
    assert not claims.owner_gone(claims.owner())
    names: list[str] = []
    release = threading.Event()

    def work() -> None:
        names.append(claims.owner())
        release.wait()

    worker = threading.Thread(target=work)
    worker.start()
    while not names:
        real_time.sleep(0.001)
    assert not claims.owner_gone(names[0])
    release.set()
    worker.join()
    assert claims.owner_gone(names[0])
    # A claim name without a serial (stored before it had one): by the thread's ident.
    assert not claims.owner_gone(f"{host}:{os.getpid()}:{threading.get_ident()}")
    assert claims.owner_gone(f"{host}:{os.getpid()}:1")
    # Another process of this host: alive (pid 1 always is), or gone.
    assert not claims.owner_gone(f"{host}:1:1")
    assert claims.owner_gone(f"{host}:{_dead_pid()}:1")


def test_a_thread_that_gets_an_ended_threads_ident_is_another_claimant() -> None:
    # The interpreter reuses the ident of an ended thread for the next one it starts: an
    # ended thread's claim (a create that failed and returned) must not read as the live
    # new thread's, or its batch would wait out a live worker's create for two minutes.
    names: list[tuple[int | None, str]] = []

    def work() -> None:
        names.append((threading.get_ident(), claims.owner()))

    for _ in range(50):
        worker = threading.Thread(target=work)
        worker.start()
        worker.join()
    idents = [ident for ident, _ in names]
    assert len(set(idents)) < len(idents)  # idents were reused here
    assert len({name for _, name in names}) == len(names)  # every thread its own name
    release = threading.Event()
    started = threading.Event()

    def live() -> None:
        names.append((threading.get_ident(), claims.owner()))
        started.set()
        release.wait()

    worker = threading.Thread(target=live)
    worker.start()
    started.wait()
    try:
        reused = [name for ident, name in names[:-1] if ident == names[-1][0]]
        assert reused  # the live thread has an ident an ended one had
        assert all(claims.owner_gone(name) for name in reused)
        assert not claims.owner_gone(names[-1][1])
    finally:
        release.set()
        worker.join()


# ---- claiming a batch in the store --------------------------------------------------------


@pytest.fixture
def uploaded(store_url: str, tmp_path: Path) -> Iterator[tuple[BatchRunner, BatchRecord]]:
    """A run whose one batch is uploaded and whose create the provider keeps refusing (429),
    on each store backend."""
    faults = EmulatorFaults(create_rate_limit_count=1000)
    with (
        OpenAIBatchEmulator(faults=faults) as emu,
        BatchRunner(store=store_url, artifacts=tmp_path / "artifacts") as runner,
    ):
        job = BatchJob(
            items=make_items(3),
            build_prompt=prompt,
            provider_config=OpenAIProviderConfig(
                model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
            ),
            limits=BatchLimits(max_requests=10),
        )
        run = runner.start(job, "claims")
        record = runner.store.get_run(run.run_id)
        assert record is not None
        [batch] = runner.store.batches(record.pk, [BatchStatus.UPLOADED])
        assert emu.stats.batches_created == 0
        yield runner, batch


def test_of_two_workers_claiming_one_batch_at_once_exactly_one_wins(
    uploaded: tuple[BatchRunner, BatchRecord],
) -> None:
    runner, batch = uploaded
    store = runner.store
    won: dict[str, bool] = {}
    start = threading.Barrier(2)

    def claim(name: str) -> None:
        start.wait()
        won[name] = store.claim_batch(batch.pk, BatchStatus.UPLOADED, name, 60.0)

    workers = [threading.Thread(target=claim, args=(n,)) for n in ("host-a:1:1", "host-b:2:2")]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(won.values()) == [False, True]
    [winner] = [name for name, ok in won.items() if ok]
    current = store.get_batch(batch.pk)
    assert current is not None
    assert current.claimed_by == winner
    assert current.status is BatchStatus.UPLOADED


def test_a_claim_holds_for_its_lease_then_anyone_may_take_it(
    uploaded: tuple[BatchRunner, BatchRecord], clock: Clock
) -> None:
    runner, batch = uploaded
    store = runner.store
    assert store.claim_batch(batch.pk, BatchStatus.UPLOADED, "host-a:1:1", 60.0)
    held = store.get_batch(batch.pk)
    assert held is not None
    assert held.claimed_by == "host-a:1:1"
    assert held.lease_until == pytest.approx(clock.now + 60.0)

    clock.now += 59.0  # inside the lease: the holder renews, another worker is refused
    assert not store.claim_batch(batch.pk, BatchStatus.UPLOADED, "host-b:2:2", 60.0)
    assert store.claim_batch(batch.pk, BatchStatus.UPLOADED, "host-a:1:1", 60.0)
    renewed = store.get_batch(batch.pk)
    assert renewed is not None
    assert renewed.lease_until == pytest.approx(clock.now + 60.0)

    clock.now += 60.5  # the renewed lease has run out: the next worker takes the batch
    assert store.claim_batch(batch.pk, BatchStatus.UPLOADED, "host-b:2:2", 60.0)
    taken = store.get_batch(batch.pk)
    assert taken is not None
    assert taken.claimed_by == "host-b:2:2"
    assert taken.lease_until == pytest.approx(clock.now + 60.0)
    # and the old holder, come back, no longer holds it
    assert not store.claim_batch(batch.pk, BatchStatus.UPLOADED, "host-a:1:1", 60.0)


def test_a_live_claim_is_taken_over_only_from_the_named_claimant(
    uploaded: tuple[BatchRunner, BatchRecord], clock: Clock
) -> None:
    runner, batch = uploaded
    store = runner.store
    dead = f"{claims._HOST}:{_dead_pid()}:1"
    assert store.claim_batch(batch.pk, BatchStatus.UPLOADED, dead, 60.0)
    assert claims.owner_gone(dead)
    # Stealing names whom it takes from: a claim that changed hands meanwhile is kept.
    assert not store.claim_batch(
        batch.pk, BatchStatus.UPLOADED, "host-b:2:2", 60.0, steal_from="host-c:3:3"
    )
    assert store.claim_batch(batch.pk, BatchStatus.UPLOADED, "host-b:2:2", 60.0, steal_from=dead)
    current = store.get_batch(batch.pk)
    assert current is not None
    assert current.claimed_by == "host-b:2:2"


def test_a_claim_is_refused_when_the_batch_moved_on(
    uploaded: tuple[BatchRunner, BatchRecord], clock: Clock
) -> None:
    runner, batch = uploaded
    store = runner.store
    # Claiming expects a status: a batch no longer in it is never claimed, lease or not.
    assert not store.claim_batch(batch.pk, BatchStatus.ENDED, "host-a:1:1", 60.0)
    current = store.get_batch(batch.pk)
    assert current is not None
    assert current.claimed_by != "host-a:1:1"
    assert not store.claim_batch(batch.pk + 1000, BatchStatus.UPLOADED, "host-a:1:1", 60.0)


def test_a_process_this_one_may_not_signal_is_taken_for_alive() -> None:
    # Another user's worker on this host: ``kill(pid, 0)`` is refused, which says it exists.
    host = claims._HOST
    if os.geteuid() != 0:
        assert not claims.owner_gone(f"{host}:1:1")  # pid 1 is not ours to signal
        return
    sleep = shutil.which("sleep")
    if sleep is None:
        pytest.skip("no sleep command to run as another user")
    other_user = subprocess.Popen([sleep, "30"], user=65534, group=65534, cwd="/")
    try:
        os.seteuid(65533)  # neither root nor the other worker's user, until restored below
        try:
            gone = claims.owner_gone(f"{host}:{other_user.pid}:1")
        finally:
            os.seteuid(0)
        assert not gone
    finally:
        other_user.kill()
        other_user.wait()
    assert claims.owner_gone(f"{host}:{other_user.pid}:1")
