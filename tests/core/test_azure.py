"""The Azure OpenAI provider, end to end through the SDK's real ``AzureOpenAI`` client against
the emulator's Azure routes (``/openai/...?api-version=``, the ``api-key`` header)."""

from __future__ import annotations

import json
import shutil
import time
import types
from pathlib import Path
from typing import Any, Final

import pytest
from openai import AzureOpenAI

from batchor import (
    AzureOpenAIProviderConfig,
    BatchJob,
    BatchLimits,
    BatchRunner,
    ConfigurationError,
    ItemStatus,
    JobMismatchError,
    OpenAIProviderConfig,
    ProviderAuthError,
    RunStatus,
    estimate_job,
)
from batchor.providers.azure.transport import AzureOpenAITransport
from batchor.providers.registry import config_from_record
from batchor.testing import EmulatorLimits, OpenAIBatchEmulator
from batchor.testing.emulator import batches as emulator_batches

from .conftest import MakeJob, Sentiment, make_items, prompt

API_VERSION: Final = "2024-10-21"
DEPLOYMENT: Final = "gpt-4o-mini-batch"
KEY: Final = "batchor_batch_key"
CREATE: Final = ("POST", "/openai/batches")
LIST: Final = ("GET", "/openai/batches")
AZURE_VARIABLES: Final = (
    "AZURE_OPENAI_ENDPOINT",
    "AZURE_OPENAI_API_KEY",
    "OPENAI_API_VERSION",
    "AZURE_OPENAI_AD_TOKEN",
)


@pytest.fixture(autouse=True)
def _no_azure_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AZURE_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def azure_config(emu: OpenAIBatchEmulator, **overrides: Any) -> AzureOpenAIProviderConfig:
    settings: dict[str, Any] = {
        "deployment": DEPLOYMENT,
        "azure_endpoint": emu.azure_endpoint,
        "api_key": emu.api_key,
        "api_version": API_VERSION,
        **overrides,
    }
    return AzureOpenAIProviderConfig(**settings)


def azure_job(
    config: AzureOpenAIProviderConfig,
    n: int = 12,
    *,
    limits: BatchLimits | None = None,
    structured: type[Sentiment] | None = Sentiment,
) -> BatchJob:
    return BatchJob(
        items=make_items(n),
        build_prompt=prompt,
        provider_config=config,
        structured_output=structured,
        limits=limits or BatchLimits(),
    )


def sdk(emu: OpenAIBatchEmulator) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=emu.azure_endpoint,
        api_key=emu.api_key,
        api_version=API_VERSION,
        max_retries=0,
    )


def sent_lines(emu: OpenAIBatchEmulator) -> list[dict[str, Any]]:
    """Every request line the emulator was sent in batch input files."""
    client = sdk(emu)
    lines = []
    for stored in emu.files():
        if stored["purpose"] == "batch":
            text = client.files.content(stored["id"]).text
            lines += [json.loads(line) for line in text.splitlines()]
    return lines


def assert_typed_and_complete(results: list[Any], n: int) -> None:
    assert [r.item_id for r in results] == [f"item-{i}" for i in range(n)]
    assert {r.status for r in results} == {ItemStatus.COMPLETED}
    assert all(isinstance(r.output, Sentiment) for r in results)


# -- runs through the real AzureOpenAI client ---------------------------------------------------


@pytest.mark.parametrize("endpoint", ["/chat/completions", "/v1/responses"])
def test_a_structured_job_completes_with_explicit_settings(
    runner: BatchRunner, openai_emulator: OpenAIBatchEmulator, endpoint: Any
) -> None:
    emu = openai_emulator
    run = runner.run_and_wait(azure_job(azure_config(emu, endpoint=endpoint)), "az1", timeout=60)
    assert run.summary().status is RunStatus.COMPLETED
    assert_typed_and_complete(list(run.results()), 12)
    # Azure's URL shape only, and Azure's batch lines: the deployment as the model.
    assert emu.stats.calls[CREATE] == 1
    assert emu.stats.calls[("POST", "/openai/files")] == 1
    assert not any(path.startswith("/v1/") for _, path in emu.stats.calls)
    assert [b["endpoint"] for b in emu.batches()] == [endpoint]
    lines = sent_lines(emu)
    assert len(lines) == 12
    assert {line["url"] for line in lines} == {endpoint}
    assert {line["body"]["model"] for line in lines} == {DEPLOYMENT}
    assert run.model == DEPLOYMENT


def test_a_job_configured_by_environment_variables_only(
    runner: BatchRunner, openai_emulator: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = openai_emulator
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", emu.azure_endpoint)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", emu.api_key)
    monkeypatch.setenv("OPENAI_API_VERSION", API_VERSION)
    config = AzureOpenAIProviderConfig(deployment=DEPLOYMENT)
    run = runner.run_and_wait(azure_job(config), "az-env", timeout=60)
    assert run.summary().status is RunStatus.COMPLETED
    assert_typed_and_complete(list(run.results()), 12)
    assert emu.stats.calls[CREATE] == 1
    stored = runner.store.get_run("az-env")
    assert stored is not None
    # The resource and version are stored as resolved (the key never): a later process
    # reaches the same resource with only the key.
    assert (stored.config["base_url"], stored.config["api_version"]) == (
        emu.azure_endpoint,
        API_VERSION,
    )
    assert emu.api_key not in json.dumps(stored.config)


def test_the_stored_run_holds_no_key_and_a_fresh_runner_collects_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "azure-secret-0123456789"
    store, artifacts = f"sqlite:///{tmp_path}/store/batchor.db", tmp_path / "artifacts"
    with OpenAIBatchEmulator(api_key=secret, phase_seconds=0.2) as emu:
        with BatchRunner(store, artifacts) as first:
            first.start(azure_job(azure_config(emu, price_model="gpt-4o-mini")), "az2")
            record = first.store.get_run("az2")
            assert record is not None
            config = record.config
        assert secret not in json.dumps(config)
        assert {
            k: config[k] for k in ("provider", "model", "price_model", "deployment", "endpoint")
        } == {
            "provider": "azure",
            "model": DEPLOYMENT,
            "price_model": "gpt-4o-mini",
            "deployment": DEPLOYMENT,
            "endpoint": "/chat/completions",
        }
        assert (config["base_url"], config["api_version"]) == (emu.azure_endpoint, API_VERSION)
        for path in (tmp_path / "store").glob("batchor.db*"):
            assert secret.encode() not in path.read_bytes()
        for path in artifacts.rglob("*"):
            assert not path.is_file() or secret.encode() not in path.read_bytes()
        # The config rebuilds from the record alone, as the run was started with (but the key).
        rebuilt = config_from_record(config)
        assert rebuilt == azure_config(emu, price_model="gpt-4o-mini", api_key=None)
        # A fresh process knows only the store, the artifacts and the key in its environment.
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", secret)
        with BatchRunner(store, artifacts) as second:
            run = second.get_run("az2")
            assert run.wait(timeout=60, poll_interval=0.05).status is RunStatus.COMPLETED
            assert_typed_and_complete(list(run.results()), 12)
            assert run.model == DEPLOYMENT  # what its requests name
            summary = run.summary()
            assert summary.cost_usd is not None  # priced as gpt-4o-mini, not by deployment
        assert emu.stats.calls[CREATE] == 1
        assert emu.stats.calls[("GET", "/openai/batches/{id}")] >= 1


def test_the_runner_openai_key_and_base_url_never_reach_an_azure_job(tmp_path: Path) -> None:
    openai_key = "sk-openai-not-for-azure"
    with (
        OpenAIBatchEmulator(api_key="azure-key") as emu,
        BatchRunner(
            f"sqlite:///{tmp_path}/s.db",
            tmp_path / "a",
            api_key=openai_key,
            base_url="http://127.0.0.1:9/v1",  # an OpenAI proxy: not the Azure resource
        ) as runner,
    ):
        # No Azure key anywhere: the runner's OpenAI key is not taken for one.
        keyless = AzureOpenAIProviderConfig(
            deployment=DEPLOYMENT, azure_endpoint=emu.azure_endpoint, api_version=API_VERSION
        )
        with pytest.raises(ProviderAuthError, match="AZURE_OPENAI_API_KEY"):
            runner.start(azure_job(keyless, 3), "az-keyless")
        assert runner.store.get_run("az-keyless") is None
        assert emu.stats.total_calls == 0
        config = AzureOpenAIProviderConfig(
            deployment=DEPLOYMENT,
            azure_endpoint=emu.azure_endpoint,
            api_version=API_VERSION,
            api_key="azure-key",
        )
        run = runner.run_and_wait(azure_job(config, 3), "az-runner", timeout=60)
        assert run.summary().status is RunStatus.COMPLETED
        # A handle from the store alone reaches the stored resource, not the runner's URL.
        assert runner.get_run("az-runner").summary().completed == 3
        assert emu.stats.calls[CREATE] == 1


# -- settings missing at run time ---------------------------------------------------------------

MISSING = {
    "endpoint": (ConfigurationError, "AZURE_OPENAI_ENDPOINT", "azure_endpoint="),
    "version": (ConfigurationError, "OPENAI_API_VERSION", "api_version="),
    "key": (ProviderAuthError, "AZURE_OPENAI_API_KEY", "api_key="),
}


@pytest.mark.parametrize("blank", [False, True], ids=["unset", "blank"])
@pytest.mark.parametrize("missing", sorted(MISSING))
def test_a_missing_setting_is_one_line_before_any_run_exists(
    runner: BatchRunner,
    openai_emulator: OpenAIBatchEmulator,
    monkeypatch: pytest.MonkeyPatch,
    missing: str,
    blank: bool,
) -> None:
    emu = openai_emulator
    values = {
        "endpoint": ("AZURE_OPENAI_ENDPOINT", emu.azure_endpoint),
        "version": ("OPENAI_API_VERSION", API_VERSION),
        "key": ("AZURE_OPENAI_API_KEY", emu.api_key),
    }
    for name, (variable, value) in values.items():
        if name != missing:
            monkeypatch.setenv(variable, value)
        elif blank:
            monkeypatch.setenv(variable, " ")
    # The config is built before anything is checked: the environment may come later.
    config = AzureOpenAIProviderConfig(deployment=DEPLOYMENT)
    error, variable, argument = MISSING[missing]
    with pytest.raises(error) as info:
        runner.start(azure_job(config), "az-missing")
    message = str(info.value)
    assert "\n" not in message
    assert variable in message
    assert f"AzureOpenAIProviderConfig({argument}...)" in message
    assert runner.store.get_run("az-missing") is None
    assert emu.stats.calls == {}


def test_the_transport_reports_the_first_missing_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = AzureOpenAIProviderConfig(deployment=DEPLOYMENT).transport()
    assert isinstance(transport, AzureOpenAITransport)
    with pytest.raises(ConfigurationError, match="AZURE_OPENAI_ENDPOINT"):
        transport.check_credentials()
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com")
    with pytest.raises(ConfigurationError, match="OPENAI_API_VERSION"):
        transport.check_credentials()
    monkeypatch.setenv("OPENAI_API_VERSION", API_VERSION)
    with pytest.raises(ProviderAuthError, match="AZURE_OPENAI_API_KEY"):
        transport.check_credentials()
    # An Entra ID token in the SDK's own variable stands in for a key.
    monkeypatch.setenv("AZURE_OPENAI_AD_TOKEN", "token")
    transport.check_credentials()
    assert type(transport.client).__name__ == "AzureOpenAI"


# -- limits and packing -------------------------------------------------------------------------


def test_azure_packs_up_to_100000_requests_per_batch(
    runner: BatchRunner, openai_emulator: OpenAIBatchEmulator
) -> None:
    emu = openai_emulator
    config = azure_config(emu)
    assert (config.limits.max_requests, config.limits.max_bytes) == (100_000, 200_000_000)
    assert config.limits.lookback_seconds is None  # Azure batches never expire by themselves
    run = runner.start(azure_job(config, 3), "az-pack")
    assert run.settings.max_requests == 100_000
    # The provider's limit is accepted for Azure, and refused for OpenAI, naming OpenAI's.
    azure_job(config, limits=BatchLimits(max_requests=100_000, max_bytes=200_000_000))
    openai = OpenAIProviderConfig(model="gpt-4.1-mini", base_url=emu.base_url)
    with pytest.raises(ConfigurationError, match=r"between 1 and 50000 for openai"):
        BatchJob(
            items=[],
            build_prompt=prompt,
            provider_config=openai,
            limits=BatchLimits(max_requests=100_000),
        )
    with pytest.raises(ConfigurationError, match=r"between 1 and 100000 for azure"):
        azure_job(config, limits=BatchLimits(max_requests=100_001))


def test_60000_requests_are_one_azure_batch_and_two_openai_batches() -> None:
    items = make_items(60_000, text="r{i}")
    azure = AzureOpenAIProviderConfig(deployment=DEPLOYMENT, price_model="gpt-4o-mini")
    on_azure = estimate_job(BatchJob(items=items, build_prompt=prompt, provider_config=azure))
    openai = OpenAIProviderConfig(model="gpt-4o-mini", endpoint="/v1/chat/completions")
    on_openai = estimate_job(BatchJob(items=items, build_prompt=prompt, provider_config=openai))
    assert (on_azure.batches, on_openai.batches) == (1, 2)
    assert on_azure.model == "gpt-4o-mini"
    assert on_azure.estimated_input_cost_usd == on_openai.estimated_input_cost_usd


def test_the_emulator_has_azures_limits() -> None:
    limits = EmulatorLimits.azure()
    assert (limits.max_batch_lines, limits.max_batch_input_bytes) == (100_000, 200 * 2**20)


# -- what the config refuses --------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ["/embeddings", "/v1/embeddings"])
def test_embeddings_are_refused(endpoint: Any) -> None:
    with pytest.raises(ConfigurationError) as info:
        AzureOpenAIProviderConfig(deployment=DEPLOYMENT, endpoint=endpoint)
    message = str(info.value)
    assert "\n" not in message
    assert "Azure OpenAI batch does not support embeddings" in message
    assert "OpenAIProviderConfig(endpoint='/v1/embeddings')" in message


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"endpoint": "/v1/chat/completions"}, "must be one of /chat/completions, /v1/responses"),
        ({"deployment": " "}, "deployment must be a non-empty string"),
        ({"price_model": ""}, "price_model must be a non-empty string or None"),
        ({"request_params": {"model": "x"}}, "request_params may not set model"),
        ({"enqueued_token_limit": 0}, "enqueued_token_limit must be a positive number"),
    ],
)
def test_invalid_settings_are_refused(settings: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        AzureOpenAIProviderConfig(**{"deployment": DEPLOYMENT, **settings})


def test_the_key_is_never_shown() -> None:
    config = AzureOpenAIProviderConfig(deployment=DEPLOYMENT, api_key="sk-hidden")
    assert "sk-hidden" not in repr(config)
    assert "sk-hidden" not in json.dumps(config.record())
    assert config.model == DEPLOYMENT
    assert config.provider_name == "azure"


def test_an_openai_run_is_not_attached_by_an_azure_job(
    runner: BatchRunner, openai_emulator: OpenAIBatchEmulator, make_job: MakeJob
) -> None:
    runner.start(make_job(make_items(3)), "shared")
    with pytest.raises(JobMismatchError) as info:
        runner.start(azure_job(azure_config(openai_emulator), 3), "shared")
    message = str(info.value)
    assert "started on provider openai, and this job is for azure" in message
    assert "\n" not in message


# -- exactly once without the store -------------------------------------------------------------


def test_a_lost_store_adopts_azure_batches_of_any_age(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Azure batches never expire, so the first-create lookup lists every batch: one made 40
    days ago (far beyond OpenAI's 26 h look-back) is still found and adopted."""
    db = tmp_path / "store" / "batchor.db"
    store, artifacts = f"sqlite:///{db}", tmp_path / "artifacts"
    long_ago = time.time() - 40 * 86_400
    with OpenAIBatchEmulator(phase_seconds=0.3, limits=EmulatorLimits.azure()) as emu:
        job = azure_job(azure_config(emu), 30, limits=BatchLimits(max_requests=10))
        with monkeypatch.context() as patch:
            patch.setattr(emulator_batches, "time", types.SimpleNamespace(time=lambda: long_ago))
            with BatchRunner(store, artifacts) as first:
                started = first.start(job, "az-lost")
                assert all(b.provider_batch_id is not None for b in started.batches())
        assert emu.stats.calls[CREATE] == 3
        assert {b["created_at"] for b in emu.batches()} == {int(long_ago)}
        for leftover in db.parent.glob(db.name + "*"):  # the store is lost
            leftover.unlink()
        shutil.rmtree(artifacts)
        with BatchRunner(store, artifacts) as second:
            with caplog.at_level("INFO", logger="batchor"):
                run = second.start(azure_job(azure_config(emu), 30, limits=job.limits), "az-lost")
            final = run.wait(timeout=60, poll_interval=0.05)
            assert final.status is RunStatus.COMPLETED
            assert final.completed == 30
            results = list(run.results())
            assert {r.attempts for r in results} == {1}
            adopted = {b.batch_key: b.provider_batch_id for b in run.batches()}
        assert "3 provider batches of this run in all" in caplog.text
        assert dict(emu.stats.batches_by_metadata(KEY)) == {
            "az-lost/000000": 1,
            "az-lost/000001": 1,
            "az-lost/000002": 1,
        }
        assert emu.stats.calls[CREATE] == 3  # nothing bought twice
        assert emu.stats.calls[LIST] == 2  # one listing per start
        assert adopted == {b["metadata"][KEY]: b["id"] for b in emu.batches()}


# -- scale --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_20000_items_through_azure_end_to_end(tmp_path: Path) -> None:
    n = 20_000
    with (
        OpenAIBatchEmulator(limits=EmulatorLimits.azure()) as emu,
        BatchRunner(f"sqlite:///{tmp_path}/s.db", tmp_path / "a") as runner,
    ):
        job = azure_job(azure_config(emu), n, limits=BatchLimits(max_requests=5_000))
        run = runner.run_and_wait(job, "az-20k", timeout=600)
        summary = run.summary()
        assert summary.status is RunStatus.COMPLETED
        assert summary.completed == n
        per_key = dict(emu.stats.batches_by_metadata(KEY))
        assert per_key == {f"az-20k/{i:06d}": 1 for i in range(4)}
        assert emu.stats.calls[CREATE] == 4
        assert sum(1 for r in run.results() if r.status is ItemStatus.COMPLETED) == n
