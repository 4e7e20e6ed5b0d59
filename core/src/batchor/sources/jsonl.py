"""JSON Lines input: one JSON object per line, resumable by byte offset."""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from batchor.errors import SourceError
from batchor.items import BatchItem
from batchor.sources.base import FileSource


class JsonlItemSource(FileSource):
    """Items from a JSONL file: each line an object; ``id_field`` names the id, the whole
    object is the payload.

    Args:
        path: The file.
        id_field: The field holding each item's id (numbers are turned into strings).
        metadata_fields: Fields copied into each item's metadata.

    Raises:
        SourceError: the file is missing; a line is not a JSON object or lacks the id field
            (naming the line).
    """

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
                if not raw.strip():
                    continue
                where = f"line {line_no}" if line_no >= 0 else f"at byte {start}"
                try:
                    record = orjson.loads(raw)
                except ValueError as exc:
                    raise SourceError(f"{self.path.name} {where}: not valid JSON ({exc})") from None
                if not isinstance(record, dict):
                    raise SourceError(f"{self.path.name} {where}: not a JSON object")
                if self.id_field not in record:
                    if start == 0:
                        raise self._unknown_field(list(record), "id field")
                    raise SourceError(f"{self.path.name} {where}: no {self.id_field!r} field")
                yield self._item(record, where), str(offset)
