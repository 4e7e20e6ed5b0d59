"""Cost: usage summed per run and per batch, priced from an overridable table; estimates."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    ModelPrice,
    OpenAIProviderConfig,
    PriceTable,
    Usage,
    estimate_job,
)
from batchor.testing import OpenAIBatchEmulator

from .conftest import Sentiment, make_items, prompt


def _job(emu: OpenAIBatchEmulator, model: str = "gpt-4.1-mini", **params: int) -> BatchJob:
    return BatchJob(
        items=make_items(25),
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model=model, base_url=emu.base_url, api_key=emu.api_key, request_params=params
        ),
        structured_output=Sentiment,
        limits=BatchLimits(max_requests=10),
    )


def test_usage_is_summed_per_run_and_per_batch_and_priced(runner: BatchRunner) -> None:
    with OpenAIBatchEmulator() as emu:
        run = runner.start(_job(emu), "priced")
        summary = run.wait(poll_interval=0.05)
    usage = summary.usage
    assert usage.input_tokens > 0
    assert usage.output_tokens > 0
    per_item = [r.usage for r in run.results()]
    assert sum(u.input_tokens for u in per_item if u) == usage.input_tokens
    batches = run.batches()
    assert [b.requests for b in batches] == [10, 10, 5]
    assert sum(b.usage.input_tokens for b in batches) == usage.input_tokens
    assert sum(b.usage.output_tokens for b in batches) == usage.output_tokens
    expected = (usage.input_tokens * 0.2 + usage.output_tokens * 0.8) / 1_000_000
    assert summary.cost_usd == pytest.approx(expected)
    assert sum(b.cost_usd or 0 for b in batches) == pytest.approx(expected)
    assert summary.to_dict()["cost_usd"] == summary.cost_usd


def test_prices_can_be_overridden_and_unknown_models_have_no_cost(tmp_path: Path) -> None:
    table = PriceTable({"gpt-4.1-mini": (1.0, 2.0), "house-model": ModelPrice(3.0, 4.0)})
    usage = Usage(1_000_000, 500_000)
    assert table.cost("gpt-4.1-mini", usage) == pytest.approx(2.0)
    assert table.cost("gpt-4.1-mini-2025-04-14", usage) == pytest.approx(2.0)  # snapshot
    assert table.cost("gpt-4.1", usage) == pytest.approx(1.0 + 2.0)  # default kept
    assert table.cost("house-model", usage) == pytest.approx(5.0)
    assert table.cost("mystery", usage) is None
    assert table.cost("o3-pro", usage) is None  # a different model, not a snapshot of o3
    assert table.cost("gpt-3.5-turbo-0125", usage) == table.cost("gpt-3.5-turbo", usage)
    assert PriceTable({}, include_defaults=False).cost("gpt-4.1", usage) is None

    with (
        OpenAIBatchEmulator() as emu,
        BatchRunner(
            f"sqlite:///{tmp_path}/b.db", tmp_path / "a", prices={"gpt-4.1-mini": (1.0, 2.0)}
        ) as runner,
    ):
        summary = runner.start(_job(emu), "override").wait(poll_interval=0.05)
        u = summary.usage
        assert summary.cost_usd == pytest.approx((u.input_tokens + 2 * u.output_tokens) / 1e6)
        unknown = runner.start(_job(emu, model="mystery-model"), "unknown").wait(poll_interval=0.05)
        assert unknown.usage.input_tokens > 0
        assert unknown.cost_usd is None


def test_dated_claude_ids_and_gemini_resource_names_take_their_models_price() -> None:
    table = PriceTable()
    # Anthropic's snapshots end in an 8-digit date: they map to the model's id.
    assert table.price("claude-sonnet-4-5-20250929") == table.price("claude-sonnet-4-5")
    assert table.price("claude-sonnet-4-5") == ModelPrice(1.5, 7.5)
    assert table.price("claude-haiku-4-5-20251001") == ModelPrice(0.5, 2.5)
    assert table.price("claude-opus-4-1-20250805") == ModelPrice(7.5, 37.5)
    assert table.price("claude-sonnet-4-20250514") == table.price("claude-sonnet-4")
    # A model that is not in the table is not priced as a neighbour.
    assert table.price("claude-opus-4-5-20251101") is None
    assert table.price("claude-3-5-haiku-20241022") is None
    assert table.price("claude-haiku-4-5-2025102") is None  # not a date
    # The older snapshot spellings still work.
    assert table.price("gpt-4.1-mini-2025-04-14") == table.price("gpt-4.1-mini")
    assert table.price("gpt-3.5-turbo-0125") == table.price("gpt-3.5-turbo")
    # Gemini's resource name is the model's; its dated previews are other models.
    assert table.price("models/gemini-2.5-flash") == ModelPrice(0.15, 1.25)
    assert table.price("gemini-2.5-flash-preview-09-2025") is None
    # Overrides apply to the dated ids too.
    own = PriceTable({"claude-haiku-4-5": (1.0, 2.0)})
    assert own.price("claude-haiku-4-5-20251001") == ModelPrice(1.0, 2.0)


def test_claude_and_gemini_batch_prices() -> None:
    table = PriceTable()
    usage = Usage(2_000_000, 500_000)
    # Claude Haiku 4.5: $0.50 in, $2.50 out per million batch tokens.
    assert table.cost("claude-haiku-4-5-20251001", usage) == pytest.approx(1.0 + 1.25)
    # Gemini 2.5 Flash: $0.15 in, $1.25 out.
    assert table.cost("gemini-2.5-flash", usage) == pytest.approx(0.3 + 0.625)
    # Gemini 2.5 Pro at its prompts-up-to-200k price: $0.625 in, $5.00 out.
    assert table.cost("gemini-2.5-pro", usage) == pytest.approx(1.25 + 2.5)
    for model in ("claude-sonnet-5-5", "claude-opus-5", "gemini-2.5-flash-lite"):
        assert table.price(model) is not None


def test_an_estimate_matches_what_the_run_then_sends(runner: BatchRunner, tmp_path: Path) -> None:
    with OpenAIBatchEmulator() as emu:
        job = _job(emu, max_output_tokens=50)
        estimate = estimate_job(job)
        assert emu.stats.total_calls == 0  # nothing was sent
        run = runner.start(job, "estimated")
        run.wait(poll_interval=0.05)
        assert estimate.batches == emu.stats.batches_created == 3
    assert estimate.requests == 25
    assert estimate.too_large == 0
    inputs = sorted((tmp_path / "artifacts/runs/estimated/batches").glob("*/input.jsonl"))
    assert estimate.input_bytes == sum(p.stat().st_size for p in inputs)
    assert estimate.max_output_tokens == 50
    tokens = estimate.estimated_input_tokens
    assert estimate.estimated_input_cost_usd == pytest.approx(tokens * 0.2 / 1e6)
    assert estimate.estimated_max_cost_usd == pytest.approx((tokens * 0.2 + 25 * 50 * 0.8) / 1e6)
    assert not (tmp_path / "artifacts/runs/none").exists()
