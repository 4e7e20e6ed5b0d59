"""Claims: which worker is creating or collecting a batch, and until when.

Several processes may drive one run. A worker claims a batch before it creates or collects
it; the claim names the worker (``host:pid:thread``) and expires, so a crashed worker's batch is
taken over after the lease. A claimant on this host whose process is gone is recognised at
once, so a worker restarted after a crash does not wait out its own old lease.
"""

from __future__ import annotations

import itertools
import math
import os
import platform
import threading
import weakref

from batchor.errors import ConfigurationError


def _host() -> str:
    """This host's part of a claim name: its node name and, on Linux, its pid namespace.
    Containers that share the host's node name (``--network host``) each number their
    processes from 1: without the namespace, a worker that is pid 1 in one would take
    another's claims for its own, and a create under way there for one of its own that has
    returned (and create the batch a second time)."""
    name = platform.node().replace(":", "-")
    try:
        namespace = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return name  # not Linux: one process numbering per node name
    digits = "".join(c for c in namespace if c.isdigit())
    return f"{name}~{digits}" if digits else name


_HOST = _host()
#: How long a collect claim holds without being renewed (renewed after every chunk), and a
#: worker's hold on the batches it forms while ingesting (renewed with every slice and seal)
#: and on a batch it packed, until it has uploaded it.
DEFAULT_LEASE_SECONDS = 60.0


_serials = itertools.count(1)
_local = threading.local()
#: This process's threads by the thread part of their claim name, while they exist.
_threads: weakref.WeakValueDictionary[str, threading.Thread] = weakref.WeakValueDictionary()


def owner() -> str:
    """This thread's claim name, ``host:pid:ident-serial`` (computed per call: a forked child
    is a new owner). The serial tells apart threads that get the ident of one that ended (the
    interpreter reuses them), so the claim of an ended thread is never taken for a live one's.
    """
    tag = getattr(_local, "tag", None)
    if tag is None:
        tag = _local.tag = f"{threading.get_ident()}-{next(_serials)}"
        _threads[tag] = threading.current_thread()
    return f"{_HOST}:{os.getpid()}:{tag}"


def lease_seconds() -> float:
    """The lease of claims and forming batches: ``$BATCHOR_LEASE_SECONDS``, else 60 s.

    Raises:
        ConfigurationError: the variable is not a positive number of seconds.
    """
    raw = os.environ.get("BATCHOR_LEASE_SECONDS")
    if not raw:
        return DEFAULT_LEASE_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise ConfigurationError(
            f"BATCHOR_LEASE_SECONDS must be a positive number of seconds, got {raw!r}"
        )
    return seconds


def this_process(claimant: str | None) -> bool:
    """Whether ``claimant`` is a thread of this process (its calls have all returned unless
    it is still running)."""
    if not claimant:
        return False
    return claimant.rsplit(":", 1)[0] == owner().rsplit(":", 1)[0]


def owner_gone(claimant: str | None) -> bool:
    """Whether ``claimant`` is a process (or a thread of this process) of this host that no
    longer exists."""
    if not claimant:
        return True
    host, pid, thread = [*claimant.split(":"), "", ""][:3]
    if host != _HOST or not pid.isdigit():
        return False  # another machine's worker: only its lease can tell
    if int(pid) == os.getpid():
        if "-" in thread:  # a name owner() gave a thread of this process
            named = _threads.get(thread)
            return named is None or not named.is_alive()
        return thread not in {str(t.ident) for t in threading.enumerate()}
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def held_elsewhere(claimant: str | None, lease_until: float | None, now: float) -> bool:
    """Whether a worker of another process that is not known to be gone holds a batch until
    a lease that has not lapsed at ``now``: a packed batch is uploaded by its packer, not
    by every worker that sees it first (each would send the whole file; one upload is
    recorded and the others deleted). Threads of one process do not wait for each other."""
    return (
        lease_until is not None
        and lease_until > now
        and not this_process(claimant)
        and not owner_gone(claimant)
    )
