"""File sources yield items deterministically, resume from checkpoints, and name bad rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from batchor import (
    CompositeItemSource,
    ConfigurationError,
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


# ---- issue 16: what a source cannot read honestly is one SourceError naming file and line ----


def _refused(source_or_build: object, message: str) -> str:
    """The one-line SourceError reading (or building) the source raises, checked to contain
    ``message``."""
    with pytest.raises(SourceError) as caught:
        _read_all(source_or_build)
    text = str(caught.value)
    assert message in text, text
    assert "\n" not in text
    return text


def _read_all(source_or_build: object) -> None:
    source = source_or_build() if callable(source_or_build) else source_or_build
    list(source.iter_from(None))


def _csv(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    return path


def test_csv_unterminated_quote_is_refused_naming_the_line(tmp_path: Path) -> None:
    # Before: the quote swallowed the next rows into one field (1 item, "x\nr2,b\n").
    path = _csv(tmp_path / "in.csv", 'id,text\nr0,a\nr1,"x\nr2,b\nr3,c\n')
    _refused(CsvItemSource(path, id_field="id"), "in.csv line 3: unterminated quote")


def test_csv_text_after_a_closing_quote_is_refused(tmp_path: Path) -> None:
    # Before: 'a,"b"c' was read as "bc", silently.
    path = _csv(tmp_path / "in.csv", 'id,text\nr0,"b"c\n')
    _refused(CsvItemSource(path, id_field="id"), "in.csv line 2: text after a closing quote")


def test_csv_duplicate_header_column_is_refused(tmp_path: Path) -> None:
    # Before: the last 'id' column silently won.
    path = _csv(tmp_path / "in.csv", "id,text,id\nr1,a,r2\n")
    _refused(
        lambda: CsvItemSource(path, id_field="id"),
        "in.csv line 1: column 'id' appears more than once in the header",
    )


def test_csv_row_with_fewer_fields_than_the_header_is_named(tmp_path: Path) -> None:
    # Before: the missing field became None and the row was accepted.
    path = _csv(tmp_path / "in.csv", "id,text\nr1,a\nr2\n")
    _refused(
        CsvItemSource(path, id_field="id"),
        "in.csv row 2 (line 3): fewer fields than the header (1, the header has 2)",
    )


def test_csv_errors_name_the_line_a_multiline_row_starts_on(tmp_path: Path) -> None:
    path = _csv(tmp_path / "in.csv", 'id,text\n\nr1,"two\nlines"\nr2,a,extra\n')
    src = CsvItemSource(path, id_field="id")
    _refused(src, "in.csv row 2 (line 5): more fields than the header (3, the header has 2)")


def test_csv_field_size_limit_is_configurable_and_named(tmp_path: Path) -> None:
    # Before: a field over 131,072 characters raised a raw `_csv.Error` naming no file.
    big = "x" * 200_000
    path = _csv(tmp_path / "in.csv", f"id,text\nr1,{big}\n")
    [(item, _)] = CsvItemSource(path, id_field="id").iter_from(None)
    assert item.payload["text"] == big  # the default limit is 10,000,000 characters
    small = CsvItemSource(path, id_field="id", field_size_limit=200_000)
    assert len(list(small.iter_from(None))) == 1  # exactly at the limit is fine
    _refused(
        CsvItemSource(path, id_field="id", field_size_limit=199_999),
        "in.csv line 2: a field is longer than 199,999 characters (raise field_size_limit=",
    )
    quoted = _csv(tmp_path / "q.csv", f'id,text\nr1,"{big}"\n')
    _refused(CsvItemSource(quoted, id_field="id", field_size_limit=1_000), "q.csv line 2")


def test_non_utf8_csv_names_line_and_byte_and_reads_with_its_encoding(tmp_path: Path) -> None:
    # Before: a bare UnicodeDecodeError ("position 14"), naming no file.
    path = _csv(tmp_path / "in.csv", "id,text\nr1,ok\nr2,café\n".encode("latin-1"))
    _refused(
        lambda: CsvItemSource(path, id_field="id"),
        "in.csv line 3 (byte 20): not valid utf-8 text (invalid continuation byte); give "
        "the file's encoding with encoding=",
    )
    latin = CsvItemSource(path, id_field="id", encoding="latin-1")
    assert [i.payload["text"] for i, _ in latin.iter_from(None)] == ["ok", "café"]


def test_non_utf8_csv_header_is_named(tmp_path: Path) -> None:
    path = _csv(tmp_path / "in.csv", "id,tëxt\nr1,a\n".encode("latin-1"))
    _refused(lambda: CsvItemSource(path, id_field="id"), "in.csv line 1 (byte 4): not valid")


def test_csv_in_utf16_and_with_a_bom(tmp_path: Path) -> None:
    path = _csv(tmp_path / "in.csv", "id,text\nr1,naïve\n".encode("utf-16"))
    src = CsvItemSource(path, id_field="id", encoding="utf-16")
    assert [i.payload["text"] for i, _ in src.iter_from(None)] == ["naïve"]
    bom = _csv(tmp_path / "bom.csv", "\ufeffid,text\nr1,a\n")
    assert [i.item_id for i, _ in CsvItemSource(bom, id_field="id").iter_from(None)] == ["r1"]


def test_unknown_encoding_and_bad_csv_options_are_configuration_errors(tmp_path: Path) -> None:
    path = _csv(tmp_path / "in.csv", "id\nr1\n")
    with pytest.raises(ConfigurationError, match="unknown encoding 'nope'"):
        CsvItemSource(path, id_field="id", encoding="nope")
    with pytest.raises(ConfigurationError, match="delimiter must be one character"):
        CsvItemSource(path, id_field="id", delimiter=";;")
    with pytest.raises(ConfigurationError, match="field_size_limit must be at least 1"):
        CsvItemSource(path, id_field="id", field_size_limit=0)
    with pytest.raises(ConfigurationError, match="unknown encoding 'nope'"):
        JsonlItemSource(_jsonl(tmp_path / "in.jsonl", [{"id": 1}]), id_field="id", encoding="nope")
    with pytest.raises(ConfigurationError, match="writes ASCII as ASCII, not 'utf-16'"):
        JsonlItemSource(tmp_path / "in.jsonl", id_field="id", encoding="utf-16")


def test_non_utf8_jsonl_names_line_and_byte_and_reads_with_its_encoding(tmp_path: Path) -> None:
    # Before: "not valid JSON (str is not valid UTF-8: surrogates not allowed ...)".
    path = tmp_path / "in.jsonl"
    path.write_bytes('{"id": 1}\n{"id": 2, "text": "café"}\n'.encode("cp1252"))
    _refused(
        JsonlItemSource(path, id_field="id"),
        "in.jsonl line 2 (byte 32): not valid utf-8 text (invalid continuation byte)",
    )
    src = JsonlItemSource(path, id_field="id", encoding="cp1252")
    assert [i.payload.get("text") for i, _ in src.iter_from(None)] == [None, "café"]


def test_jsonl_lone_surrogates_are_refused_naming_the_line(tmp_path: Path) -> None:
    escaped = tmp_path / "escaped.jsonl"
    escaped.write_text('{"id": 1}\n{"id": 2, "text": "\\ud800"}\n')
    _refused(JsonlItemSource(escaped, id_field="id"), "escaped.jsonl line 2: not valid JSON")
    encoded = tmp_path / "encoded.jsonl"  # a surrogate encoded as if it were UTF-8
    encoded.write_bytes(b'{"id": 1}\n{"id": 2, "text": "\xed\xa0\x80"}\n')
    _refused(JsonlItemSource(encoded, id_field="id"), "encoded.jsonl line 2 (byte 29): not valid")


def test_jsonl_with_a_bom_and_nul_characters(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a\\u0000b", "text": "x\\u0000y"}\n')
    [(item, _)] = JsonlItemSource(path, id_field="id").iter_from(None)
    assert (item.item_id, item.payload["text"]) == ("a\x00b", "x\x00y")


@pytest.mark.parametrize(
    ("raw", "kind"),
    [("1.5", "float"), ('{"a": 1}', "dict"), ("[1]", "list"), ("true", "bool")],
)
def test_jsonl_ids_must_be_integers_or_strings(tmp_path: Path, raw: str, kind: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(f'{{"id": 7}}\n{{"id": {raw}}}\n')
    _refused(
        JsonlItemSource(path, id_field="id"),
        f"in.jsonl line 2: 'id' is a {kind} (",
    )


def test_a_directory_is_not_called_not_found(tmp_path: Path) -> None:
    # Before: "input file not found" for a directory that exists.
    (tmp_path / "in.csv").mkdir()
    with pytest.raises(SourceError, match=r"input .*in\.csv is a directory, not a file"):
        CsvItemSource(tmp_path / "in.csv", id_field="id")


def _parquet_ids(path: Path, ids: object) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    column = ids if isinstance(ids, pa.Array) else pa.array(ids)
    pq.write_table(pa.table({"id": column, "text": ["t"] * len(column)}), path)
    return path


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([1, 1.5], "in.parquet row 1: 'id' is a double value (1.0); ids must be integers"),
        ([{"a": 1}], "in.parquet row 1: 'id' is a struct<a: int64> value ({'a': 1});"),
        ([None, True], "in.parquet row 1: empty or missing 'id'"),
        ([None, None], "in.parquet row 1: empty or missing 'id'"),
        ([[1, 2]], "in.parquet row 1: 'id' is a list<"),
    ],
)
def test_parquet_ids_that_are_not_integers_or_strings_are_refused(
    tmp_path: Path, ids: list[object], message: str
) -> None:
    # Before: float and struct ids became the strings "1.5" and "{'a': 1}".
    path = _parquet_ids(tmp_path / "in.parquet", ids)
    _refused(lambda: ParquetItemSource(path, id_field="id"), message)


def test_parquet_null_id_later_names_the_row(tmp_path: Path) -> None:
    path = _parquet_ids(tmp_path / "in.parquet", ["a", "b", None])
    _refused(ParquetItemSource(path, id_field="id"), "in.parquet row 3: empty or missing 'id'")


def test_parquet_integer_string_and_dictionary_ids_are_read(tmp_path: Path) -> None:
    import pyarrow as pa

    for name, ids in {
        "int.parquet": pa.array([3, 2**40], pa.uint64()),
        "str.parquet": pa.array(["x", "y"], pa.large_string()),
        "dict.parquet": pa.array(["x", "y"]).dictionary_encode(),
    }.items():
        src = ParquetItemSource(_parquet_ids(tmp_path / name, ids), id_field="id")
        assert [i.item_id for i, _ in src.iter_from(None)] == [str(v) for v in ids.to_pylist()]


def test_jsonl_integer_ids_past_64_bits_stay_exact(tmp_path: Path) -> None:
    # orjson reads them as floats; before, this id became "1.8446744073709552e+19".
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 18446744073709551617}\n{"id": -9223372036854775809}\n')
    ids = [i.item_id for i, _ in JsonlItemSource(path, id_field="id").iter_from(None)]
    assert ids == ["18446744073709551617", "-9223372036854775809"]


def test_jsonl_lines_after_the_first_keep_every_check(tmp_path: Path) -> None:
    """Lines after the first are read on a fast path; whatever it does not take is read again
    by the careful one, so each refusal and oddity reads as it does on the first line."""
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": 1, "team": "a"}\n\n  \n{"id": 2, "team": "b"}\n{"id": 3}\n')
    source = JsonlItemSource(path, id_field="id", metadata_fields=["team"])
    _refused(source, "in.jsonl line 5: no metadata field")
    read = [item for item, _ in JsonlItemSource(path, id_field="id").iter_from(None)]
    assert [item.item_id for item in read] == ["1", "2", "3"]  # blank lines skipped
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'{"id": 1}\n\xef\xbb\xbf{"id": 2}\n')
    _refused(JsonlItemSource(bom, id_field="id"), "bom.jsonl line 2: not valid JSON")
    big = tmp_path / "big.jsonl"
    big.write_text('{"id": 1}\n{"id": 123456789012345678901234567890}\n')
    ids = [item.item_id for item, _ in JsonlItemSource(big, id_field="id").iter_from(None)]
    assert ids == ["1", "123456789012345678901234567890"]
