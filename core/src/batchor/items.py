"""Work items and the prompt parts a job builds from each of them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One logical unit of work.

    Attributes:
        item_id: The caller's identifier, unique within a run; results are keyed by it.
        payload: The data ``build_prompt`` turns into a prompt. It is not kept in the store:
            once the request line is written to an artifact, that artifact is the replay source.
        metadata: Small lineage fields (JSON-serialisable) carried through to the item's result,
            so results join back to the caller's tables.
    """

    item_id: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.item_id, str) or not self.item_id:
            raise ValueError(f"item_id must be a non-empty string, got {self.item_id!r}")


@dataclass(frozen=True, slots=True)
class PromptParts:
    """What a job's ``build_prompt`` returns for one item.

    Attributes:
        prompt: The user message.
        system: An optional system message (``instructions`` on the Responses API).
    """

    prompt: str
    system: str | None = None
