"""File sources yield items deterministically, resume from checkpoints, and name bad rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from batchor import (
    CompositeItemSource,
    CsvItemSource,
    JsonlItemSource,
    ParquetItemSource,
    SourceError,
)


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


def _parquet(path: Path, n: int, row_group_size: int = 7) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": list(range(n)),
            "text": [f"t{i}" for i in range(n)],
            "lang": ["en"] * n,
            "big": ["x" * 10] * n,
        }
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def test_parquet_items_projection_and_resume(tmp_path: Path) -> None:
    src = ParquetItemSource(
        _parquet(tmp_path / "in.parquet", 20),
        id_field="id",
        columns=["text"],
        metadata_fields=("lang",),
    )
    pairs = list(src.iter_from(None))
    assert [item.item_id for item, _ in pairs] == [str(i) for i in range(20)]
    assert pairs[3][0].payload == {"id": 3, "lang": "en", "text": "t3"}  # "big" not read
    assert pairs[3][0].metadata == {"lang": "en"}
    for cut in (0, 6, 7, 13, 19):  # inside and at the edges of 7-row groups
        resumed = [item.item_id for item, _ in src.iter_from(pairs[cut][1])]
        assert resumed == [str(i) for i in range(cut + 1, 20)]


def test_parquet_unknown_columns_are_named(tmp_path: Path) -> None:
    path = _parquet(tmp_path / "in.parquet", 3)
    with pytest.raises(SourceError, match=re.escape("column 'uid' not found in in.parquet")):
        ParquetItemSource(path, id_field="uid")
    with pytest.raises(SourceError, match=re.escape("column 'nope' not found in in.parquet")):
        ParquetItemSource(path, id_field="id", columns=["nope"])


def test_parquet_that_is_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    path.write_text("id,text\n")
    with pytest.raises(SourceError, match="not a readable Parquet file"):
        ParquetItemSource(path, id_field="id")


def test_composite_reads_parts_in_order_and_resumes_across_them(tmp_path: Path) -> None:
    a = _jsonl(tmp_path / "a.jsonl", [{"id": f"a{i}"} for i in range(3)])
    b = tmp_path / "b.csv"
    b.write_text("id\nb0\nb1\n")
    c = _parquet(tmp_path / "c.parquet", 2)
    src = CompositeItemSource(
        [
            JsonlItemSource(a, id_field="id"),
            CsvItemSource(str(b), id_field="id"),
            ParquetItemSource(c, id_field="id"),
        ]
    )
    pairs = list(src.iter_from(None))
    ids = ["a0", "a1", "a2", "b0", "b1", "0", "1"]
    assert [item.item_id for item, _ in pairs] == ids
    for cut in range(len(ids)):
        assert [item.item_id for item, _ in src.iter_from(pairs[cut][1])] == ids[cut + 1 :]


def test_fingerprints_follow_content_and_order(tmp_path: Path) -> None:
    a = JsonlItemSource(_jsonl(tmp_path / "a.jsonl", [{"id": 1}]), id_field="id")
    b = JsonlItemSource(_jsonl(tmp_path / "b.jsonl", [{"id": 2}]), id_field="id")
    assert CompositeItemSource([a, b]).fingerprint() != CompositeItemSource([b, a]).fingerprint()
    before = a.fingerprint()
    _jsonl(tmp_path / "a.jsonl", [{"id": 1}, {"id": 3}])
    assert a.fingerprint() != before
