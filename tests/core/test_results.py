"""Reading results: pages while a run is going, exports that round-trip, lineage."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    CompositeItemSource,
    ConfigurationError,
    CsvItemSource,
    ItemStatus,
    JsonlItemSource,
    OpenAIProviderConfig,
    PromptParts,
    RetryPolicy,
)
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator

from .conftest import Sentiment, make_items, prompt


def _job(emu: OpenAIBatchEmulator, items: object, *, max_requests: int = 50_000) -> BatchJob:
    return BatchJob(
        items=items,  # type: ignore[arg-type]
        build_prompt=prompt,
        provider_config=OpenAIProviderConfig(
            model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
        ),
        structured_output=Sentiment,
        retry_policy=RetryPolicy(max_attempts=2),
        limits=BatchLimits(max_requests=max_requests),
    )


def test_pages_read_while_the_run_goes_return_each_terminal_item_once(
    runner: BatchRunner,
) -> None:
    faults = EmulatorFaults(line_server_error_rate=0.2, seed=7)
    with OpenAIBatchEmulator(phase_seconds=0.1, faults=faults) as emu:
        run = runner.start(_job(emu, make_items(120), max_requests=20), "paged")
        seen: list[str] = []
        pages_before_end = 0
        cursor = 0
        for _ in range(2_000):
            summary = run.refresh()
            page = run.read_results(after=cursor, limit=7)
            assert page.next_cursor >= cursor
            seen += [r.item_id for r in page.results]
            assert all(r.status.is_terminal for r in page.results)
            cursor = page.next_cursor
            if page.results and not summary.is_terminal:
                pages_before_end += 1
            if page.complete:
                break
        else:
            pytest.fail("the run did not finish")
    duplicates = [i for i, n in Counter(seen).items() if n > 1]
    assert duplicates == []
    assert sorted(seen) == sorted(f"item-{i}" for i in range(120))
    assert pages_before_end > 0  # results were read while the run was still going
    statuses = Counter(r.status for r in run.results())
    assert statuses[ItemStatus.FAILED] > 0  # some items ended on a later tick than others
    # A page after the end is empty, complete, and keeps the cursor.
    last = run.read_results(after=cursor, limit=7)
    assert (last.results, last.next_cursor, last.complete) == ([], cursor, True)


def test_exports_round_trip_in_all_three_formats(runner: BatchRunner, tmp_path: Path) -> None:
    faults = EmulatorFaults(line_invalid_json_rate=0.1, seed=3)
    with OpenAIBatchEmulator(faults=faults) as emu:
        run = runner.start(_job(emu, make_items(60)), "exports")
        run.wait(poll_interval=0.05)
    expected = [r.to_dict() for r in run.results()]
    assert {r["status"] for r in expected} == {"completed", "failed"}

    assert run.export_results(tmp_path / "out.jsonl") == 60
    with open(tmp_path / "out.jsonl") as fh:
        assert [json.loads(line) for line in fh] == expected

    flat = [_flat(r) for r in expected]
    assert run.export_results(tmp_path / "out.csv") == 60
    with open(tmp_path / "out.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert rows == [{k: "" if v is None else str(v) for k, v in r.items()} for r in flat]

    assert run.export_results(tmp_path / "out.parquet") == 60
    assert pq.read_table(tmp_path / "out.parquet").to_pylist() == flat

    with pytest.raises(ConfigurationError, match=r"out\.xlsx.*\.jsonl, \.csv, \.parquet"):
        run.export_results(tmp_path / "out.xlsx")
    assert not list(tmp_path.glob(".*.tmp"))


def _flat(r: dict[str, object]) -> dict[str, object]:
    """A JSONL result as the CSV / Parquet columns."""
    error = r["error"] or {}
    usage = r["usage"] or {}
    assert isinstance(error, dict)
    assert isinstance(usage, dict)
    return {
        "item_id": r["item_id"],
        "status": r["status"],
        "output": json.dumps(r["output"], separators=(",", ":")) if r["output"] else None,
        "output_text": r["output_text"],
        "error_class": error.get("class"),
        "error_message": error.get("message"),
        "error_retryable": error.get("retryable"),
        "error_attempt": error.get("attempt"),
        "attempts": r["attempts"],
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "source": r["source"],
        "row": r["row"],
        "metadata": json.dumps(r["metadata"], separators=(",", ":")),
    }


def test_results_say_which_input_and_row_each_item_came_from(
    runner: BatchRunner, tmp_path: Path
) -> None:
    first = tmp_path / "a.csv"
    first.write_text("id,text,region\n" + "".join(f"a{i},text {i},eu\n" for i in range(7)))
    second = tmp_path / "b.jsonl"
    second.write_text(
        "".join(json.dumps({"id": f"b{i}", "text": f"t{i}"}) + "\n" for i in range(5))
    )
    source = CompositeItemSource(
        [
            CsvItemSource(first, id_field="id", metadata_fields=["region"]),
            JsonlItemSource(second, id_field="id"),
        ]
    )
    with OpenAIBatchEmulator() as emu:
        job = BatchJob(
            items=source,
            build_prompt=lambda item: PromptParts(prompt=str(item.payload["text"])),
            provider_config=OpenAIProviderConfig(
                model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
            ),
        )
        runner.start(job, "lineage").wait(poll_interval=0.05)
    results = list(runner.get_run("lineage").results())  # a fresh handle: from the store
    lineage = [(r.item_id, r.source, r.row) for r in results]
    assert lineage == [(f"a{i}", str(first.resolve()), i) for i in range(7)] + [
        (f"b{i}", str(second.resolve()), i) for i in range(5)
    ]
    assert results[0].metadata == {"region": "eu"}


def test_results_of_a_plain_iterable_carry_its_positions(runner: BatchRunner) -> None:
    with OpenAIBatchEmulator() as emu:
        run = runner.start(_job(emu, make_items(4)), "plain-lineage")
        run.wait(poll_interval=0.05)
    assert [(r.item_id, r.source, r.row, dict(r.metadata)) for r in run.results()] == [
        (f"item-{i}", None, i, {"row": i}) for i in range(4)
    ]


def test_a_reply_spanning_lines_stays_one_jsonl_line(runner: BatchRunner, tmp_path: Path) -> None:
    import sqlite3

    with OpenAIBatchEmulator() as emu:
        run = runner.start(_job(emu, make_items(3)), "pretty")
        run.wait(poll_interval=0.05)
    pretty = '{\n  "label": "neutral",\n  "score": 0.5,\n  "note": null\n}'
    with sqlite3.connect(tmp_path / "store/batchor.db") as conn:
        conn.execute("UPDATE batchor_items SET output_text = ? WHERE item_id = 'item-1'", [pretty])
    run.export_results(tmp_path / "out.jsonl")
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert json.loads(lines[1])["output"] == {"label": "neutral", "score": 0.5, "note": None}
