"""The control-plane tables (SQLAlchemy Core). Changes go through an Alembic migration."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.sql.expression import false as sa_false

metadata = MetaData()

runs = Table(
    "batchor_runs",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(200), nullable=False, unique=True),
    Column("status", String(32), nullable=False),
    # The job definition without secrets (JSON): model, endpoint, params, schema, limits.
    Column("config", Text, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    # Hash of the first request bodies, to refuse a different prompt under the same run id.
    Column("prompt_fingerprint", String(64), nullable=True),
    Column("ingest_complete", Boolean, nullable=False, default=False),
    Column("ingested_count", Integer, nullable=False, default=0),
    Column("source_checkpoint", Text, nullable=True),
    Column("next_slice", Integer, nullable=False, default=0),
    Column("next_batch", Integer, nullable=False, default=0),
    Column("pause_reason", Text, nullable=True),
    # Backoff after the provider refused work for lack of capacity (token limit): no new
    # batch is packed before backoff_until; backoff_count grows until a batch completes.
    Column("backoff_until", Float, nullable=True),
    Column("backoff_count", Integer, nullable=False, server_default="0"),
    # cancel(remote=True): live provider batches are cancelled too.
    Column("cancel_remote", Boolean, nullable=False, server_default=sa_false()),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    # Bumped by every transaction that ends items, which stamp it on them: results page by
    # (done_tick, seq), an order in which a page never gains an earlier row once read.
    Column("done_tick", Integer, nullable=False, server_default="0"),
    # Where each part of the source starts (JSON [[identity, first seq], ...]): lineage.
    Column("source_parts", Text, nullable=True),
    # Retention: when the run's artifacts were last exported, and when they were pruned.
    Column("exported_at", Float, nullable=True),
    Column("pruned_at", Float, nullable=True),
    # The result of steps.collect (JSON), so calling it again writes nothing.
    Column("collected", Text, nullable=True),
    # Time and money controls: when the run must end (epoch seconds), the most it may cost
    # (USD), a machine-readable pause reason ("budget", "deadline", "quota"...), and when a
    # provider webhook last drove the run (polling backs off while they flow).
    Column("deadline_at", Float, nullable=True),
    Column("max_cost_usd", Float, nullable=True),
    Column("pause_code", String(32), nullable=True),
    Column("webhook_at", Float, nullable=True),
    # Finishing the stragglers (FinishSync): since when few enough items were left in live
    # batches, the finish mode ("sync": stragglers sent synchronously; "capped": its cap was
    # reached, back to batches), the one worker sending synchronously and until when its
    # claim holds, and what the synchronous answers applied and billed.
    Column("finish_since", Float, nullable=True),
    Column("finish_mode", String(16), nullable=True),
    Column("sync_owner", String(200), nullable=True),
    Column("sync_lease_until", Float, nullable=True),
    Column("sync_answered", Integer, nullable=False, server_default="0"),
    Column("sync_input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("sync_output_tokens", BigInteger, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

batches = Table(
    "batchor_batches",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("run_pk", Integer, ForeignKey("batchor_runs.pk", ondelete="CASCADE"), nullable=False),
    # Deterministic: "<run_id>/<n>"; the upload filename and the provider metadata carry it.
    Column("batch_key", String(250), nullable=False, unique=True),
    Column("status", String(32), nullable=False),
    Column("input_artifact", Text, nullable=False),
    Column("request_count", Integer, nullable=False),
    Column("input_bytes", BigInteger, nullable=False),
    Column("file_id", String(200), nullable=True),
    # Set just before the create call, so recovery knows a batch may exist remotely.
    Column("create_started_at", Float, nullable=True),
    # Backoff after failed submission or download attempts: nothing is tried before
    # not_before; failures counts the consecutive failed attempts.
    Column("not_before", Float, nullable=True),
    Column("failures", Integer, nullable=False, server_default="0"),
    # Estimated input tokens of the batch, and whether they are reserved in the budget of
    # quota_scope (reserved before create, released when collected).
    Column("est_tokens", BigInteger, nullable=True),
    Column("quota_scope", String(300), nullable=True),
    Column("reserved", Boolean, nullable=False, server_default=sa_false()),
    # Which worker is creating or collecting the batch (host:pid), and until when a
    # collect claim holds unless renewed.
    Column("claimed_by", String(200), nullable=True),
    Column("lease_until", Float, nullable=True),
    Column("provider_batch_id", String(200), nullable=True),
    Column("provider_status", String(32), nullable=True),
    Column("output_file_id", String(200), nullable=True),
    Column("error_file_id", String(200), nullable=True),
    Column("errors", Text, nullable=True),
    # Tokens the batch billed, summed over its output and error files when collected.
    Column("input_tokens", BigInteger, nullable=True),
    Column("output_tokens", BigInteger, nullable=True),
    # When the provider batch was created (its timeout counts from here); the projected cost
    # reserved under the run's spending cap before it was created, and the cost it billed
    # once collected.
    Column("submitted_at", Float, nullable=True),
    Column("est_cost_usd", Float, nullable=True),
    Column("cost_usd", Float, nullable=True),
    # Why batchor stopped the provider batch ("batch_timeout", "deadline") and when the
    # cancel was claimed (exactly one worker sends it); how many unanswered items its
    # collection returned to pending.
    Column("stop_reason", String(32), nullable=True),
    Column("stop_requested_at", Float, nullable=True),
    Column("requeued", Integer, nullable=True),
    # Lines of a batch stopped to finish synchronously for items answered synchronously
    # meanwhile: billed, not applied.
    Column("duplicates", Integer, nullable=True),
    # How many of its items have a row in batchor_completions (counted as they are added).
    Column("completed", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_batchor_batches_run_status", "run_pk", "status"),
    # Webhooks name the provider batch: find its run with one probe.
    Index("ix_batchor_batches_provider_batch", "provider_batch_id"),
)

items = Table(
    "batchor_items",
    metadata,
    # No foreign key to the run: checking it took about half of each insert on Postgres (a
    # row lock on the run per item). Deleting a run locks its row first (a slice being
    # ingested holds it until its items commit), then deletes its items itself.
    Column("run_pk", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("item_id", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("batch_pk", Integer, nullable=True),
    # Pointer to the replayable request line: slice artifact number, byte offset, length,
    # and the CRC-32 of the request body (hex).
    Column("req_slice", Integer, nullable=False),
    Column("req_offset", BigInteger, nullable=False),
    Column("req_length", Integer, nullable=False),
    Column("req_hash", String(16), nullable=False),
    Column("est_tokens", Integer, nullable=True),
    Column("metadata", Text, nullable=True),
    Column("output_text", Text, nullable=True),
    Column("error_class", String(32), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("error_retryable", Boolean, nullable=True),
    Column("error_attempt", Integer, nullable=True),
    Column("input_tokens", Integer, nullable=True),
    Column("output_tokens", Integer, nullable=True),
    # The run's done_tick when the item ended (NULL while it is open).
    Column("done_tick", Integer, nullable=True),
    Index("ux_batchor_items_item_id", "run_pk", "item_id", unique=True),
    # Partial indexes keep status changes cheap: only pending items are in the first (the
    # packer's queue), only packed items in the second, and neither holds the status of the
    # items it lists, so collecting an item rewrites the row and no index entry.
    Index(
        "ix_batchor_items_pending",
        "run_pk",
        "seq",
        sqlite_where=text("status = 'pending'"),
        postgresql_where=text("status = 'pending'"),
    ),
    Index(
        "ix_batchor_items_batch",
        "batch_pk",
        sqlite_where=text("batch_pk IS NOT NULL"),
        postgresql_where=text("batch_pk IS NOT NULL"),
    ),
    # Terminal items in result-page order.
    Index(
        "ix_batchor_items_done",
        "run_pk",
        "done_tick",
        "seq",
        sqlite_where=text("done_tick IS NOT NULL"),
        postgresql_where=text("done_tick IS NOT NULL"),
    ),
    # Clustered on (run_pk, seq): one b-tree fewer to maintain on every insert and update.
    sqlite_with_rowid=False,
)

# Items completed by a batch's answer: appended here, the item's row left as it was (queued
# in the batch), so collecting writes one new row per item instead of a new version of the
# item's row in every index (on Postgres an update costs about three inserts). An item is
# completed if it has a row here, else its row's status holds; a row here is written at most
# once per item (the key), only while the item still waits in the batch the line came from.
# No foreign key to the run: checking it costs about a third of each insert on Postgres, and
# deleting a run deletes its completions.
completions = Table(
    "batchor_completions",
    metadata,
    Column("run_pk", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("batch_pk", Integer, nullable=False),
    # The item's attempts counting this one, its reply and usage, and the run's done tick.
    Column("attempts", Integer, nullable=False),
    Column("output_text", Text, nullable=True),
    Column("input_tokens", Integer, nullable=True),
    Column("output_tokens", Integer, nullable=True),
    Column("done_tick", Integer, nullable=False),
    # Result pages read completions in the order they ended, as they read ended items.
    Index("ix_batchor_completions_done", "run_pk", "done_tick", "seq"),
    sqlite_with_rowid=False,
)

# Every failed attempt, kept for audit (the item row holds only the last one).
item_failures = Table(
    "batchor_item_failures",
    metadata,
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("run_pk", Integer, ForeignKey("batchor_runs.pk", ondelete="CASCADE"), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("batch_pk", Integer, nullable=True),
    Column("error_class", String(32), nullable=False),
    Column("message", Text, nullable=False),
    Column("retryable", Boolean, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_batchor_item_failures_item", "run_pk", "seq"),
)

# Enqueued tokens in flight per quota scope (model + optional quota_scope), shared by every
# run in the store: a batch is created only if its estimate fits under the limit.
token_budget = Table(
    "batchor_token_budget",
    metadata,
    Column("scope", String(300), primary_key=True),
    Column("in_flight", BigInteger, nullable=False),
)
