"""The `CheckpointedItemSource` port: a deterministic input that resumes from a
checkpoint."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

from batchor.errors import SourceError
from batchor.items import BatchItem


@runtime_checkable
class CheckpointedItemSource(Protocol):
    """An input that yields the same items in the same order every time it is read, and can
    continue from an opaque checkpoint it handed out earlier.

    batchor saves each checkpoint in the same transaction as the items before it, so a run
    interrupted mid-ingest resumes from the last durable checkpoint in a fresh process.
    Implement it for your own inputs: ``identity`` names the input, ``fingerprint`` changes
    whenever its content or order does (a run refuses to resume from a changed input), and
    ``iter_from`` yields ``(item, checkpoint)`` pairs where the checkpoint is a string that
    resumes right after that item.
    """

    @property
    def identity(self) -> str:
        """A stable description of the input (for example its path)."""
        ...

    def fingerprint(self) -> str:
        """A hash of the input's content; a different value means a different input."""
        ...

    def iter_from(self, checkpoint: str | None) -> Iterator[tuple[BatchItem, str]]:
        """Items after ``checkpoint`` (from the start when ``None``), each with the checkpoint
        that resumes right after it."""
        ...


def part_locator(source: CheckpointedItemSource) -> Callable[[str], str]:
    """A function from an item's checkpoint to the identity of the input it came from: the
    source's own ``part_identity`` when it has parts (a composite), else its identity."""
    locate = getattr(source, "part_identity", None)
    if callable(locate):
        return cast("Callable[[str], str]", locate)
    identity = source.identity
    return lambda _checkpoint: identity


class FileSource:
    """Shared parts of the file sources: path checks, fingerprint, item building."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        id_field: str,
        metadata_fields: Sequence[str] = (),
    ) -> None:
        self.path = Path(path)
        """The file read."""
        self.id_field = id_field
        """The field holding each item's id."""
        self.metadata_fields = tuple(metadata_fields)
        """Fields copied into each item's metadata (lineage for results)."""
        if not id_field:
            raise SourceError("id_field must be a non-empty field name")
        if not self.path.is_file():
            raise SourceError(f"input file not found: {self.path}")

    @property
    def identity(self) -> str:
        """The file's absolute path."""
        return str(self.path.resolve())

    def fingerprint(self) -> str:
        """SHA-256 of the file's bytes."""
        with open(self.path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()

    def _item(self, record: dict[str, Any], where: str) -> BatchItem:
        raw_id = record.get(self.id_field)
        if raw_id is None or raw_id == "":
            raise SourceError(f"{self.path.name} {where}: empty or missing {self.id_field!r}")
        metadata = {}
        for name in self.metadata_fields:
            if name not in record:
                raise SourceError(f"{self.path.name} {where}: no metadata field {name!r}")
            metadata[name] = record[name]
        return BatchItem(item_id=str(raw_id), payload=record, metadata=metadata)

    def _unknown_field(self, fields: Sequence[str], what: str) -> SourceError:
        shown = ", ".join(fields[:20]) or "none"
        return SourceError(
            f"{what} {self.id_field!r} not found in {self.path.name} (fields: {shown})"
        )
