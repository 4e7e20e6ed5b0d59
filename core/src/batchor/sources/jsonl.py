"""JSON Lines input: one JSON object per line, resumable by byte offset."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

import orjson

from batchor.errors import ConfigurationError, SourceError
from batchor.items import BatchItem
from batchor.sources.base import (
    DEFAULT_ENCODING,
    FileSource,
    codec_name,
    line_decode_error,
    shorten,
    trusted_item,
)

_JSON_WHITESPACE = " \t\r\n"
_PROBE = '\n{}[]":, '


class JsonlItemSource(FileSource):
    """Items from a JSONL file: each line an object; ``id_field`` names the id, the whole
    object is the payload.

    Args:
        path: The file.
        id_field: The field holding each item's id (integers are turned into strings; other
            types than integers and strings are refused).
        metadata_fields: Fields copied into each item's metadata.
        encoding: The file's text encoding; one that writes ASCII as ASCII (UTF-8, the
            default, Latin-1, cp1252, ...). A UTF-8 byte-order mark is accepted.

    Raises:
        ConfigurationError: the encoding is unknown or does not write ASCII as ASCII.
        SourceError: the file is missing; a line is not ``encoding`` text, not a JSON object
            (a lone surrogate escape included), or lacks the id field (naming the line).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        id_field: str,
        metadata_fields: Sequence[str] = (),
        encoding: str = DEFAULT_ENCODING,
    ) -> None:
        codec = codec_name(encoding)
        if codec == "utf-8-sig":
            codec = "utf-8"
        if not _ascii_compatible(codec):
            raise ConfigurationError(
                f"JSONL inputs need an encoding that writes ASCII as ASCII, not {encoding!r}"
            )
        super().__init__(path, id_field=id_field, metadata_fields=metadata_fields)
        self.encoding = encoding
        """The file's text encoding."""
        self._codec = codec

    def iter_from(self, checkpoint: str | None) -> Iterator[tuple[BatchItem, str]]:
        """Items after the byte offset in ``checkpoint``."""
        offset = int(checkpoint) if checkpoint else 0
        # UTF-8 lines go to orjson as bytes, with no error text built: orjson refuses every
        # line the careful path below refuses, so any line it does not take (and the first
        # line, which may carry a byte-order mark) is read again by that path.
        fast = self._codec == "utf-8"
        loads, id_field, metadata_fields = orjson.loads, self.id_field, self.metadata_fields
        with open(self.path, "rb") as fh:
            line_no = 0
            if offset:
                fh.seek(offset)
                line_no = -1  # unknown after a seek; errors then name the byte offset
            for raw in fh:
                start = offset
                offset += len(raw)
                if line_no >= 0:
                    line_no += 1
                if fast and start:
                    try:
                        record = loads(raw)
                    except ValueError:
                        record = None
                    if type(record) is dict:
                        raw_id = record.get(id_field)
                        kind = type(raw_id)
                        if (kind is str and raw_id) or kind is int:
                            try:
                                metadata = (
                                    {name: record[name] for name in metadata_fields}
                                    if metadata_fields
                                    else {}
                                )
                            except KeyError:
                                pass  # the careful path names the missing field
                            else:
                                yield trusted_item(str(raw_id), record, metadata), str(offset)
                                continue
                item = self._careful_item(raw, start, line_no)
                if item is not None:
                    yield item, str(offset)

    def _careful_item(self, raw: bytes, start: int, line_no: int) -> BatchItem | None:
        """The item of one line (``None`` for a blank line), or the error naming the line."""
        where = f"line {line_no}" if line_no >= 0 else f"at byte {start}"
        try:
            text = raw.decode(self._codec)
        except UnicodeError as exc:
            raise line_decode_error(self.path, where, start, self.encoding, exc) from None
        if start == 0 and self._codec == "utf-8":
            text = text.removeprefix("\ufeff")
        if not text.strip(_JSON_WHITESPACE):
            return None
        try:
            record = orjson.loads(text)
        except ValueError as exc:
            raise SourceError(
                f"{self.path.name} {where}: not valid JSON ({shorten(str(exc))})"
            ) from None
        if not isinstance(record, dict):
            raise SourceError(f"{self.path.name} {where}: not a JSON object")
        if isinstance(record.get(self.id_field), float):
            record = json.loads(text)  # orjson reads integers past 64 bits as floats
        if self.id_field not in record:
            if start == 0:
                raise self._unknown_field(list(record), "id field")
            raise SourceError(f"{self.path.name} {where}: no {self.id_field!r} field")
        return self._item(record, where)


def _ascii_compatible(codec: str) -> bool:
    try:
        return _PROBE.encode(codec) == _PROBE.encode("ascii")
    except (UnicodeError, LookupError):
        return False
