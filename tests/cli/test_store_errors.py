"""Store errors on the command line: read-only commands never create or migrate a store,
every store the CLI cannot open is one line naming it (password hidden), a silent Postgres
server fails within the connect timeout with a notice meanwhile, and the NUL that used to
block a Postgres run for good round-trips."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchor.stores.migrate import current_revision, head_revision, upgrade
from batchor.stores.open import open_store
from tests.cli.conftest import Invoke
from tests.cli.helpers import JOB, one_error_line, parsed

READ_ONLY = [
    ("list",),
    ("status", "r1"),
    ("results", "r1", "--output", "out.jsonl"),
]


def _with_password(url: str) -> str:
    """``url`` with a password (the test server trusts every local connection)."""
    return url.replace("postgres@", "postgres:s3cret@", 1)


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: c[0])
def test_read_only_commands_refuse_a_missing_sqlite_store(
    invoke: Invoke, tmp_path: Path, command: tuple[str, ...]
) -> None:
    url = f"sqlite:///{tmp_path}/nowhere/batchor.db"
    line = one_error_line(invoke(*command, "--store", url), 2)
    assert f"no store at {url}" in line
    assert not (tmp_path / "nowhere").exists()  # nothing created


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: c[0])
def test_read_only_commands_refuse_a_truncated_store_and_leave_it(
    invoke: Invoke, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """A store truncated mid-run is reported, not replaced by a fresh empty one (which a
    later `run` would take for a new store and buy every batch again)."""
    url = f"sqlite:///{tmp_path}/batchor.db"
    store = open_store(url)
    store.create_run("r1", {}, "fp")
    store.close()
    for suffix in ("", "-wal", "-shm"):
        if (tmp_path / f"batchor.db{suffix}").exists():
            (tmp_path / f"batchor.db{suffix}").write_bytes(b"")
    line = one_error_line(invoke(*command, "--store", url), 2)
    assert f"no store at {url}" in line
    assert "holds no batchor tables" in line
    assert (tmp_path / "batchor.db").stat().st_size == 0  # nothing written over it


def test_read_only_commands_refuse_an_empty_postgres_database(invoke: Invoke, pg_url: str) -> None:
    url = _with_password(pg_url)
    for command in READ_ONLY:
        line = one_error_line(invoke(*command, "--store", url), 2)
        assert "no store at postgresql+psycopg://postgres:***@" in line
        assert "s3cret" not in line
    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert sa.inspect(conn).get_table_names() == []  # nothing created
    engine.dispose()


def test_read_only_commands_do_not_migrate_an_older_store(
    invoke: Invoke, store_url: str, tmp_path: Path
) -> None:
    (tmp_path / "store").mkdir(exist_ok=True)  # the SQLite file's directory
    engine = sa.create_engine(store_url)
    upgrade(engine, "0004")
    line = one_error_line(invoke("list", "--store", store_url), 2)
    assert "schema revision 0004" in line
    assert "batchor db upgrade" in line
    assert current_revision(engine) == "0004"
    engine.dispose()


def test_read_only_commands_read_an_existing_store(invoke: Invoke, store_url: str) -> None:
    open_store(store_url).close()
    assert parsed(invoke("list", "--json", "--store", store_url)) == []
    assert "no run 'nope'" in one_error_line(invoke("status", "nope", "--store", store_url), 2)


def test_list_of_the_memory_store_says_it_holds_nothing(invoke: Invoke) -> None:
    line = one_error_line(invoke("list", "--store", "memory://"), 2)
    assert "lives only in the process" in line


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("memory://extra", "an in-memory store takes no name or path; use memory://"),
        ("sqlite://", "names no file: use sqlite:///path/to/batchor.db"),
        ("mysql://db/x", "is not supported; use sqlite:///path"),
    ],
)
def test_unusable_store_urls_are_one_line(invoke: Invoke, url: str, message: str) -> None:
    for command in (("db", "upgrade"), ("list",)):
        assert message in one_error_line(invoke(*command, "--store", url), 2)


def test_sqlite_memory_url_without_a_path_is_refused_for_writing_commands(
    invoke: Invoke, tmp_path: Path, emulator: object
) -> None:
    """`sqlite://` used to give a store that vanished with the process, silently."""
    (tmp_path / "in.csv").write_text("id,text\na,x\n")
    line = one_error_line(invoke("start", "in.csv", *JOB, "--store", "sqlite://"), 2)
    assert "memory://" in line


def test_a_garbage_file_is_named_by_db_upgrade_and_left_alone(
    invoke: Invoke, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.db"
    data = bytes(range(256)) * 40
    garbage.write_bytes(data)
    url = f"sqlite:///{garbage}"
    for command in (("db", "upgrade"), ("list",)):
        line = one_error_line(invoke(*command, "--store", url), 2)
        assert f"{garbage} is not a SQLite database" in line
    assert garbage.read_bytes() == data


@pytest.mark.parametrize("where", ["directory", "under_a_file", "unopenable"])
def test_an_unopenable_sqlite_path_is_one_line_naming_it(
    invoke: Invoke, tmp_path: Path, where: str
) -> None:
    if where == "directory":
        path = tmp_path / "adir"
        path.mkdir()
        named = str(path)
    elif where == "under_a_file":
        (tmp_path / "afile").write_text("x")
        path = tmp_path / "afile" / "b.db"
        named = str(tmp_path / "afile")
    else:
        path = Path("/proc/batchor-test.db")  # a directory no file can be created in
        named = str(path)
    line = one_error_line(invoke("db", "upgrade", "--store", f"sqlite:///{path}"), 2)
    assert named in line
    assert "OperationalError" not in line


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        server.close()


def _batchor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("batchor")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def test_a_silent_postgres_server_fails_within_the_default_timeout_with_a_notice(
    silent_server: int,
) -> None:
    url = f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{silent_server}/test"
    env = {k: v for k, v in os.environ.items() if k != "PGCONNECT_TIMEOUT"}
    started = time.monotonic()
    result = _batchor("list", "--store", url, env=env)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert elapsed < 20  # 5 s of connect timeout, then the process's own start-up
    lines = result.stderr.splitlines()
    assert len(lines) == 2, result.stderr
    assert "connecting to the store postgresql+psycopg://postgres:***@127.0.0.1" in lines[0]
    assert lines[1].startswith("error: cannot connect to the store")
    assert "(host 127.0.0.1)" in lines[1]
    assert "connect_timeout" in lines[1]
    assert "s3cret" not in result.stderr


def test_connect_timeout_in_the_url_overrides_the_default(silent_server: int) -> None:
    from batchor.errors import StoreUnavailableError

    url = f"postgresql+psycopg://postgres@127.0.0.1:{silent_server}/test?connect_timeout=2"
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=r"\(host 127\.0\.0\.1\)"):
        open_store(url)
    assert time.monotonic() - started < 4.5  # the default (5 s) would take longer


def test_the_issue_repro_with_nul_completes_on_postgres(
    invoke: Invoke, pg_url: str, tmp_path: Path, emulator: object
) -> None:
    """`batchor run` of a JSONL file with NUL in a prompt (echoed into the reply) and in an
    id used to fail every wait and every cancel on Postgres; now it completes and the results
    read back unchanged."""
    (tmp_path / "nul.jsonl").write_text(
        '{"id":"u1","text":"nul\\u0000char"}\n{"id":"u2","text":"ok"}\n'
        '{"id":"u\\u00003","text":"x"}\n'
    )
    store = ["--store", pg_url]
    result = invoke("run", "nul.jsonl", *JOB, "--run-id", "nul", "--json", *store)
    assert result.exit_code == 0, result.stderr
    assert parsed(result)["status"] == "completed"
    out = invoke("results", "nul", "--output", "out.jsonl", *store)
    assert out.exit_code == 0, out.stderr
    rows = {r["item_id"]: r for r in map(json.loads, Path("out.jsonl").read_text().splitlines())}
    assert rows["u1"]["output_text"] == "Echo: nul\x00char"
    assert rows["u\x003"]["status"] == "completed"
    assert head_revision()  # the store is at head (it was created by run)
