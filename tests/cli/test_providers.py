"""``--provider`` and ``--endpoint`` on ``run``, ``start`` and ``estimate``: OpenAI's three
endpoints and Azure OpenAI's routes through the emulator, the combinations refused on one line
before anything is created, and ``status`` and ``list`` naming where a run's requests go."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchor.testing import OpenAIBatchEmulator
from tests.cli.conftest import Invoke
from tests.cli.helpers import one_error_line, parsed

PROMPT = ["--id-field", "id", "--prompt-field", "text"]
FAST = ["--poll-interval", "0.05"]
AZURE_ENV = ("AZURE_OPENAI_ENDPOINT", "OPENAI_API_VERSION", "AZURE_OPENAI_API_KEY")


def write_jsonl(path: Path, n: int) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": f"text of r{i}"}) + "\n" for i in range(n))
    )
    return path


def nothing_created(emu: OpenAIBatchEmulator | None = None) -> None:
    assert not Path(".batchor").exists()
    if emu is not None:
        assert emu.batches() == []


@pytest.fixture
def azure(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIBatchEmulator]:
    """A live emulator reached only through its Azure routes: the Azure key is set, and no
    OpenAI key, base URL or Azure endpoint and version are in the environment."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", *AZURE_ENV):
        monkeypatch.delenv(name, raising=False)
    with OpenAIBatchEmulator() as emu:
        monkeypatch.setenv("AZURE_OPENAI_API_KEY", emu.api_key)
        yield emu


def test_an_embeddings_run_completes_and_its_results_are_vectors(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator
) -> None:
    write_jsonl(tmp_path / "in.jsonl", 3)
    ran = invoke(
        "run", "in.jsonl", *PROMPT, "--model", "text-embedding-3-small",
        "--endpoint", "embeddings", "--run-id", "emb", *FAST,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    assert [b["endpoint"] for b in emulator.batches()] == ["/v1/embeddings"]

    written = invoke("results", "emb", "--output", "out.jsonl")
    assert written.exit_code == 0, written.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["item_id"] for r in rows] == ["r0", "r1", "r2"]
    for row in rows:
        vector = row["output"]
        assert isinstance(vector, list)
        assert len(vector) > 10
        assert all(isinstance(x, float) for x in vector)

    status = parsed(invoke("status", "emb", "--json"))
    assert (status["provider"], status["endpoint"]) == ("openai", "/v1/embeddings")
    assert status["model"] == "text-embedding-3-small"
    assert status["items"]["completed"] == 3


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        (None, "/v1/responses"),
        ("responses", "/v1/responses"),
        ("chat", "/v1/chat/completions"),
        ("/v1/chat/completions", "/v1/chat/completions"),  # the spelling before names
    ],
)
def test_endpoint_names_reach_the_emulator_as_openai_paths(
    tmp_path: Path, invoke: Invoke, emulator: OpenAIBatchEmulator, given: str | None, sent: str
) -> None:
    write_jsonl(tmp_path / "in.jsonl", 2)
    endpoint = ["--endpoint", given] if given else []
    ran = invoke(
        "run", "in.jsonl", *PROMPT, "--model", "gpt-4.1-mini", *endpoint, "--run-id", "e", *FAST
    )
    assert ran.exit_code == 0, ran.stderr
    assert [b["endpoint"] for b in emulator.batches()] == [sent]

    table = invoke("status", "e")
    assert table.exit_code == 0, table.stderr
    for text in ("provider", "openai", "endpoint", sent, "gpt-4.1-mini"):
        assert text in table.stdout


def test_an_azure_chat_run_goes_through_the_azure_routes(
    tmp_path: Path, invoke: Invoke, azure: OpenAIBatchEmulator
) -> None:
    write_jsonl(tmp_path / "in.jsonl", 3)
    ran = invoke(
        "run", "in.jsonl", *PROMPT, "--provider", "azure", "--model", "my-deployment",
        "--azure-endpoint", azure.azure_endpoint, "--api-version", "2024-10-21",
        "--run-id", "az", "--json", *FAST,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    assert parsed(ran)["items"]["completed"] == 3
    [batch] = azure.batches()
    assert batch["endpoint"] == "/chat/completions"  # Azure's spelling, without /v1

    status = parsed(invoke("status", "az", "--json"))
    assert status["provider"] == "azure"
    assert status["endpoint"] == "/chat/completions"
    assert status["deployment"] == "my-deployment"
    assert status["api_version"] == "2024-10-21"
    assert status["base_url"] == azure.azure_endpoint
    table = invoke("status", "az")
    assert table.exit_code == 0, table.stderr
    for text in ("azure", "/chat/completions", "deployment", "my-deployment", "2024-10-21"):
        assert text in table.stdout

    [listed] = parsed(invoke("list", "--json"))
    assert (listed["provider"], listed["model"]) == ("azure", "my-deployment")
    assert "azure" in invoke("list").stdout


def test_azure_reads_its_endpoint_and_version_from_the_environment(
    tmp_path: Path, invoke: Invoke, azure: OpenAIBatchEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", azure.azure_endpoint)
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    write_jsonl(tmp_path / "in.jsonl", 2)
    started = invoke(
        "start", "in.jsonl", *PROMPT, "--provider", "azure", "--model", "dep",
        "--endpoint", "responses", "--run-id", "env", "--json",
    )  # fmt: skip
    assert started.exit_code == 0, started.stderr
    assert [b["endpoint"] for b in azure.batches()] == ["/v1/responses"]
    status = parsed(invoke("status", "env", "--json"))
    assert (status["provider"], status["endpoint"]) == ("azure", "/v1/responses")
    assert (status["base_url"], status["api_version"]) == (azure.azure_endpoint, "2024-10-21")
    waited = invoke("wait", "env", *FAST, "--json")
    assert waited.exit_code == 0, waited.stderr


def test_azure_emulate_runs_on_the_emulators_azure_routes(
    tmp_path: Path, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", *AZURE_ENV):
        monkeypatch.delenv(name, raising=False)
    write_jsonl(tmp_path / "in.jsonl", 2)
    ran = invoke(
        "run", "in.jsonl", *PROMPT, "--provider", "azure", "--model", "dep", "--emulate",
        "--run-id", "emu", *FAST,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    status = parsed(invoke("status", "emu", "--json"))
    assert (status["provider"], status["deployment"]) == ("azure", "dep")
    assert status["items"]["completed"] == 2


@pytest.mark.parametrize(
    ("command", "extra", "wanted"),
    [
        ("run", ["--provider", "azure", "--endpoint", "embeddings"], "Azure OpenAI batch does"),
        ("start", ["--provider", "AZURE", "--endpoint", "/v1/embeddings"], "does not support"),
        ("estimate", ["--provider", "azure", "--endpoint", "embeddings"], "--provider openai"),
        ("run", ["--endpoint", "embeddings", "--system", "Be brief."], "--system cannot"),
        ("start", ["--endpoint", "embeddings", "--schema", "os:PathLike"], "--schema cannot"),
        ("run", ["--azure-endpoint", "https://x.openai.azure.com"], "--azure-endpoint goes"),
        ("run", ["--api-version", "2024-10-21", "--azure-endpoint", "x"], "go with --provider"),
        ("run", ["--provider", "mistral"], "'--provider'"),
        ("estimate", ["--endpoint", "completions"], "'--endpoint'"),
    ],
)
def test_options_that_do_not_go_together_are_one_line_and_nothing_is_created(
    tmp_path: Path,
    invoke: Invoke,
    emulator: OpenAIBatchEmulator,
    command: str,
    extra: list[str],
    wanted: str,
) -> None:
    write_jsonl(tmp_path / "in.jsonl", 2)
    result = invoke(command, "in.jsonl", *PROMPT, "--model", "m", *extra)
    assert wanted in one_error_line(result, 2)
    nothing_created(emulator)


@pytest.mark.parametrize(
    ("missing", "wanted"),
    [
        ("AZURE_OPENAI_ENDPOINT", "--azure-endpoint"),
        ("OPENAI_API_VERSION", "--api-version"),
        ("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_API_KEY"),
    ],
)
def test_azure_without_endpoint_version_or_key_is_one_line_before_anything(
    tmp_path: Path,
    invoke: Invoke,
    azure: OpenAIBatchEmulator,
    monkeypatch: pytest.MonkeyPatch,
    missing: str,
    wanted: str,
) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", azure.azure_endpoint)
    monkeypatch.setenv("OPENAI_API_VERSION", "2024-10-21")
    monkeypatch.delenv(missing)
    write_jsonl(tmp_path / "in.jsonl", 2)
    for command in ("run", "start"):
        result = invoke(command, "in.jsonl", *PROMPT, "--provider", "azure", "--model", "dep")
        assert wanted in one_error_line(result, 2)
    nothing_created(azure)


def test_estimate_prices_an_embeddings_job_without_a_key(
    tmp_path: Path, invoke: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    write_jsonl(tmp_path / "in.jsonl", 4)
    args = ["in.jsonl", *PROMPT, "--model", "text-embedding-3-small", "--endpoint", "embeddings"]
    found = invoke("estimate", *args, "--json")
    assert found.exit_code == 0, found.stderr
    estimate = parsed(found)
    assert (estimate["provider"], estimate["endpoint"]) == ("openai", "/v1/embeddings")
    assert (estimate["requests"], estimate["batches"]) == (4, 1)
    assert estimate["estimated_input_tokens"] > 0
    table = invoke("estimate", *args)
    assert table.exit_code == 0, table.stderr
    assert "/v1/embeddings" in table.stdout

    azure = ["in.jsonl", *PROMPT, "--provider", "azure", "--model", "dep", "--json"]
    found = invoke("estimate", *azure)  # needs no Azure endpoint, version or key either
    assert found.exit_code == 0, found.stderr
    assert (parsed(found)["provider"], parsed(found)["endpoint"]) == ("azure", "/chat/completions")
    nothing_created()
