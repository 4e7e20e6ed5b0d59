"""The `ArtifactStore` port: durable files addressed by slash-separated keys."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO, Protocol


class ArtifactStore(Protocol):
    """Where batchor keeps the files it can replay from.

    Keys are relative, slash-separated paths such as ``runs/<run>/requests/000001.jsonl``.
    """

    def open_write(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A binary writer; the artifact appears atomically, complete, when the block exits
        without an error, and not at all otherwise."""
        ...

    def open_read(self, key: str) -> BinaryIO:
        """A seekable binary reader."""
        ...

    def exists(self, key: str) -> bool:
        """Whether the artifact exists."""
        ...

    def delete(self, key: str) -> None:
        """Remove the artifact if it exists."""
        ...

    def keys(self, prefix: str) -> Iterator[str]:
        """Every artifact key under the folder ``prefix``, sorted."""
        ...

    def size(self, key: str) -> int:
        """The artifact's size in bytes."""
        ...

    def uri(self, key: str) -> str:
        """Where a person or another tool finds the artifact."""
        ...
