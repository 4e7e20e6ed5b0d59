"""Parquet input, read in record batches with optional column projection, resumable by row."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from batchor.errors import ConfigurationError, SourceError
from batchor.items import BatchItem
from batchor.sources.base import FileSource, shorten

_BATCH_ROWS = 4_096


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise ConfigurationError(
            "Parquet inputs need pyarrow: pip install 'batchor[parquet]'"
        ) from None
    return pq


def _is_id_type(arrow_type: Any) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    string_view = getattr(pa.types, "is_string_view", lambda _t: False)
    return bool(
        pa.types.is_integer(arrow_type)
        or pa.types.is_string(arrow_type)
        or pa.types.is_large_string(arrow_type)
        or string_view(arrow_type)
    )


class ParquetItemSource(FileSource):
    """Items from a Parquet file; each row (column -> value) is the payload.

    Args:
        path: The file.
        id_field: The id column: integers (turned into strings) or strings.
        columns: Read only these columns (the id and metadata columns are added); all when
            ``None``.
        metadata_fields: Columns copied into each item's metadata.

    Raises:
        ConfigurationError: pyarrow is not installed.
        SourceError: the file is missing or not Parquet, a named column is not in it, or the
            id column holds neither integers nor strings (naming the first such row).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        id_field: str,
        columns: Sequence[str] | None = None,
        metadata_fields: Sequence[str] = (),
    ) -> None:
        super().__init__(path, id_field=id_field, metadata_fields=metadata_fields)
        pq = _pyarrow_parquet()
        try:
            schema = pq.read_schema(self.path)
        except Exception as exc:
            raise SourceError(
                f"{self.path.name} is not a readable Parquet file: {shorten(str(exc), 200)}"
            ) from None
        self.columns: list[str] = list(schema.names)
        """The file's columns."""
        wanted = [id_field, *self.metadata_fields, *(columns or ())]
        for name in wanted:
            if name not in self.columns:
                raise (
                    self._unknown_field(self.columns, "column")
                    if name == id_field
                    else (SourceError(f"column {name!r} not found in {self.path.name}"))
                )
        self.projection: list[str] | None = None if columns is None else list(dict.fromkeys(wanted))
        """The columns read (``None``: all)."""
        if not _is_id_type(schema.field(id_field).type):
            self._refuse_id_type(pq, schema.field(id_field).type)

    def _refuse_id_type(self, pq: Any, arrow_type: Any) -> None:
        """Raise for an id column that is neither integers nor strings, naming its first row
        (a null there is the usual missing-id error)."""
        name, field = self.path.name, self.id_field
        for row, record in enumerate(self._rows(pq, [field], None, 0), start=1):
            value = record[field]
            if value is None:
                raise SourceError(f"{name} row {row}: empty or missing {field!r}")
            raise SourceError(
                f"{name} row {row}: {field!r} is a {arrow_type} value ({shorten(repr(value))}); "
                "ids must be integers or strings (cast the column)"
            )

    def _rows(
        self, pq: Any, columns: list[str] | None, groups: list[int] | None, first: int
    ) -> Iterator[dict[str, Any]]:
        """The rows of ``groups`` (all when ``None``; ``first`` rows come before them) as
        dicts, read a record batch at a time; what pyarrow cannot read is a `SourceError`."""
        import pyarrow as pa

        done = first
        try:
            parquet = pq.ParquetFile(self.path)
            if groups is None:
                groups = list(range(parquet.num_row_groups))
            batches = parquet.iter_batches(
                batch_size=_BATCH_ROWS, row_groups=groups, columns=columns
            )
            for batch in batches:
                rows = batch.to_pylist()
                yield from rows
                done += len(rows)
        except (pa.ArrowException, OSError, ValueError, ArithmeticError, TypeError) as exc:
            if isinstance(exc, SourceError):
                raise
            raise SourceError(
                f"{self.path.name} row {done + 1} or a later one cannot be read "
                f"({shorten(f'{type(exc).__name__}: {exc}', 200)})"
            ) from None

    def iter_from(self, checkpoint: str | None) -> Iterator[tuple[BatchItem, str]]:
        """Items after the number of rows in ``checkpoint``; whole row groups before it are
        skipped without being read."""
        skip = int(checkpoint) if checkpoint else 0
        pq = _pyarrow_parquet()
        try:
            parquet = pq.ParquetFile(self.path)
            sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
        except Exception as exc:
            raise SourceError(
                f"{self.path.name} is not a readable Parquet file: {shorten(str(exc), 200)}"
            ) from None
        groups, row = [], 0
        for index, rows in enumerate(sizes):
            if row + rows > skip:
                groups.append(index)
            else:
                row += rows
        if not groups:
            return
        for record in self._rows(pq, self.projection, groups, row):
            row += 1
            if row <= skip:
                continue
            yield self._item(record, f"row {row}"), str(row)
