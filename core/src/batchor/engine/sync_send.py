"""Sending a run's pending items synchronously once it is in finish mode (`FinishSync`,
see `batchor.engine.finish` for when and how a run gets there).

**Sending.** One worker at a time sends the pending items: it holds a claim with a lease
on the run's row, renewed every third of a lease while requests are out, however long they
take. The claim is taken over once it lapses or its holder's process is gone, and then the
items the holder left in flight go back to ``pending``. Each item is claimed (``submitted``
in no batch) before its request is sent, at most ``max_concurrency`` in flight; the request
is the very line the batch would have carried. The answer is written as the output line a
batch would hold and judged by the codec and collection's own rules
(`batchor.engine.collect.reply_judge`): a completed reply completes the item, a retryable
failure (or no answer at all) charges an attempt and sends it again, up to
``max_attempts``; every answer is applied only while its item is still in flight
synchronously, so an item is answered exactly once. The transport retries 429s as the
provider says to wait, and the sender holds off new requests for as long as the provider's
rate-limit headers say nothing is left (`SyncResult.wait`). One step starts requests for at
most half a lease, waits for the answers of those still out (a step lasts as long as its
slowest request), then the next step goes on.

**Cost.** Synchronous requests bill the provider's standard price, which is
`SYNC_PRICE_FACTOR` times the Batch API price the price table holds (each provider's batch
prices are half its standard ones). With ``FinishSync.max_cost_usd``, before each request
the synchronous cost so far (with the projected cost of the requests in flight) plus the
request's projected cost (its estimated input tokens and its expected output tokens, as the
spending cap projects them, at the standard price) must fit under it; once one does not,
synchronous sending ends for good (``finish_mode = 'capped'``) and the items left go out in
a normal batch.
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
from batchor.errors import ProviderError, TransientProviderError
from batchor.providers.base import SyncResult
from batchor.results import Usage
from batchor.stores.base import ItemOutcome, PendingItem

SYNC_PRICE_FACTOR = 2.0
"""The standard (synchronous) price as a multiple of the Batch API price the price table
holds: OpenAI, Anthropic and Google each bill their batch APIs at half the standard price."""
_NO_ANSWER = "server_error"  # the failure class of a request that got no answer at all


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
    """One pass of synchronous sending: requests started for at most half a lease, and
    their answers."""

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
        self.renewed = time.monotonic()  # the claim was just taken
        self.lost = False

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
            if self.taken and not self.lost:  # once lost, they are another worker's to send
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
                    if time.monotonic() >= ends or deadline_passed(run) or not self._renew():
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
                # Wake to renew the claim while requests are out, however long they take.
                timeout = None if self.lost else max(self._renewal_due() - time.monotonic(), 0)
                pause = self.hold_until - time.monotonic()
                if not stop and free and pause > 0:
                    timeout = pause if timeout is None else min(timeout, pause)
                done, _ = wait(list(inflight), timeout, FIRST_COMPLETED)
                if done and not self._apply(inflight, done):
                    stop = True
                if time.monotonic() >= self._renewal_due() and not self._renew():
                    stop = True

    def _renewal_due(self) -> float:
        """When the claim is next renewed (monotonic clock): every third of a lease."""
        return self.renewed + self.lease / 3

    def _renew(self) -> bool:
        """Renew the claim; False once it is lost: another worker took it over after it
        lapsed, and the items in flight went back to ``pending`` for it to send. Their
        answers still count in what the run was billed, but are no longer applied."""
        if self.lost:
            return False
        if self.ctx.store.claim_sync(self.ctx.run.pk, self.me, self.lease):
            self.renewed = time.monotonic()
            return True
        self.lost = True
        log.warning("run %s: lost the synchronous sending claim", self.ctx.run.run_id)
        return False

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
        if self.lost:  # another worker sends these items now: only the billing counts
            outcomes, unsent = [], []
            self.taken.clear()
        if unsent:
            ctx.store.release_sync_items(ctx.run.pk, unsent)
            self.taken.difference_update(unsent)
        if outcomes or any(billed):
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
