"""Collect: an ended batch's output and error files, streamed from the provider (and kept
as artifacts unless the job says not to), parsed line by line as they arrive into item
outcomes (completed, retried or failed), applied in set-based chunks."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import BinaryIO, cast

import orjson

from batchor.engine.backoff import backoff_delay
from batchor.engine.budget import billed_cost
from batchor.engine.claims import lease_seconds, owner, owner_gone
from batchor.engine.context import RunContext, log
from batchor.engine.deadline import settle_unanswered
from batchor.engine.feed import BackgroundCopy, ResultFeed, Tally
from batchor.engine.heap import old_objects_frozen
from batchor.errors import TransientProviderError
from batchor.providers.base import BatchVerdict, Reply
from batchor.states import BatchStatus, PauseCode, RunStatus
from batchor.stores.base import FINISH_SYNC, BatchRecord, ItemOutcome
from batchor.structured import OutputValidationError, validate_output

_READ = 1 << 20  # bytes read at a time from a kept raw file
# A batch's raw output and error files, as downloaded, in its artifact folder.
RAW_OUTPUTS = ("output.jsonl", "errors.jsonl")
# Backoff before packing again after the provider refused a batch for capacity.
_CAPACITY_BACKOFF = {"base": 30.0, "cap": 900.0}


def collect(ctx: RunContext) -> int:
    """Collect every ended batch; returns how many were collected.

    Collection is idempotent: outcomes apply only to items still submitted in the batch, so
    a collection interrupted half-way is simply run again.
    """
    done = 0
    now = time.time()
    for batch in ctx.store.batches(ctx.run.pk, [BatchStatus.ENDED]):
        if batch.not_before is not None and batch.not_before > now:
            continue
        if not _claim(ctx, batch):
            continue  # another worker is collecting it
        try:
            with old_objects_frozen():
                collect_batch(ctx, batch)
        except TransientProviderError as exc:
            failures = batch.failures + 1
            delay = backoff_delay(failures)
            ctx.store.postpone(
                batch.pk, BatchStatus.ENDED, failures=failures, not_before=time.time() + delay
            )
            log.warning("batch %s: download postponed %.0f s: %s", batch.batch_key, delay, exc)
            continue
        done += 1
    return done


def _claim(ctx: RunContext, batch: BatchRecord) -> bool:
    """Claim the batch for collection, taking it over from a claimant whose process is
    gone; False if a live worker holds it."""
    me, lease = owner(), lease_seconds()
    if ctx.store.claim_batch(batch.pk, BatchStatus.ENDED, me, lease):
        return True
    current = ctx.store.get_batch(batch.pk)
    if current is None or not owner_gone(current.claimed_by):
        return False
    return ctx.store.claim_batch(
        batch.pk, BatchStatus.ENDED, me, lease, steal_from=current.claimed_by
    )


def collect_batch(ctx: RunContext, batch: BatchRecord) -> None:
    """Apply one ended batch's results to its items and mark it collected."""
    folder = ctx.batch_dir(batch.batch_key)
    # A batch stopped to finish synchronously may answer items taken out of it meanwhile.
    tally = Tally([] if batch.stop_reason == FINISH_SYNC else None)
    apply = functools.partial(_apply, ctx, batch)
    judge = reply_judge(ctx)

    def feed(key: str, copy: BinaryIO | None = None) -> ResultFeed:
        return ResultFeed(ctx.codec.decode, judge, apply, key, tally, copy)

    for file_id, name in zip((batch.output_file_id, batch.error_file_id), RAW_OUTPUTS, strict=True):
        if file_id is None:
            continue
        key = f"{folder}/{name}"
        if ctx.artifacts.exists(key):  # kept by a collection that stopped half-way
            kept = feed(key)
            with ctx.artifacts.open_read(key) as fh:
                while chunk := fh.read(_READ):
                    kept.write(chunk)
            kept.end()
        elif ctx.settings.keep_raw_outputs:  # kept as downloaded, applied as it arrives
            with ctx.artifacts.open_write(key) as fh, BackgroundCopy(fh, key) as copy:
                _download(ctx, file_id, feed(key, cast(BinaryIO, copy)))
        else:  # applied as it arrives, never written
            _download(ctx, file_id, feed(key))
    tokens_in, tokens_out = tally.tokens_in, tally.tokens_out
    if tally.answered:
        duplicates = ctx.store.record_duplicates(ctx.run.pk, batch.pk, tally.answered)
        if duplicates:
            log.info(
                "batch %s: %d duplicate answers (billed, not applied)", batch.batch_key, duplicates
            )
    verdict = ctx.codec.batch_verdict(batch.provider_status or "", list(batch.errors))
    if tally.changed < batch.request_count:
        # Back to pending (free for a batch batchor stopped), or failed past the deadline.
        settle_unanswered(ctx, batch, verdict.charge)
    if ctx.store.finish_batch(
        ctx.run.pk,
        batch.pk,
        tokens_in,
        tokens_out,
        cost_usd=billed_cost(ctx, tokens_in, tokens_out),
    ):
        log.info("batch %s: collected", batch.batch_key)
        _after_capacity(ctx, batch, verdict)
    if not ctx.settings.keep_raw_outputs:
        for name in RAW_OUTPUTS:
            ctx.artifacts.delete(f"{folder}/{name}")


def _after_capacity(ctx: RunContext, batch: BatchRecord, verdict: BatchVerdict) -> None:
    """Back off packing after a capacity refusal; stop backing off once a batch completes;
    pause the run when the account is out of quota."""
    run = ctx.run
    if verdict.pause_reason is not None:
        ctx.store.set_run_status(
            run.pk,
            RunStatus.PAUSED,
            expected=[RunStatus.RUNNING],
            pause_reason=verdict.pause_reason,
            pause_code=PauseCode.QUOTA,
        )
        log.warning("run %s paused: %s", run.run_id, verdict.pause_reason)
    elif verdict.capacity:
        count = run.backoff_count + 1
        delay = backoff_delay(count, **_CAPACITY_BACKOFF)
        ctx.store.set_backoff(run.pk, time.time() + delay, count)
        log.warning("run %s: token limit reached; packing resumes in %.0f s", run.run_id, delay)
    elif batch.provider_status == "completed" and run.backoff_count:
        ctx.store.set_backoff(run.pk, None, 0)


def _apply(ctx: RunContext, batch: BatchRecord, chunk: list[ItemOutcome]) -> int:
    changed = ctx.store.apply_outcomes(ctx.run.pk, batch.pk, chunk, ctx.settings.max_attempts)
    # Renew the claim; outcomes are guarded, so even a lost claim applies nothing twice.
    ctx.store.claim_batch(batch.pk, BatchStatus.ENDED, owner(), lease_seconds())
    return changed


def _json_object(text: str) -> None:
    """The check of a reply when the model class cannot be imported in this process: the
    provider's strict mode already enforced the schema, so check that it is a JSON object.

    Raises:
        OutputValidationError: the reply is not JSON, or not an object.
    """
    try:
        value = orjson.loads(text)
    except ValueError as exc:
        raise OutputValidationError("invalid_json", f"reply is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise OutputValidationError("schema_validation", "reply is not a JSON object")


def _download(ctx: RunContext, file_id: str, feed: ResultFeed) -> None:
    """Stream the provider's file ``file_id`` through ``feed``; an error the feed raised
    (the store's) surfaces as it was, whatever the provider's SDK made of it."""
    try:
        ctx.transport.download_file(file_id, cast(BinaryIO, feed))
    except Exception:
        if feed.failure is not None:
            raise feed.failure from None
        raise
    feed.end()


def reply_judge(ctx: RunContext) -> Callable[[int, Reply], ItemOutcome]:
    """What an answered line means for its item, as collection judges it (a synchronous
    answer is judged by the same function): an error line fails or retries it; a text
    reply of a structured job is validated first (a reply that fails retries it)."""
    check: Callable[[str], object] | None = None
    if ctx.settings.structured and ctx.codec.output_kind == "text":
        model = ctx.output_model
        check = _json_object if model is None else functools.partial(validate_output, model)
    new = tuple.__new__  # an ItemOutcome without its __new__ wrapper's call (every field)

    def judge(seq: int, reply: Reply) -> ItemOutcome:
        if reply.error_class is not None:
            return _failure(seq, reply)
        text = reply.text
        assert text is not None
        tokens_in, tokens_out = reply.usage or (None, None)
        if check is not None:
            try:
                check(text)
            except OutputValidationError as exc:
                return ItemOutcome(
                    seq,
                    "retry",
                    output_text=text,
                    error_class=exc.error_class,
                    message=str(exc)[:2000],
                    retryable=True,
                    input_tokens=tokens_in,
                    output_tokens=tokens_out,
                )
        return new(ItemOutcome, (seq, "completed", text, None, None, False, tokens_in, tokens_out))

    return judge


def _failure(seq: int, reply: Reply) -> ItemOutcome:
    """The outcome of a line that answered with an error."""
    tokens_in, tokens_out = reply.usage or (None, None)
    return ItemOutcome(
        seq,
        "retry" if reply.retryable else "failed",
        error_class=reply.error_class,
        message=reply.message,
        retryable=reply.retryable,
        input_tokens=tokens_in,
        output_tokens=tokens_out,
    )
