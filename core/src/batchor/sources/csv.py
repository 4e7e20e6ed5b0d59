"""CSV input with a header row, resumable by row count."""

from __future__ import annotations

import csv
import os
from collections.abc import Generator, Iterator, Sequence

from batchor.errors import ConfigurationError, SourceError
from batchor.items import BatchItem
from batchor.sources.base import (
    DEFAULT_ENCODING,
    FileSource,
    codec_name,
    decode_error,
    shorten,
)

DEFAULT_FIELD_SIZE_LIMIT = 10_000_000
"""The longest CSV field read by default, in characters (about 10 MB of text)."""


class CsvItemSource(FileSource):
    """Items from a CSV file with a header row; ``id_field`` names the id column and the row
    (column -> string) is the payload.

    The file is read strictly: what cannot be read without guessing is refused rather than
    read some other way.

    Args:
        path: The file.
        id_field: The id column.
        metadata_fields: Columns copied into each item's metadata.
        delimiter: The field separator (one character).
        encoding: The file's text encoding (a UTF-8 byte-order mark is accepted).
        field_size_limit: The longest field accepted, in characters.

    Raises:
        ConfigurationError: the delimiter, encoding or size limit is invalid.
        SourceError: the file is missing, empty or not text in ``encoding``; the header
            repeats a column or lacks the id column; a row has more or fewer fields than the
            header, an unterminated quote, text after a closing quote, a field longer than
            ``field_size_limit`` or an empty id. Each names the file and the line.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        id_field: str,
        metadata_fields: Sequence[str] = (),
        delimiter: str = ",",
        encoding: str = DEFAULT_ENCODING,
        field_size_limit: int = DEFAULT_FIELD_SIZE_LIMIT,
    ) -> None:
        if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in '\r\n"':
            raise ConfigurationError(f"delimiter must be one character, got {delimiter!r}")
        if isinstance(field_size_limit, bool) or not isinstance(field_size_limit, int):
            raise ConfigurationError("field_size_limit must be a number of characters")
        if field_size_limit < 1:
            raise ConfigurationError("field_size_limit must be at least 1")
        codec = codec_name(encoding)
        super().__init__(path, id_field=id_field, metadata_fields=metadata_fields)
        self.delimiter = delimiter
        """The field separator."""
        self.encoding = encoding
        """The file's text encoding."""
        self.field_size_limit = field_size_limit
        """The longest field accepted, in characters."""
        self._codec = "utf-8-sig" if codec in ("utf-8", "utf-8-sig") else codec
        self.columns = self._header()
        """The header's column names."""
        if id_field not in self.columns:
            raise self._unknown_field(self.columns, "id column")
        missing = [f for f in self.metadata_fields if f not in self.columns]
        if missing:
            raise SourceError(f"metadata column {missing[0]!r} not found in {self.path.name}")

    def _header(self) -> list[str]:
        records = self._records()
        try:
            first = next(records, None)
        finally:
            records.close()
        if first is None:
            raise SourceError(f"{self.path.name} is empty: a header row is required")
        line, header = first
        seen: set[str] = set()
        for name in header:
            if name in seen:
                raise SourceError(
                    f"{self.path.name} line {line}: column {shorten(repr(name))} appears more "
                    "than once in the header"
                )
            seen.add(name)
        return header

    def _records(self) -> Generator[tuple[int, list[str]], None, None]:
        """Non-blank records with the line each starts on, the header first."""
        if csv.field_size_limit() < self.field_size_limit:
            csv.field_size_limit(self.field_size_limit)  # process-wide; only ever raised
        try:
            with open(self.path, newline="", encoding=self._codec, errors="strict") as fh:
                reader = csv.reader(fh, delimiter=self.delimiter, strict=True)
                while True:
                    start = reader.line_num + 1
                    try:
                        row = next(reader)
                    except StopIteration:
                        return
                    except csv.Error as exc:
                        raise self._csv_error(exc, start, reader.line_num) from None
                    if not row:
                        continue  # a blank line
                    if any(len(value) > self.field_size_limit for value in row):
                        raise self._too_long(start)
                    yield start, row
        except UnicodeError:  # UTF-16 without a byte-order mark is not a UnicodeDecodeError
            raise decode_error(self.path, self.encoding, self._codec) from None

    def _csv_error(self, exc: csv.Error, start: int, line: int) -> SourceError:
        text = str(exc)
        name = self.path.name
        if "unexpected end of data" in text:
            return SourceError(
                f"{name} line {start}: unterminated quote (a quoted field of the row starting "
                "on this line is never closed)"
            )
        if "field larger than field limit" in text:
            return self._too_long(start)
        if "expected after" in text:
            return SourceError(
                f"{name} line {line}: text after a closing quote (quote a whole field, and "
                "double any quote inside it)"
            )
        return SourceError(f"{name} line {line}: not valid CSV ({shorten(text)})")

    def _too_long(self, start: int) -> SourceError:
        return SourceError(
            f"{self.path.name} line {start}: a field is longer than {self.field_size_limit:,} "
            "characters (raise field_size_limit=, or look for an unterminated quote)"
        )

    def iter_from(self, checkpoint: str | None) -> Iterator[tuple[BatchItem, str]]:
        """Items after the number of data rows in ``checkpoint``."""
        skip = int(checkpoint) if checkpoint else 0
        records = self._records()
        try:
            next(records, None)  # the header, checked when the source was built
            width = len(self.columns)
            for index, (line, row) in enumerate(records):
                if index < skip:
                    continue
                where = f"row {index + 1} (line {line})"
                if len(row) != width:
                    more = "more" if len(row) > width else "fewer"
                    raise SourceError(
                        f"{self.path.name} {where}: {more} fields than the header "
                        f"({len(row)}, the header has {width})"
                    )
                yield self._item(dict(zip(self.columns, row, strict=True)), where), str(index + 1)
        finally:
            records.close()
