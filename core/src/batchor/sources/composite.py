"""Several checkpointed sources read one after another as one logical source."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence

from batchor.errors import ConfigurationError
from batchor.items import BatchItem
from batchor.sources.base import CheckpointedItemSource, part_locator


class CompositeItemSource:
    """An explicit, ordered list of sources as one input.

    batchor does not discover files: the caller chooses the inputs and their order, and the
    composite's fingerprint covers both, so a run refuses to resume from a reordered or
    changed list. Item ids must be unique across all the parts.

    Args:
        sources: The parts, read in this order.
    """

    def __init__(self, sources: Sequence[CheckpointedItemSource]) -> None:
        if not sources:
            raise ConfigurationError("CompositeItemSource needs at least one source")
        for source in sources:
            if not isinstance(source, CheckpointedItemSource):
                raise ConfigurationError(
                    f"CompositeItemSource parts must be checkpointed sources, got "
                    f"{type(source).__name__}"
                )
        self.sources = list(sources)
        """The parts, in order."""

    @property
    def identity(self) -> str:
        """The parts' identities, in order."""
        return " + ".join(s.identity for s in self.sources)

    def fingerprint(self) -> str:
        """A hash of the parts' fingerprints in order."""
        digest = hashlib.sha256()
        for source in self.sources:
            digest.update(source.fingerprint().encode() + b"\n")
        return digest.hexdigest()

    def iter_from(self, checkpoint: str | None) -> Iterator[tuple[BatchItem, str]]:
        """Items after ``checkpoint`` (``{"part": i, "at": part checkpoint}``)."""
        part, inner = 0, None
        if checkpoint:
            state = json.loads(checkpoint)
            part, inner = int(state["part"]), state["at"]
        for index in range(part, len(self.sources)):
            start = inner if index == part else None
            for item, position in self.sources[index].iter_from(start):
                yield item, json.dumps({"part": index, "at": position})

    def part_identity(self, checkpoint: str) -> str:
        """The identity of the part that yielded the item ``checkpoint`` resumes after."""
        state = json.loads(checkpoint)
        part = self.sources[int(state["part"])]
        return part_locator(part)(state["at"])
