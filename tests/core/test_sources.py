"""File sources yield items deterministically, resume from checkpoints, and name bad rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from batchor import CsvItemSource, JsonlItemSource, SourceError


def _jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_items_and_resume_from_checkpoint(tmp_path: Path) -> None:
    src = JsonlItemSource(
        _jsonl(tmp_path / "in.jsonl", [{"id": i, "text": f"t{i}", "lang": "en"} for i in range(5)]),
        id_field="id",
        metadata_fields=("lang",),
    )
    pairs = list(src.iter_from(None))
    assert [item.item_id for item, _ in pairs] == ["0", "1", "2", "3", "4"]
    assert pairs[0][0].payload["text"] == "t0"
    assert pairs[0][0].metadata == {"lang": "en"}
    resumed = [item.item_id for item, _ in src.iter_from(pairs[2][1])]
    assert resumed == ["3", "4"]


def test_csv_items_and_resume_from_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text('id,text\na,"hello, world"\nb,"multi\nline"\nc,plain\n')
    src = CsvItemSource(str(path), id_field="id")
    pairs = list(src.iter_from(None))
    assert [item.item_id for item, _ in pairs] == ["a", "b", "c"]
    assert pairs[1][0].payload["text"] == "multi\nline"
    assert [item.item_id for item, _ in src.iter_from(pairs[0][1])] == ["b", "c"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="input file not found"):
        JsonlItemSource(tmp_path / "nope.jsonl", id_field="id")


def test_unknown_id_column_lists_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("key,text\n1,a\n")
    message = "id column 'id' not found in in.csv (fields: key, text)"
    with pytest.raises(SourceError, match=re.escape(message)):
        CsvItemSource(str(path), id_field="id")


def test_unknown_id_field_in_jsonl(tmp_path: Path) -> None:
    src = JsonlItemSource(_jsonl(tmp_path / "in.jsonl", [{"key": 1}]), id_field="id")
    with pytest.raises(SourceError, match=r"id field 'id' not found in in.jsonl \(fields: key\)"):
        list(src.iter_from(None))


def test_bad_jsonl_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 1}\n{"id": 2\n')
    with pytest.raises(SourceError, match=re.escape("in.jsonl line 2: not valid JSON")):
        list(JsonlItemSource(path, id_field="id").iter_from(None))


def test_missing_id_in_later_row_is_named(tmp_path: Path) -> None:
    path = _jsonl(tmp_path / "in.jsonl", [{"id": 1}, {"id": ""}])
    with pytest.raises(SourceError, match=re.escape("in.jsonl line 2: empty or missing 'id'")):
        list(JsonlItemSource(path, id_field="id").iter_from(None))


def test_csv_row_with_extra_fields_is_named(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text("id,text\na,b\nc,d,e\n")
    with pytest.raises(SourceError, match=r"row 2 \(line 3\): more fields than the header"):
        list(CsvItemSource(str(path), id_field="id").iter_from(None))
