"""Real orchestrator services as subprocesses, for the end-to-end tests
(tests/{airflow,dagster,prefect}/test_services.py): a free loopback port, a service started in
a process group of its own with its output in a log file, waiting on it (failing with the log's
tail when it exits or the time runs out), and stopping its whole group. Import what you need::

    from tests.services import Service, free_port

    service = Service.start("my server", [exe, "--port", str(free_port())], env, log, cwd=tmp)
    try:
        service.wait_for("the server answering", probe, timeout=60)
    finally:
        service.stop()
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import psutil
import pytest

T = TypeVar("T")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_group(
    cmd: Sequence[str], env: Mapping[str, str], log_path: Path, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` as the leader of a new process group (a session), stdout and stderr to
    ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=dict(env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _running(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def stop_group(
    *procs: subprocess.Popen[bytes], first: signal.Signals = signal.SIGINT, grace: float = 20.0
) -> None:
    """Stop the process groups ``procs`` lead, and their descendants that left them: ``first``
    (SIGINT: the service shuts its children down), up to ``grace`` seconds for all of them to
    end, then SIGKILL and 5 s more. Reaps the leaders."""
    groups = {proc.pid for proc in procs}
    strays: list[psutil.Process] = []  # descendants in a group of their own
    for proc in procs:
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            for child in psutil.Process(proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error, ProcessLookupError):
                    if os.getpgid(child.pid) not in groups:
                        strays.append(child)
    for sig, wait in ((first, grace), (signal.SIGKILL, 5.0)):
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, sig)
        for stray in strays:
            with contextlib.suppress(psutil.NoSuchProcess):
                stray.send_signal(sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            for proc in procs:
                proc.poll()  # reap a leader that ended, or its group never empties
            strays = [stray for stray in strays if _running(stray)]
            if not strays and all(_gone(pgid) for pgid in groups):
                return
            time.sleep(0.2)


def tail(text_or_path: str | Path, lines: int = 40, without: str | None = None) -> str:
    """The last ``lines`` lines of a text, or of a file (read leniently), leaving out the lines
    that contain ``without``."""
    if isinstance(text_or_path, Path):
        if not text_or_path.exists():
            return f"({text_or_path} does not exist)"
        text_or_path = text_or_path.read_text(errors="replace")
    kept = [line for line in text_or_path.splitlines() if without is None or without not in line]
    return "\n".join(kept[-lines:])


def wait_for(
    what: str,
    check: Callable[[], T | None],
    timeout: float,
    services: Sequence[Service],
    detail: Callable[[], str] = lambda: "",
    *,
    logs: Callable[[], str] | None = None,
    retry_on: tuple[type[Exception], ...] = (),
    interval: float = 0.5,
) -> T:
    """Call ``check`` until it returns something other than None (an exception in
    ``retry_on`` counts as None); fail when one of ``services`` exits, or after ``timeout``
    seconds with ``detail()``, either way with ``logs()`` (by default the services' log tails)."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        for service in services:
            if service.proc.poll() is not None:
                shown = logs() if logs else "\n".join(s.log_tail() for s in services)
                pytest.fail(f"{what}: {service.name} exited ({service.proc.returncode})\n{shown}")
        try:
            value = check()
        except retry_on as exc:
            value, last_error = None, f"{type(exc).__name__}: {exc}"
        if value is not None:
            return value
        if time.monotonic() > deadline:
            more = "; ".join(part for part in (detail(), last_error) if part)
            shown = logs() if logs else "\n".join(s.log_tail() for s in services)
            pytest.fail(f"{what}: not within {timeout:.0f} s{'; ' + more if more else ''}\n{shown}")
        time.sleep(interval)


class Service:
    """A service's process group leader, its log file and the name failures call it by."""

    tail_lines = 40
    grace = 20.0
    """Seconds from SIGINT (the service shuts its children down) to SIGKILL, in ``stop``."""

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.name, self.proc, self.log = name, proc, log

    @staticmethod
    def start(
        name: str, cmd: Sequence[str], env: Mapping[str, str], log: Path, cwd: Path | None
    ) -> Service:
        return Service(name, start_group(cmd, env, log, cwd), log)

    def stop(self) -> None:
        stop_group(self.proc, grace=self.grace)

    def log_tail(self, lines: int | None = None) -> str:
        return f"{self.name} log (last lines):\n{tail(self.log, lines or self.tail_lines)}"

    def wait_for(
        self,
        what: str,
        check: Callable[[], T | None],
        timeout: float,
        detail: Callable[[], str] = lambda: "",
    ) -> T:
        """Poll ``check`` until it returns something; fail (with the log's tail) when the
        service exits or after ``timeout`` seconds."""
        return wait_for(what, check, timeout, [self], detail)
