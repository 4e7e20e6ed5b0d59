"""The BatchorConfig block: registered through the prefect.collections entry point, saved
and loaded with its key secret, falling back to the core's environment variables."""

from __future__ import annotations

import uuid
from pathlib import Path

import batchor_prefect
import pytest
from batchor_prefect import BatchorConfig
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.plugins import load_prefect_collections


def test_the_entry_point_registers_the_block_type() -> None:
    assert load_prefect_collections()["batchor_prefect"] is batchor_prefect
    assert Block.get_block_class_from_key("batchor-config") is BatchorConfig

    BatchorConfig.register_type_and_schema()  # what `prefect block register -m` does
    with get_client(sync_client=True) as client:
        block_type = client.read_block_type_by_slug("batchor-config")
        schema = client.get_most_recent_block_schema_for_block_type(block_type.id)
    assert block_type.name == "Batchor Config"
    assert schema is not None
    fields = schema.fields["properties"]
    assert set(fields) == {
        "store",
        "artifacts",
        "api_keys",
        "base_urls",
        "openai_api_key",
        "openai_base_url",
    }
    assert sorted(schema.fields["secret_fields"]) == ["api_keys.*", "openai_api_key"]


def test_a_saved_block_loads_with_its_key_secret_and_opens_its_store(tmp_path: Path) -> None:
    name = f"prod-{uuid.uuid4().hex[:8]}"
    BatchorConfig(
        store=f"sqlite:///{tmp_path}/db/batchor.db",
        artifacts=str(tmp_path / "art"),
        openai_api_key="sk-block-test",
        openai_base_url="http://127.0.0.1:9/v1",
    ).save(name)

    loaded = Block.load(f"batchor-config/{name}")
    assert isinstance(loaded, BatchorConfig)
    assert loaded.openai_api_key is not None
    assert loaded.openai_api_key.get_secret_value() == "sk-block-test"
    assert "sk-block-test" not in repr(loaded)
    assert loaded.describe()["openai_api_key"] == "set"
    with loaded.runner() as runner:
        assert runner.store.list_runs() == []
    assert (tmp_path / "db" / "batchor.db").is_file()


def test_unset_fields_fall_back_to_the_core_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATCHOR_STORE", f"sqlite:///{tmp_path}/env/batchor.db")
    monkeypatch.setenv("BATCHOR_ARTIFACTS", str(tmp_path / "env-art"))
    config = BatchorConfig()  # opens nothing
    assert not (tmp_path / "env").exists()
    with config.runner() as runner:
        assert runner.store.list_runs() == []
    assert (tmp_path / "env" / "batchor.db").is_file()


def test_describe_never_shows_a_store_password() -> None:
    config = BatchorConfig(store="postgresql+psycopg://batchor:hunter2@db:5432/batchor")
    assert config.describe()["store"] == "postgresql+psycopg://batchor:***@db:5432/batchor"
