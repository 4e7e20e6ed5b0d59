"""CSV input with a header row, resumable by row count."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence

from batchor.errors import SourceError
from batchor.items import BatchItem
from batchor.sources.base import FileSource


class CsvItemSource(FileSource):
    """Items from a CSV file with a header row; ``id_field`` names the id column and the row
    (column -> string) is the payload.

    Args:
        path: The file (UTF-8, a BOM is accepted).
        id_field: The id column.
        metadata_fields: Columns copied into each item's metadata.
        delimiter: The field separator.

    Raises:
        SourceError: the file is missing or empty, the id column is not in the header, a row
            has more fields than the header or an empty id (naming the row).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        id_field: str,
        metadata_fields: Sequence[str] = (),
        delimiter: str = ",",
    ) -> None:
        super().__init__(path, id_field=id_field, metadata_fields=metadata_fields)
        self.delimiter = delimiter
        """The field separator."""
        self.columns = self._header()
        """The header's column names."""
        if id_field not in self.columns:
            raise self._unknown_field(self.columns, "id column")
        missing = [f for f in self.metadata_fields if f not in self.columns]
        if missing:
            raise SourceError(f"metadata column {missing[0]!r} not found in {self.path.name}")

    def _header(self) -> list[str]:
        with open(self.path, newline="", encoding="utf-8-sig") as fh:
            header = next(csv.reader(fh, delimiter=self.delimiter), None)
        if not header:
            raise SourceError(f"{self.path.name} is empty: a header row is required")
        return header

    def iter_from(self, checkpoint: str | None) -> Iterator[tuple[BatchItem, str]]:
        """Items after the number of data rows in ``checkpoint``."""
        skip = int(checkpoint) if checkpoint else 0
        with open(self.path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter=self.delimiter)
            for index, row in enumerate(reader):
                if index < skip:
                    continue
                where = f"row {index + 1} (line {reader.line_num})"
                if None in row:
                    raise SourceError(f"{self.path.name} {where}: more fields than the header")
                yield self._item(dict(row), where), str(index + 1)
