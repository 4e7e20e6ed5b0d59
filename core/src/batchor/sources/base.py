"""The `CheckpointedItemSource` port: a deterministic input that resumes from a
checkpoint."""

from __future__ import annotations

import codecs
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

from batchor.errors import ConfigurationError, SourceError
from batchor.items import BatchItem

DEFAULT_ENCODING = "utf-8"
"""The text encoding CSV and JSONL inputs are read with unless told otherwise."""

_ENCODING_HINT = "give the file's encoding with encoding= (--encoding on the CLI)"


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
        if self.path.is_dir():
            raise SourceError(f"input {self.path} is a directory, not a file")
        if not self.path.exists():
            raise SourceError(f"input file not found: {self.path}")
        if not self.path.is_file():
            raise SourceError(f"input {self.path} is not a regular file")
        try:
            with open(self.path, "rb"):
                pass
        except OSError as exc:
            raise SourceError(f"cannot read input {self.path}: {exc.strerror}") from None

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
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            raise SourceError(
                f"{self.path.name} {where}: {self.id_field!r} is a {type(raw_id).__name__} "
                f"({shorten(repr(raw_id))}); ids must be integers or strings"
            )
        metadata = {}
        for name in self.metadata_fields:
            if name not in record:
                raise SourceError(f"{self.path.name} {where}: no metadata field {name!r}")
            metadata[name] = record[name]
        return trusted_item(str(raw_id), record, metadata)

    def _unknown_field(self, fields: Sequence[str], what: str) -> SourceError:
        shown = shorten(", ".join(fields[:20]), 200) or "none"
        return SourceError(
            f"{what} {self.id_field!r} not found in {self.path.name} (fields: {shown})"
        )


_new = object.__new__
# The slots' own setters: they bypass the frozen class's __setattr__, as its __init__ does.
_set_id = vars(BatchItem)["item_id"].__set__
_set_payload = vars(BatchItem)["payload"].__set__
_set_metadata = vars(BatchItem)["metadata"].__set__


def trusted_item(item_id: str, payload: dict[str, Any], metadata: dict[str, Any]) -> BatchItem:
    """``BatchItem(item_id, payload, metadata)`` for an id already known to be a non-empty
    string, without the frozen dataclass's checked ``__init__`` (half the cost, per item)."""
    item: BatchItem = _new(BatchItem)
    _set_id(item, item_id)
    _set_payload(item, payload)
    _set_metadata(item, metadata)
    return item


def shorten(text: str, limit: int = 80) -> str:
    """``text`` on one line (runs of whitespace become one space), cut at ``limit``
    characters, so an error message built from it stays one line."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def codec_name(encoding: str) -> str:
    """The canonical codec name for ``encoding`` (``"utf-8"`` for ``"UTF8"``).

    Raises:
        ConfigurationError: the encoding is unknown, or is not a text encoding.
    """
    try:
        info = codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ConfigurationError(f"unknown encoding {encoding!r}") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ConfigurationError(f"{encoding!r} is not a text encoding")
    return info.name


def decode_error(path: Path, encoding: str, codec: str) -> SourceError:
    """The error for a file that is not valid ``encoding`` text, naming the line and byte of
    the first bad byte (found by decoding the file again, line by line)."""
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    line, offset = 1, 0
    with open(path, "rb") as fh:
        for chunk in [*fh, b""]:
            pending = decoder.getstate()[0]
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeError as exc:
                start = exc.start if isinstance(exc, UnicodeDecodeError) else 0
                reason = exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)
                return SourceError(
                    f"{path.name} line {line} (byte {offset - len(pending) + start}): not "
                    f"valid {encoding} text ({shorten(reason)}); {_ENCODING_HINT}"
                )
            line += text.count("\n")
            offset += len(chunk)
    return SourceError(f"{path.name}: not valid {encoding} text; {_ENCODING_HINT}")


def line_decode_error(
    path: Path, where: str, start: int, encoding: str, exc: Exception
) -> SourceError:
    """The error for one line of ``path`` (its first byte at ``start``) that is not valid
    ``encoding`` text."""
    at = start + exc.start if isinstance(exc, UnicodeDecodeError) else start
    reason = exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)
    return SourceError(
        f"{path.name} {where} (byte {at}): not valid {encoding} text ({shorten(reason)}); "
        f"{_ENCODING_HINT}"
    )
