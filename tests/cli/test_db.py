"""``db upgrade``: a fresh store and one written by an older schema end at the newest
revision, and the command says which."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from batchor.stores.migrate import current_revision, head_revision, upgrade
from tests.cli.conftest import Invoke
from tests.cli.helpers import one_error_line, parsed


def test_db_upgrade_creates_a_fresh_store_at_head(tmp_path: Path, invoke: Invoke) -> None:
    url = f"sqlite:///{tmp_path}/fresh/batchor.db"
    result = invoke("db", "upgrade", "--store", url, "--json")
    assert result.exit_code == 0, result.stderr
    assert parsed(result) == {
        "store": url,
        "from": None,
        "to": head_revision(),
        "head": head_revision(),
    }
    assert current_revision(sa.create_engine(url)) == head_revision()

    again = invoke("db", "upgrade", "--store", url)
    assert again.exit_code == 0, again.stderr
    assert f"already at revision {head_revision()}" in again.stdout


def test_db_upgrade_migrates_an_existing_older_store(
    tmp_path: Path, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path}/old.db"
    engine = sa.create_engine(url)
    upgrade(engine, "0001")
    engine.dispose()
    monkeypatch.setenv("BATCHOR_STORE", url)  # the store comes from the environment

    result = invoke("db", "upgrade")
    assert result.exit_code == 0, result.stderr
    assert f"upgraded from revision 0001 to {head_revision()}" in result.stdout
    assert current_revision(sa.create_engine(url)) == head_revision() != "0001"
    assert parsed(invoke("list", "--json")) == []  # the upgraded store opens


def test_db_upgrade_of_a_bad_store_url_is_one_line_exit_2(invoke: Invoke) -> None:
    assert "is not supported" in one_error_line(
        invoke("db", "upgrade", "--store", "mysql://db/x"), 2
    )
