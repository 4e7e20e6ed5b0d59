"""Ingest: source -> items, in durable slices (request bodies to an artifact, then the items
and the source checkpoint in one store transaction)."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from batchor.engine.claims import owner
from batchor.engine.context import RunContext, log
from batchor.engine.plan import PackPlan, drop_plan
from batchor.engine.slices import Slice, SliceRecorder
from batchor.errors import ConfigurationError, DuplicateItemError, SourceError
from batchor.items import BatchItem, PromptParts
from batchor.providers.base import RequestCodec
from batchor.stores.base import NewItem, SourcePart

SLICE_SIZE = 5_000
PROMPT_FINGERPRINT_ITEMS = 8

BuildPrompt = Callable[[BatchItem], PromptParts]


def render_request(item: BatchItem, build_prompt: BuildPrompt, codec: RequestCodec) -> bytes:
    """The request body for one item."""
    return encoded_body(item, prompt_parts(item, build_prompt), codec)


def encoded_body(item: BatchItem, parts: PromptParts, codec: RequestCodec) -> bytes:
    """``codec.encode_body(parts)``; a prompt that cannot be sent (text with a lone
    surrogate, a part the endpoint does not take) is reported with the item.

    Raises:
        SourceError: the prompt or system text cannot be encoded as UTF-8 JSON.
        ConfigurationError: the endpoint does not take such a prompt.
    """
    try:
        return codec.encode_body(parts)
    except ConfigurationError as exc:
        raise ConfigurationError(f"item {item.item_id!r}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise SourceError(f"the prompt of item {item.item_id!r} cannot be sent: {exc}") from None


def check_item_id(item_id: str) -> None:
    """Refuse an id that cannot be stored as UTF-8 text (one with a lone surrogate).

    Raises:
        SourceError: names the id.
    """
    try:
        item_id.encode()
    except UnicodeEncodeError:
        raise SourceError(
            f"item_id {item_id!r} is not valid Unicode text (it holds a lone surrogate)"
        ) from None


def prompt_parts(item: BatchItem, build_prompt: BuildPrompt) -> PromptParts:
    """``build_prompt(item)``, checked; a failure is reported with the item."""
    try:
        parts = build_prompt(item)
    except Exception as exc:
        raise ConfigurationError(
            f"build_prompt failed for item {item.item_id!r}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(parts, PromptParts):
        raise ConfigurationError(
            f"build_prompt must return PromptParts, got {type(parts).__name__} "
            f"for item {item.item_id!r}"
        )
    return parts


def prompt_fingerprint(
    items: Iterable[BatchItem], build_prompt: BuildPrompt, codec: RequestCodec
) -> str:
    """Hash of the request bodies of the first few items: tells two prompts apart."""
    digest = hashlib.sha256()
    for index, item in enumerate(items):
        if index == PROMPT_FINGERPRINT_ITEMS:
            break
        check_item_id(item.item_id)
        digest.update(item.item_id.encode())
        digest.update(render_request(item, build_prompt, codec))
    return digest.hexdigest()


def ingest(
    ctx: RunContext,
    items: Iterator[tuple[BatchItem, str | None]],
    build_prompt: BuildPrompt,
    *,
    slice_size: int | None = None,
    on_progress: Callable[[int], None] | None = None,
    part_of: Callable[[str], str] | None = None,
) -> int:
    """Accept every remaining item of ``items`` (item, checkpoint after it) into the run.

    ``part_of`` names the source part an item's checkpoint belongs to; where each part starts
    is saved with the slices, so results can say which input and row an item came from.
    Each slice artifact holds the items' complete batch input lines (framed by the codec
    with the item's seq as its id), so packing a batch copies byte ranges. A run ingested
    whole here has its batches cut on the way, its items born in them (see `engine.plan`).
    Returns the number of items accepted by this call. The run is marked ingest-complete in the
    transaction of the last slice.
    After a crash, a slice whose items were not committed is read again (its request artifact
    is rewritten, atomically, with the same bytes).
    """
    slice_size = slice_size or SLICE_SIZE
    run = ctx.run
    seq = run.ingested_count
    next_slice = run.next_slice
    exhausted = False
    checkpoint: str | None = run.source_checkpoint
    codec = ctx.codec
    frame, estimate = codec.frame, codec.estimate_tokens
    new_item, crc32 = tuple.__new__, zlib.crc32
    parts = list(run.source_parts)
    current = parts[-1].name if parts else None
    if seq == 0:  # ingested whole here: cut the batches on the way (see engine.plan)
        drop_plan(ctx)
        ctx.plan = PackPlan(ctx.settings, owner())
    elif ctx.plan is not None and ctx.plan.next_seq != seq + 1:
        drop_plan(ctx)
    recorder = SliceRecorder(ctx, on_progress)
    stopped = False  # another worker recorded a slice first
    try:
        while not exhausted:
            parts_changed = False
            batch: list[NewItem] = []
            seen: dict[str, int] = {}
            buffer = bytearray()
            for item, position in items:
                seq += 1
                if item.item_id in seen:
                    raise DuplicateItemError(
                        f"duplicate item_id {item.item_id!r}: items {seen[item.item_id]} and "
                        f"{seq} of the source",
                        item_id=item.item_id,
                    )
                seen[item.item_id] = seq
                check_item_id(item.item_id)
                if part_of and position is not None and (part := part_of(position)) != current:
                    parts.append(SourcePart(part, seq))
                    current, parts_changed = part, True
                prompt = prompt_parts(item, build_prompt)
                body = encoded_body(item, prompt, codec)
                # The whole batch input line, so packing copies byte ranges as they are.
                line = frame(seq, body)
                batch.append(
                    new_item(  # a NewItem, every field, without its __new__ wrapper's call
                        NewItem,
                        (
                            seq,
                            item.item_id,
                            next_slice,  # req_slice
                            len(buffer),  # req_offset
                            len(line),  # req_length
                            f"{crc32(body):08x}",  # req_hash
                            estimate(prompt),
                            _metadata_json(item) if item.metadata else None,
                        ),
                    )
                )
                buffer += line
                checkpoint = position
                if len(batch) >= slice_size:
                    break
            else:
                exhausted = True
            recording = Slice(
                batch,
                buffer,
                number=next_slice,
                ingested_count=seq,
                checkpoint=checkpoint,
                complete=exhausted,
                source_parts=list(parts) if parts_changed else None,
            )
            if batch:
                next_slice += 1
            if not recorder.record(recording):
                stopped = True
                break
        stopped = stopped or not recorder.finish()
    finally:
        recorder.close()
    if stopped:
        log.info("run %s: another worker is ingesting; leaving it to them", run.run_id)
        drop_plan(ctx)
    elif ctx.plan is not None and exhausted:
        ctx.plan.finish()
    return recorder.accepted


def _metadata_json(item: BatchItem) -> str:
    """The item's (non-empty) metadata as compact JSON text."""
    try:
        text = json.dumps(dict(item.metadata), ensure_ascii=False, separators=(",", ":"))
        text.encode()  # a lone surrogate would fail in the store, naming nothing
        return text
    except (TypeError, ValueError) as exc:
        raise SourceError(
            f"metadata of item {item.item_id!r} is not JSON-serialisable: {exc}"
        ) from None


def positions(items: Iterable[BatchItem]) -> Iterator[tuple[BatchItem, Any]]:
    """Pair a plain iterable's items with no checkpoint (it cannot resume mid-ingest)."""
    for item in items:
        if not isinstance(item, BatchItem):
            raise SourceError(
                f"BatchJob.items must yield BatchItem objects, got {type(item).__name__}"
            )
        yield item, None
