"""Turning stored item rows into results: typed outputs, failures, usage and lineage."""

from __future__ import annotations

import json
from bisect import bisect_right
from typing import TYPE_CHECKING, Any

import orjson

from batchor.results import ItemFailure, ItemResult, Usage
from batchor.states import ItemStatus
from batchor.stores.base import ItemRow, RunRecord
from batchor.structured import OutputValidationError, validate_output

if TYPE_CHECKING:
    from pydantic import BaseModel

# A result cursor packs (done_tick, seq) into one growing integer.
_SEQ_BITS = 32


def cursor_of(row: ItemRow) -> int:
    """The cursor that reads on after ``row``."""
    return ((row.done_tick or 0) << _SEQ_BITS) | row.seq


def cursor_position(cursor: int) -> tuple[int, int]:
    """The ``(done_tick, seq)`` a cursor stands for."""
    if cursor < 0:
        raise ValueError(f"a result cursor is a non-negative integer, got {cursor}")
    return cursor >> _SEQ_BITS, cursor & ((1 << _SEQ_BITS) - 1)


class Lineage:
    """Where each item came from: the source part and the item's position in it."""

    def __init__(self, run: RunRecord) -> None:
        self._names = [p.name for p in run.source_parts]
        self._firsts = [p.first_seq for p in run.source_parts]

    def locate(self, seq: int) -> tuple[str | None, int]:
        """``(source identity or None, 0-based row)`` of the item with that seq."""
        index = bisect_right(self._firsts, seq) - 1
        if index < 0:
            return None, seq - 1
        return self._names[index], seq - self._firsts[index]


class ResultBuilder:
    """Builds `ItemResult` objects from rows of one run.

    Args:
        run: The run.
        structured: Whether its outputs are structured (JSON of a schema).
        model: The model to validate structured outputs into, if any.
        vectors: Whether its outputs are embedding vectors (the codec's ``output_kind`` is
            ``"vector"``): ``output`` is then the ``list[float]`` the text holds.
    """

    def __init__(
        self,
        run: RunRecord,
        structured: bool,
        model: type[BaseModel] | None,
        *,
        vectors: bool = False,
    ) -> None:
        self.lineage = Lineage(run)
        self.structured = structured
        self.model = model
        self.vectors = vectors

    def result(self, row: ItemRow) -> ItemResult:
        """The result of one row."""
        output: Any = None
        if row.status is ItemStatus.COMPLETED and row.output_text is not None:
            output = row.output_text
            if self.vectors:
                output = vector_output(row.output_text)
            elif self.structured:
                output = typed_output(row.output_text, self.model)
        error = None
        if row.error_class is not None:
            error = ItemFailure(
                error_class=row.error_class,
                message=row.error_message or "",
                retryable=bool(row.error_retryable),
                attempt=row.error_attempt or row.attempts,
            )
        usage = None
        if row.input_tokens is not None or row.output_tokens is not None:
            usage = Usage(row.input_tokens or 0, row.output_tokens or 0)
        source, position = self.lineage.locate(row.seq)
        return ItemResult(
            item_id=row.item_id,
            status=row.status,
            output=output,
            output_text=row.output_text,
            error=error,
            attempts=row.attempts,
            usage=usage,
            metadata=json.loads(row.metadata) if row.metadata else {},
            source=source,
            row=position,
        )


def typed_output(text: str, model: type[BaseModel] | None) -> Any:
    """A structured reply as the model's instance, else as parsed JSON."""
    if model is not None:
        try:
            return validate_output(model, text)
        except OutputValidationError:
            pass  # validated when collected; a changed model falls back to the raw JSON
    return orjson.loads(text)


def vector_output(text: str) -> list[float]:
    """An embedding reply (a JSON array of numbers) as a list of floats."""
    vector: list[float] = orjson.loads(text)
    if all(type(x) is float for x in vector):
        return vector
    return [float(x) for x in vector]  # an integral value the provider wrote as 0 or 1
