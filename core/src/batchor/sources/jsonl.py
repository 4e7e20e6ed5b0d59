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
                where = f"line {line_no}" if line_no >= 0 else f"at byte {start}"
                try:
                    text = raw.decode(self._codec)
                except UnicodeError as exc:
                    raise line_decode_error(self.path, where, start, self.encoding, exc) from None
                if start == 0 and self._codec == "utf-8":
                    text = text.removeprefix("\ufeff")
                if not text.strip(_JSON_WHITESPACE):
                    continue
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
                yield self._item(record, where), str(offset)


def _ascii_compatible(codec: str) -> bool:
    try:
        return _PROBE.encode(codec) == _PROBE.encode("ascii")
    except (UnicodeError, LookupError):
        return False
