"""``--provider anthropic`` and ``--provider gemini`` on ``run``, ``start`` and ``estimate``:
runs through each provider's emulator and real SDK (plain text and ``--schema``), ``status``
naming the provider, prices from the table, ``--max-tokens``, the refused combinations, a
missing key or SDK on one line before anything is created, and ``batchor emulator
--provider``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batchor.pricing import PriceTable
from batchor.providers.anthropic.transport import MISSING_SDK as ANTHROPIC_MISSING_SDK
from batchor.providers.gemini.transport import MISSING_SDK as GEMINI_MISSING_SDK
from batchor.results import Usage
from batchor.testing import AnthropicBatchEmulator, GeminiBatchEmulator
from tests.cli.conftest import Invoke
from tests.cli.helpers import one_error_line, parsed

PROMPT = ["--id-field", "id", "--prompt-field", "text"]
FAST = ["--poll-interval", "0.05"]
#: Each provider: the module its SDK imports as, a model the table prices, its key variables.
PROVIDERS = {
    "anthropic": ("anthropic", "claude-haiku-4-5", ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL")),
    "gemini": (
        "google.genai",
        "gemini-2.5-flash",
        ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL"),
    ),
}
SCHEMA = """
from typing import Literal
from pydantic import BaseModel

class Review(BaseModel):
    label: Literal["good", "bad"]
    score: int
"""


def write_jsonl(path: Path, n: int) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": f"text of r{i}"}) + "\n" for i in range(n))
    )
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def nothing_created() -> None:
    assert not Path(".batchor").exists()


@pytest.fixture
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """No provider key or base URL in the environment."""
    for _, _, names in PROVIDERS.values():
        for name in names:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def sdk(provider: str) -> None:
    """Skip unless the provider's SDK (an extra) is installed."""
    pytest.importorskip(PROVIDERS[provider][0])


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_an_emulated_plain_text_run_completes_and_status_names_the_provider(
    tmp_path: Path, invoke: Invoke, no_keys: None, provider: str
) -> None:
    sdk(provider)
    model = PROVIDERS[provider][1]
    write_jsonl(tmp_path / "in.jsonl", 3)
    ran = invoke(
        "run", "in.jsonl", *PROMPT, "--provider", provider, "--model", model,
        "--system", "Answer in one word.", "--emulate", "--run-id", "plain", "--json", *FAST,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    summary = parsed(ran)
    assert summary["items"]["completed"] == 3
    assert summary["usage"]["input_tokens"] > 0
    price = PriceTable().price(model)
    assert price is not None
    assert summary["cost_usd"] == pytest.approx(price.cost(Usage(**summary["usage"])))
    rows = read_jsonl(tmp_path / ".batchor" / "results" / "plain.jsonl")
    assert [r["item_id"] for r in rows] == ["r0", "r1", "r2"]
    assert all(r["status"] == "completed" and isinstance(r["output"], str) for r in rows)

    status = parsed(invoke("status", "plain", "--json"))
    assert (status["provider"], status["model"]) == (provider, model)
    assert status["endpoint"] == (
        "/v1/messages" if provider == "anthropic" else "batchGenerateContent"
    )
    table = invoke("status", "plain")
    assert table.exit_code == 0, table.stderr
    for text in ("provider", provider, model):
        assert text in table.stdout
    [listed] = parsed(invoke("list", "--json"))
    assert (listed["provider"], listed["model"]) == (provider, model)


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_an_emulated_structured_run_returns_typed_outputs(
    tmp_path: Path,
    invoke: Invoke,
    no_keys: None,
    monkeypatch: pytest.MonkeyPatch,
    provider: str,
) -> None:
    sdk(provider)
    module = f"review_schema_{provider}"
    (tmp_path / f"{module}.py").write_text(SCHEMA)
    monkeypatch.delitem(sys.modules, module, raising=False)
    write_jsonl(tmp_path / "in.jsonl", 4)
    ran = invoke(
        "run", "in.jsonl", "--id-field", "id", "--prompt-template", "Review: {text}",
        "--provider", provider, "--model", PROVIDERS[provider][1], "--schema", f"{module}:Review",
        "--emulate", "--run-id", "typed", "--output", "out.jsonl", *FAST,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.stderr
    rows = read_jsonl(tmp_path / "out.jsonl")
    assert len(rows) == 4
    for row in rows:
        assert row["status"] == "completed", row
        assert row["output"]["label"] in ("good", "bad")
        assert isinstance(row["output"]["score"], int)


def test_max_tokens_reaches_the_anthropic_requests_and_status(
    tmp_path: Path, invoke: Invoke, no_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdk("anthropic")
    with AnthropicBatchEmulator() as emu:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", emu.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", emu.api_key)
        write_jsonl(tmp_path / "in.jsonl", 2)
        started = invoke(
            "start", "in.jsonl", *PROMPT, "--provider", "anthropic", "--model",
            "claude-haiku-4-5", "--max-tokens", "64", "--run-id", "mt", "--json",
        )  # fmt: skip
        assert started.exit_code == 0, started.stderr
        [batch] = emu.batches()
        assert emu.data_dir is not None
        spooled = read_jsonl(emu.data_dir / f"{batch['id']}.requests.jsonl")
        assert [line["params"]["max_tokens"] for line in spooled] == [64, 64]
        assert [line["params"]["model"] for line in spooled] == ["claude-haiku-4-5"] * 2
        waited = invoke("wait", "mt", *FAST, "--json")
        assert waited.exit_code == 0, waited.stderr
        assert parsed(waited)["items"]["completed"] == 2
    status = parsed(invoke("status", "mt", "--json"))
    assert (status["provider"], status["max_tokens"]) == ("anthropic", 64)
    assert "max tokens" in invoke("status", "mt").stdout


def test_a_gemini_run_started_on_the_environment_is_followed_by_wait(
    tmp_path: Path, invoke: Invoke, no_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    sdk("gemini")
    with GeminiBatchEmulator() as emu:
        for name, value in emu.environment.items():
            monkeypatch.setenv(name, value)
        write_jsonl(tmp_path / "in.jsonl", 2)
        started = invoke(
            "start", "in.jsonl", *PROMPT, "--provider", "gemini", "--model", "gemini-2.5-flash",
            "--run-id", "gs", "--json",
        )  # fmt: skip
        assert started.exit_code == 0, started.stderr
        assert len(emu.batches()) == 1
        waited = invoke("wait", "gs", *FAST, "--json")
        assert waited.exit_code == 0, waited.stderr
        assert parsed(waited)["items"]["completed"] == 2


@pytest.mark.parametrize(
    ("provider", "model", "price"),
    [("anthropic", "claude-haiku-4-5", 0.5), ("gemini", "gemini-2.5-flash", 0.15)],
)
def test_estimate_prices_each_provider_from_the_table_without_a_key(
    tmp_path: Path, invoke: Invoke, no_keys: None, provider: str, model: str, price: float
) -> None:
    write_jsonl(tmp_path / "in.jsonl", 50)
    args = ["in.jsonl", *PROMPT, "--provider", provider, "--model", model]
    found = invoke("estimate", *args, "--json")
    assert found.exit_code == 0, found.stderr
    estimate = parsed(found)
    assert (estimate["provider"], estimate["model"], estimate["requests"]) == (provider, model, 50)
    assert estimate["estimated_input_tokens"] > 0
    assert estimate["estimated_input_cost_usd"] == pytest.approx(
        estimate["estimated_input_tokens"] * price / 1_000_000
    )
    table = invoke("estimate", *args)
    assert table.exit_code == 0, table.stderr
    assert "estimated input cost" in table.stdout
    assert "$0." in table.stdout
    assert "no price known" not in table.stdout
    nothing_created()


@pytest.mark.parametrize(
    ("command", "extra", "wanted"),
    [
        ("run", ["--provider", "anthropic", "--endpoint", "chat"], "--endpoint cannot be used"),
        ("start", ["--provider", "gemini", "--endpoint", "/v1/responses"], "--provider gemini"),
        ("estimate", ["--provider", "gemini", "--endpoint", "embeddings"], "leave --endpoint"),
        ("run", ["--provider", "gemini", "--max-tokens", "100"], "--max-tokens goes with"),
        ("estimate", ["--max-tokens", "100"], "not --provider openai"),
        ("start", ["--provider", "azure", "--max-tokens", "9"], "not --provider azure"),
        ("run", ["--provider", "anthropic", "--api-version", "x"], "--api-version goes"),
        ("run", ["--provider", "anthropic", "--max-tokens", "0"], "'--max-tokens'"),
        ("start", ["--provider", "gemini", "--emulate"], "--emulate cannot be used with start"),
    ],
)
def test_refused_combinations_are_one_line_and_nothing_is_created(
    tmp_path: Path, invoke: Invoke, no_keys: None, command: str, extra: list[str], wanted: str
) -> None:
    write_jsonl(tmp_path / "in.jsonl", 2)
    result = invoke(command, "in.jsonl", *PROMPT, "--model", "m", *extra)
    assert wanted in one_error_line(result, 2)
    nothing_created()


@pytest.mark.parametrize(
    ("provider", "wanted"), [("anthropic", "ANTHROPIC_API_KEY"), ("gemini", "GEMINI_API_KEY")]
)
def test_a_missing_key_is_one_line_naming_the_variable_before_anything(
    tmp_path: Path, invoke: Invoke, no_keys: None, provider: str, wanted: str
) -> None:
    sdk(provider)
    write_jsonl(tmp_path / "in.jsonl", 2)
    for command, hint in (("run", "--emulate"), ("start", "batchor run ... --emulate")):
        result = invoke(command, "in.jsonl", *PROMPT, "--provider", provider, "--model", "m")
        line = one_error_line(result, 2)
        assert wanted in line
        assert hint in line
    nothing_created()


@pytest.fixture
def without_sdks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither provider SDK imports (as in an install without the extras)."""
    monkeypatch.setitem(sys.modules, "anthropic", None)
    monkeypatch.setitem(sys.modules, "google.genai", None)
    google = sys.modules.get("google")
    if google is not None:
        monkeypatch.delattr(google, "genai", raising=False)


@pytest.mark.parametrize(
    ("provider", "wanted"),
    [("anthropic", ANTHROPIC_MISSING_SDK), ("gemini", GEMINI_MISSING_SDK)],
)
def test_a_missing_sdk_is_one_line_naming_the_extra(
    tmp_path: Path,
    invoke: Invoke,
    without_sdks: None,
    monkeypatch: pytest.MonkeyPatch,
    provider: str,
    wanted: str,
) -> None:
    assert f"pip install 'batchor[{provider}]'" in wanted
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    write_jsonl(tmp_path / "in.jsonl", 2)
    for emulate in ([], ["--emulate"]):
        result = invoke(
            "run", "in.jsonl", *PROMPT, "--provider", provider, "--model", "m", *emulate
        )
        assert one_error_line(result, 2) == f"error: {wanted}\n"
    result = invoke("start", "in.jsonl", *PROMPT, "--provider", provider, "--model", "m")
    assert one_error_line(result, 2) == f"error: {wanted}\n"
    nothing_created()
    # Estimating needs no SDK.
    estimated = invoke("estimate", "in.jsonl", *PROMPT, "--provider", provider, "--model", "m")
    assert estimated.exit_code == 0, estimated.stderr


@pytest.fixture
def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_the_emulator_command_serves_the_chosen_provider(provider: str, free_port: int) -> None:
    sdk(provider)
    exe = Path(sys.executable).with_name("batchor")
    server = subprocess.Popen(
        [str(exe), "emulator", "--provider", provider, "--port", str(free_port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        env = dict(part.split("=", 1) for part in line.split())
        base_url = f"http://127.0.0.1:{free_port}"
        if provider == "anthropic":
            assert env == {
                "ANTHROPIC_BASE_URL": base_url,
                "ANTHROPIC_API_KEY": env["ANTHROPIC_API_KEY"],
            }
            from anthropic import Anthropic

            client = Anthropic(base_url=base_url, api_key=env["ANTHROPIC_API_KEY"], max_retries=0)
            assert list(client.messages.batches.list()) == []
        else:
            assert set(env) == {"GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL"}
            assert env["GOOGLE_GEMINI_BASE_URL"] == base_url
            from google import genai

            gemini = genai.Client(
                api_key=env["GEMINI_API_KEY"],
                http_options=genai.types.HttpOptions(base_url=base_url),
            )
            assert list(gemini.batches.list()) == []
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=10) == 0
