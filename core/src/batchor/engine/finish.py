"""Finishing the stragglers (`FinishSync`): the last few items of a run, held up in batches
the provider is slow to finish, sent through its ordinary synchronous API instead.

Everything is decided from the store and the clock, so any worker (a fresh process, or
several at once) does the same, and each provider call happens once in the normal case:

- **When.** A reconcile step finds the run's items still ``submitted`` in live batches; when
  there are between 1 and ``when_remaining_at_most`` of them, nothing is waiting to be
  packed or sent, and the whole source is in, it records since when (``runs.finish_since``,
  a compare-and-set: every worker sees the first time). Once that has held for ``after``
  the run enters finish mode (``runs.finish_mode = 'sync'``, exactly one worker moves it).
- **Stopping the batches.** In finish mode nothing more is packed. Every live batch is
  stopped with reason ``finish_sync`` (`StateStore.claim_stop`: exactly one worker wins and
  cancels it at the provider; a failed cancel is sent again by the poll, as for a
  deadline). When it ends, its answered lines are applied as usual and its unanswered
  items go back to ``pending`` without an attempt charged. A stopped batch the provider has
  not ended within ``cancel_grace`` has its unanswered items taken out of it
  (`StateStore.take_over_stopped`) to be sent synchronously anyway; a line it answers later
  for one of them is a *duplicate answer*: billed in the batch's usage, not applied, counted
  on the batch.
- **Sending.** One worker at a time sends the pending items (a claim with a lease on the
  run's row, renewed as it goes; taken over once it lapses or its holder's process is
  gone, when the items the holder left in flight go back to ``pending``). Each item is
  claimed (``submitted`` in no batch) before its request is sent, at most
  ``max_concurrency`` in flight; the request is the very line the batch would have carried.
  The answer is written as the output line a batch would hold and judged by the codec and
  collection's own rules (`batchor.engine.collect.reply_judge`): a completed reply completes
  the item, a retryable failure (or no answer at all) charges an attempt and sends it
  again, up to ``max_attempts``; every answer is applied only while its item is still in
  flight synchronously, so an item is answered exactly once. The transport retries 429s as
  the provider says to wait, and the sender holds off new requests for as long as the
  provider's rate-limit headers say nothing is left (`SyncResult.wait`). One step sends
  for at most half a lease, then the next step goes on.
- **Cost.** Synchronous requests bill the provider's standard price, which is
  `SYNC_PRICE_FACTOR` times the Batch API price the price table holds (each provider's
  batch prices are half its standard ones). With ``FinishSync.max_cost_usd``, before each request
  the synchronous cost so far (with the projected cost of the requests in flight) plus the
  request's projected cost (its estimated input tokens and its expected output tokens, as
  the spending cap projects them, at the standard price) must fit under it; once one does
  not, synchronous sending ends for good (``finish_mode = 'capped'``) and the items left go
  out in a normal batch.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from typing import BinaryIO

from batchor.engine.budget import expected_output_tokens
from batchor.engine.claims import lease_seconds, owner, owner_gone
from batchor.engine.collect import reply_judge
from batchor.engine.context import RunContext, log
from batchor.engine.deadline import deadline_passed
from batchor.errors import ConfigurationError, ProviderError, TransientProviderError
from batchor.jobs import FinishSync
from batchor.providers.base import BatchTransport, SyncResult, sends_sync
from batchor.results import Usage
from batchor.states import BatchStatus, ItemStatus
from batchor.stores.base import FINISH_MODE_CAPPED as CAPPED
from batchor.stores.base import FINISH_MODE_SYNC as SYNC
from batchor.stores.base import FINISH_SYNC, BatchRecord, ItemOutcome, PendingItem

SYNC_PRICE_FACTOR = 2.0
"""The standard (synchronous) price as a multiple of the Batch API price the price table
holds: OpenAI, Anthropic and Google each bill their batch APIs at half the standard price."""
_NO_ANSWER = "server_error"  # the failure class of a request that got no answer at all
_UNSENT = (BatchStatus.FORMING, BatchStatus.PREPARED, BatchStatus.UPLOADED)
_SENT = (BatchStatus.SUBMITTED, BatchStatus.ENDED)


def check_sync_transport(
    finish_sync: FinishSync | None, provider: str, transport: BatchTransport
) -> None:
    """Refuse `BatchJob.finish_sync` for a provider whose transport cannot send requests
    synchronously (before anything is created).

    Raises:
        ConfigurationError: names the setting and the provider.
    """
    if finish_sync is not None and not sends_sync(transport):
        raise ConfigurationError(
            f"BatchJob.finish_sync is set but provider {provider} cannot send requests "
            "synchronously (only OpenAI, Azure OpenAI, Anthropic and Gemini can): leave "
            "finish_sync out"
        )


def finish_stragglers(ctx: RunContext) -> bool:
    """The finish step of a running run: enter finish mode when due, then stop the live
    batches and send the pending items synchronously. Returns whether the run is in finish
    mode after it (then nothing is packed)."""
    fs = ctx.settings.finish_sync
    run = ctx.run
    if fs is None or run.finish_mode == CAPPED:
        return False
    if run.finish_mode is None:
        if not _due(ctx, time.time()):
            return False
        if ctx.store.enter_finish(run.pk):
            log.info("run %s: finishing its last items synchronously", run.run_id)
        _reload(ctx)
        if ctx.run.finish_mode != SYNC:
            return False
    _stop_live(ctx)
    if not deadline_passed(ctx.run):
        send_pending(ctx)
        _reload(ctx)
    return ctx.run.finish_mode == SYNC


def _reload(ctx: RunContext) -> None:
    record = ctx.store.get_run(ctx.run.run_id)
    if record is not None:
        ctx.run = record


def _due(ctx: RunContext, now: float) -> bool:
    """Whether the run has had few enough items left in live batches for long enough
    (recording since when, or that it no longer has)."""
    fs, run = ctx.settings.finish_sync, ctx.run
    assert fs is not None
    if _maybe_due(ctx, fs.when_remaining_at_most):
        counts = ctx.store.item_counts(run.pk)
        live = counts[ItemStatus.SUBMITTED]
        waiting = counts[ItemStatus.PENDING] + counts[ItemStatus.QUEUED]
    else:
        live = waiting = 0
    if run.ingest_complete and 1 <= live <= fs.when_remaining_at_most and not waiting:
        since = run.finish_since
        if since is None:
            since = ctx.store.mark_stragglers(run.pk, now)
        return since is not None and now - since >= fs.after.total_seconds()
    if run.finish_since is not None:
        ctx.store.mark_stragglers(run.pk, None)
    return False


def _maybe_due(ctx: RunContext, at_most: int) -> bool:
    """Whether finishing may be due, from the run's row and batches (counting its items scans
    them all): not while the source is read, a batch is unsent, no batch is at the provider,
    or batches it still runs hold more than ``at_most`` items (all in flight until then)."""
    if not ctx.run.ingest_complete:
        return False
    live = 0
    for batch in ctx.store.batches(ctx.run.pk, [*_UNSENT, *_SENT]):
        if batch.status in _UNSENT:
            return False
        live += 1
        if batch.status is BatchStatus.SUBMITTED:
            at_most -= batch.request_count
    return live > 0 and at_most >= 0


def _stop_live(ctx: RunContext) -> None:
    """Stop every live batch (the winner of each stop cancels it at the provider), and
    take the unanswered items out of a stopped one the provider has not ended within the
    grace."""
    fs = ctx.settings.finish_sync
    assert fs is not None
    grace = fs.cancel_grace.total_seconds()
    now = time.time()
    for batch in ctx.store.batches(ctx.run.pk, [BatchStatus.SUBMITTED]):
        if batch.stop_reason is None:
            if ctx.store.claim_stop(batch.pk, FINISH_SYNC, now):
                log.info("batch %s: stopping it (%s)", batch.batch_key, FINISH_SYNC)
                _cancel(ctx, batch)
        elif (
            batch.stop_reason == FINISH_SYNC
            and batch.stop_requested_at is not None
            and now - batch.stop_requested_at >= grace
        ):
            moved = ctx.store.take_over_stopped(ctx.run.pk, batch.pk)
            if moved:
                log.info(
                    "batch %s: not ended %.0f s after its cancel; its %d unanswered items "
                    "are sent synchronously",
                    batch.batch_key,
                    grace,
                    moved,
                )


def _cancel(ctx: RunContext, batch: BatchRecord) -> None:
    """Cancel a stopped batch at the provider and record the status it answers (a failed
    cancel is sent again by the poll once the stop's lease has passed)."""
    assert batch.provider_batch_id is not None
    try:
        remote = ctx.transport.cancel_batch(batch.provider_batch_id)
    except ProviderError as exc:  # transient: sent again later; else it ended meanwhile
        log.warning("batch %s: cancel failed: %s", batch.batch_key, exc)
        return
    ctx.store.record_provider_status(batch.pk, remote.status)


def reclaim_abandoned(ctx: RunContext) -> None:
    """Past the run's deadline nothing is sent synchronously: hand the items a sender that
    died left in flight back to ``pending`` (where the deadline ends them), once its claim
    has lapsed."""
    run, me = ctx.run, owner()
    if run.finish_mode != SYNC or run.sync_owner is None:
        return
    holder = run.sync_owner
    steal = holder if holder != me and owner_gone(holder) else None
    if ctx.store.claim_sync(run.pk, me, lease_seconds(), steal_from=steal):
        ctx.store.end_sync(run.pk, me)


def send_pending(ctx: RunContext) -> None:
    """Send the run's pending items synchronously, if this worker gets the claim to."""
    run, me = ctx.run, owner()
    holder = run.sync_owner
    steal = holder if holder is not None and holder != me and owner_gone(holder) else None
    lease = lease_seconds()
    if not ctx.store.claim_sync(run.pk, me, lease, steal_from=steal):
        return
    capped = False
    try:
        capped = _Sender(ctx, me, lease).run()
    finally:
        ctx.store.end_sync(run.pk, me, capped=capped)
    if capped:
        log.warning(
            "run %s: the synchronous spending cap is reached; the items left go in a batch",
            run.run_id,
        )


class _Sender:
    """One pass of synchronous sending, for at most half a lease."""

    def __init__(self, ctx: RunContext, me: str, lease: float) -> None:
        fs = ctx.settings.finish_sync
        assert fs is not None
        self.ctx, self.fs, self.me, self.lease = ctx, fs, me, lease
        price = None if ctx.prices is None else ctx.prices.price(ctx.settings.price_model)
        self.price = price
        self.output_tokens = 0 if fs.max_cost_usd is None else expected_output_tokens(ctx)
        run = ctx.run
        self.spent = self._cost(run.sync_input_tokens, run.sync_output_tokens) or 0.0
        self.reserved = 0.0
        self.hold_until = 0.0
        self.judge = reply_judge(ctx)
        self.taken: set[int] = set()  # items claimed in this pass and not settled yet

    def _cost(self, input_tokens: int, output_tokens: int) -> float | None:
        """What synchronous requests billing these tokens cost (standard price)."""
        if self.price is None:
            return None
        return SYNC_PRICE_FACTOR * self.price.cost(Usage(input_tokens, output_tokens))

    def run(self) -> bool:
        """Send until no item is pending, the pass's time is up, the claim is lost or the
        cap is reached; returns whether the cap was reached. Should anything fail here, the
        items in flight go back to ``pending`` (their answers are no longer awaited)."""
        try:
            return self._send({})
        except BaseException:
            if self.taken:
                self.ctx.store.release_sync_items(self.ctx.run.pk, self.taken)
            raise

    def _send(self, inflight: dict[Future[SyncResult], tuple[int, float]]) -> bool:
        ctx, run = self.ctx, self.ctx.run
        ends = time.monotonic() + max(self.lease / 2, 1.0)
        stop = capped = False
        with (
            _Lines(ctx) as lines,
            ThreadPoolExecutor(self.fs.max_concurrency, thread_name_prefix="batchor-sync") as pool,
        ):
            while True:
                free = self.fs.max_concurrency - len(inflight)
                if not stop and free and time.monotonic() >= self.hold_until:
                    if time.monotonic() >= ends or deadline_passed(run):
                        stop = True
                    elif not ctx.store.claim_sync(run.pk, self.me, self.lease):
                        log.warning("run %s: lost the synchronous sending claim", run.run_id)
                        stop = True
                    else:
                        items = ctx.store.claim_sync_items(run.pk, free)
                        self.taken.update(i.seq for i in items)
                        if not items:
                            stop = True
                        for n, item in enumerate(items):
                            projected = self._projected(item)
                            if projected is None:
                                unsent = [i.seq for i in items[n:]]
                                ctx.store.release_sync_items(run.pk, unsent)
                                self.taken.difference_update(unsent)
                                stop = capped = True
                                break
                            future = pool.submit(ctx.transport.send_sync, lines.read(item))
                            inflight[future] = (item.seq, projected)
                            self.reserved += projected
                if not inflight:
                    if stop:
                        return capped
                    time.sleep(max(self.hold_until - time.monotonic(), 0.0))
                    continue
                pause = self.hold_until - time.monotonic()
                timeout = pause if (not stop and free and pause > 0) else None
                done, _ = wait(list(inflight), timeout=timeout, return_when=FIRST_COMPLETED)
                if done and not self._apply(inflight, done):
                    stop = True

    def _projected(self, item: PendingItem) -> float | None:
        """The request's projected cost (0 without a cap), or ``None`` when it does not fit
        under the synchronous cap (or cannot be priced)."""
        cap = self.fs.max_cost_usd
        if cap is None:
            return 0.0
        projected = self._cost(item.est_tokens or 0, self.output_tokens)
        if projected is None or self.spent + self.reserved + projected > cap:
            return None
        return projected

    def _apply(
        self, inflight: dict[Future[SyncResult], tuple[int, float]], done: set[Future[SyncResult]]
    ) -> bool:
        """Apply the answers of finished requests; False when one says to stop sending (the
        key was refused: the item goes back to ``pending``)."""
        ctx = self.ctx
        outcomes: list[ItemOutcome] = []
        billed = [0, 0]
        unsent: list[int] = []
        go_on = True
        for future in done:
            seq, projected = inflight.pop(future)
            self.reserved -= projected
            try:
                result = future.result()
            except TransientProviderError as exc:
                outcomes.append(_no_answer(seq, str(exc)))
                continue
            except ProviderError as exc:
                log.error("run %s: synchronous request refused: %s", ctx.run.run_id, exc)
                unsent.append(seq)
                go_on = False
                continue
            self.hold_until = max(self.hold_until, time.monotonic() + result.wait)
            decoded = ctx.codec.decode(result.line)
            if decoded is None or decoded[1] is None or decoded[0] != seq:
                outcomes.append(_no_answer(seq, "the synchronous answer is not a result"))
                continue
            outcome = self.judge(seq, decoded[1])
            billed[0] += outcome.input_tokens or 0
            billed[1] += outcome.output_tokens or 0
            outcomes.append(outcome)
        if unsent:
            ctx.store.release_sync_items(ctx.run.pk, unsent)
            self.taken.difference_update(unsent)
        if outcomes:
            ctx.store.apply_sync(
                ctx.run.pk, outcomes, (billed[0], billed[1]), ctx.settings.max_attempts
            )
            self.taken.difference_update(o.seq for o in outcomes)
            self.spent += self._cost(billed[0], billed[1]) or 0.0
        return go_on


def _no_answer(seq: int, message: str) -> ItemOutcome:
    """A request that got no answer: an attempt charged, tried again."""
    return ItemOutcome(seq, "retry", error_class=_NO_ANSWER, message=message[:2000], retryable=True)


class _Lines:
    """Reads items' request lines from their ingestion slices, one open reader per slice."""

    def __init__(self, ctx: RunContext) -> None:
        self._ctx = ctx
        self._stack = ExitStack()
        self._open: dict[int, BinaryIO] = {}

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def read(self, item: PendingItem) -> bytes:
        """The item's whole request line, as the codec framed it at ingestion."""
        fh = self._open.get(item.req_slice)
        if fh is None:
            fh = self._stack.enter_context(_reader(self._ctx, item.req_slice))
            self._open[item.req_slice] = fh
        fh.seek(item.req_offset)
        line = fh.read(item.req_length)
        if len(line) != item.req_length:
            raise ValueError(
                f"request slice {item.req_slice} of run {self._ctx.run.run_id!r} is shorter "
                "than its items say: the artifact store lost or truncated it"
            )
        return line


@contextmanager
def _reader(ctx: RunContext, number: int) -> Iterator[BinaryIO]:
    with ctx.artifacts.open_read(ctx.slice_key(number)) as fh:
        yield fh
