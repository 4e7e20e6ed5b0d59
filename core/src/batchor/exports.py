"""Writing a run's terminal results to a JSONL, CSV or Parquet file, streamed page by page."""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any

import orjson

from batchor.artifacts.fsspec import open_url_write
from batchor.artifacts.open import is_url, local_path
from batchor.errors import ConfigurationError
from batchor.reading import Lineage
from batchor.states import ItemStatus
from batchor.stores.base import ItemRow, RunRecord, StateStore

FORMATS = (".jsonl", ".csv", ".parquet")
_PAGE = 10_000
# Rows read at once for an embeddings run: a 3,072-float vector is ~40 KB of JSON text.
_VECTOR_PAGE = 1_000
# A Parquet row group is written once it holds this many rows or bytes.
_ROW_GROUP_ROWS = 10_000
_ROW_GROUP_BYTES = 64 << 20
# The flat columns of CSV and Parquet exports, in order.
COLUMNS = (
    "item_id",
    "status",
    "output",
    "output_text",
    "error_class",
    "error_message",
    "error_retryable",
    "error_attempt",
    "attempts",
    "input_tokens",
    "output_tokens",
    "source",
    "row",
    "metadata",
)


def export_format(path: str | os.PathLike[str]) -> str:
    """The export format a path's extension asks for (``.jsonl``, ``.csv``, ``.parquet``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ConfigurationError(
            f"cannot export results to {os.fspath(path)!r}: the extension must be one of "
            f"{', '.join(FORMATS)}"
        )
    return suffix


def export_rows(
    store: StateStore,
    run: RunRecord,
    structured: bool,
    path: str | os.PathLike[str],
    *,
    vectors: bool = False,
) -> int:
    """Write every terminal result of ``run`` to ``path``, a local path or an object-store URL
    (``s3://bucket/results.parquet``), atomically: a local file is written beside it and
    renamed over it when complete; an object appears only once its upload is complete.
    Returns the number of results written.

    With ``vectors`` (an embeddings run) ``output`` is the vector: a JSON array in JSONL, the
    array's JSON text in CSV, a ``list<double>`` column in Parquet. Float64, not float32:
    the column then holds exactly the numbers the provider sent (and `ItemResult.output`
    and the JSONL hold), whatever precision it sent them in; cast it to float32 to halve
    its size."""
    fmt = export_format(path)
    rows = store.stream_terminal_rows(run.pk, _VECTOR_PAGE if vectors else _PAGE)
    lineage = Lineage(run)
    with _destination(path) as fh:
        if fmt == ".jsonl":
            return _write_jsonl(fh, rows, lineage, structured or vectors)
        if fmt == ".csv":
            return _write_csv(fh, rows, lineage)
        return _write_parquet(fh, rows, lineage, vectors)


def _destination(path: str | os.PathLike[str]) -> AbstractContextManager[IO[bytes]]:
    if is_url(path):
        return open_url_write(os.fspath(path))
    return _atomic(local_path(path))


@contextmanager
def _atomic(path: Path) -> Iterator[IO[bytes]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _error(row: ItemRow) -> dict[str, Any] | None:
    if row.error_class is None:
        return None
    return {
        "class": row.error_class,
        "message": row.error_message or "",
        "retryable": bool(row.error_retryable),
        "attempt": row.error_attempt or row.attempts,
    }


def _write_jsonl(
    fh: IO[bytes], pages: Iterator[list[ItemRow]], lineage: Lineage, as_json: bool
) -> int:
    """The same objects as `ItemResult.to_dict`, built straight from the rows: with
    ``as_json``, an output is already valid JSON (a structured output or an embedding's
    array), so it is copied in, not parsed again."""
    dumps, fragment, completed = orjson.dumps, orjson.Fragment, ItemStatus.COMPLETED
    count = 0
    for page in pages:
        out = bytearray()
        for row in page:
            output: Any = None
            text = row.output_text
            if row.status is completed and text is not None:
                output = text
                if as_json:  # valid JSON already; re-encoded only if it spans lines
                    output = orjson.loads(text) if "\n" in text else fragment(text)
            usage = None
            if row.input_tokens is not None or row.output_tokens is not None:
                usage = {
                    "input_tokens": row.input_tokens or 0,
                    "output_tokens": row.output_tokens or 0,
                }
            source, position = lineage.locate(row.seq)
            out += dumps(
                {
                    "item_id": row.item_id,
                    "status": row.status,  # a StrEnum: orjson writes its value
                    "output": output,
                    "output_text": row.output_text,
                    "error": _error(row),
                    "attempts": row.attempts,
                    "usage": usage,
                    "metadata": fragment(row.metadata) if row.metadata else {},  # compact JSON
                    "source": source,
                    "row": position,
                }
            )
            out += b"\n"
        fh.write(out)
        count += len(page)
    return count


def _flat(row: ItemRow, lineage: Lineage) -> tuple[Any, ...]:
    """A row's values in `COLUMNS` order (``output`` and ``metadata`` as JSON text)."""
    source, position = lineage.locate(row.seq)
    completed = row.status is ItemStatus.COMPLETED
    return (
        row.item_id,
        row.status.value,
        row.output_text if completed else None,
        row.output_text,
        row.error_class,
        row.error_message,
        row.error_retryable,
        row.error_attempt,
        row.attempts,
        row.input_tokens,
        row.output_tokens,
        source,
        position,
        row.metadata or "{}",
    )


def _write_csv(fh: IO[bytes], pages: Iterator[list[ItemRow]], lineage: Lineage) -> int:
    text = io.TextIOWrapper(fh, encoding="utf-8", newline="")
    writer = csv.writer(text)
    writer.writerow(COLUMNS)
    count = 0
    for page in pages:
        writer.writerows(tuple("" if v is None else v for v in _flat(row, lineage)) for row in page)
        count += len(page)
    text.flush()
    text.detach()
    return count


def _write_parquet(
    fh: IO[bytes], pages: Iterator[list[ItemRow]], lineage: Lineage, vectors: bool
) -> int:
    """One row group per `_ROW_GROUP_ROWS` rows (or `_ROW_GROUP_BYTES`, whichever comes
    first), so memory stays flat however many rows there are."""
    pa, pq = _pyarrow()
    output_type = pa.list_(pa.float64()) if vectors else pa.string()
    schema = pa.schema(
        [
            ("item_id", pa.string()),
            ("status", pa.string()),
            ("output", output_type),
            ("output_text", pa.string()),
            ("error_class", pa.string()),
            ("error_message", pa.string()),
            ("error_retryable", pa.bool_()),
            ("error_attempt", pa.int32()),
            ("attempts", pa.int32()),
            ("input_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("source", pa.string()),
            ("row", pa.int64()),
            ("metadata", pa.string()),
        ]
    )
    count = 0
    held: list[Any] = []
    held_rows = held_bytes = 0
    with pq.ParquetWriter(fh, schema) as writer:
        for page in pages:
            flat = (_flat(row, lineage) for row in page)
            columns: list[Any] = [list(c) for c in zip(*flat, strict=True)]
            if vectors:
                columns[2] = _vector_array(pa, output_type, columns[2])
            table = pa.Table.from_arrays(columns, schema=schema)
            held.append(table)
            held_rows += table.num_rows
            held_bytes += table.nbytes
            count += len(page)
            if held_rows >= _ROW_GROUP_ROWS or held_bytes >= _ROW_GROUP_BYTES:
                writer.write_table(pa.concat_tables(held))
                held, held_rows, held_bytes = [], 0, 0
        if held:
            writer.write_table(pa.concat_tables(held))
        elif count == 0:
            writer.write_table(schema.empty_table())
    return count


def _vector_array(pa: Any, list_type: Any, texts: list[str | None]) -> Any:
    """A ``list<double>`` column from vectors as JSON text (``None`` for no output), built
    from one flat list of floats rather than a Python list per row."""
    values: list[float] = []
    offsets = [0]
    mask = []
    loads = orjson.loads
    for text in texts:
        if text is not None:
            values += loads(text)
        offsets.append(len(values))
        mask.append(text is None)
    return pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.array(values, pa.float64()),
        type=list_type,
        mask=pa.array(mask, pa.bool_()),
    )


def _pyarrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigurationError(
            "Parquet exports need pyarrow: pip install 'batchor[parquet]'"
        ) from None
    return pa, pq
