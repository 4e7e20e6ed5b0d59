"""Parquet input, read in record batches with optional column projection, resumable by row."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from batchor.errors import ConfigurationError, SourceError
from batchor.items import BatchItem
from batchor.sources.base import FileSource

_BATCH_ROWS = 4_096


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq
    except ModuleNotFoundError:
        raise ConfigurationError(
            "Parquet inputs need pyarrow: pip install 'batchor[parquet]'"
        ) from None
    return pq


class ParquetItemSource(FileSource):
    """Items from a Parquet file; each row (column -> value) is the payload.

    Args:
        path: The file.
        id_field: The id column (values are turned into strings).
        columns: Read only these columns (the id and metadata columns are added); all when
            ``None``.
        metadata_fields: Columns copied into each item's metadata.

    Raises:
        ConfigurationError: pyarrow is not installed.
        SourceError: the file is missing or not Parquet, or a named column is not in it.
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
            raise SourceError(f"{self.path.name} is not a readable Parquet file: {exc}") from None
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

    def iter_from(self, checkpoint: str | None) -> Iterator[tuple[BatchItem, str]]:
        """Items after the number of rows in ``checkpoint``; whole row groups before it are
        skipped without being read."""
        skip = int(checkpoint) if checkpoint else 0
        pq = _pyarrow_parquet()
        parquet = pq.ParquetFile(self.path)
        groups, row = [], 0
        for index in range(parquet.num_row_groups):
            rows = parquet.metadata.row_group(index).num_rows
            if row + rows > skip:
                groups.append(index)
            else:
                row += rows
        if not groups:
            return
        for batch in parquet.iter_batches(
            batch_size=_BATCH_ROWS, row_groups=groups, columns=self.projection
        ):
            for record in batch.to_pylist():
                row += 1
                if row <= skip:
                    continue
                yield self._item(record, f"row {row}"), str(row)
