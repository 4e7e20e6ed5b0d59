"""What every phase of the engine works with: the run, its settings, store, artifacts,
the provider's transport and codec; and where a run's artifacts live."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchor.artifacts.base import ArtifactStore
from batchor.jobs import FinishSync
from batchor.pricing import PriceTable
from batchor.providers.base import BatchTransport, ProviderBatch, ProviderLimits, RequestCodec
from batchor.providers.registry import DEFAULT_PROVIDER
from batchor.stores.base import RunRecord, StateStore

if TYPE_CHECKING:
    from pydantic import BaseModel

    from batchor.engine.plan import PackPlan

log = logging.getLogger("batchor")


@dataclass(frozen=True, slots=True)
class RunSettings:
    """The parts of a run's stored configuration the engine reads."""

    max_attempts: int
    max_requests: int
    max_bytes: int
    structured: bool
    token_limit: int | None = None
    quota_scope: str = ""
    keep_raw_outputs: bool = True
    batch_timeout: float | None = None
    """The longest one provider batch may run, in seconds (``None``: the provider's)."""
    price_model: str = ""
    """The model whose price the run's cost is reckoned at."""
    finish_sync: FinishSync | None = None
    """How the run finishes its stragglers synchronously, if it does."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RunSettings:
        """Read them from a run's stored configuration."""
        return cls(
            max_attempts=int(config["max_attempts"]),
            max_requests=int(config["max_requests"]),
            max_bytes=int(config["max_bytes"]),
            structured=config.get("schema") is not None,
            token_limit=config.get("enqueued_token_limit"),
            quota_scope=_quota_key(config),
            keep_raw_outputs=bool(config.get("keep_raw_outputs", True)),
            batch_timeout=config.get("batch_timeout"),
            price_model=str(config.get("price_model") or config.get("model") or ""),
            finish_sync=None
            if config.get("finish_sync") is None
            else FinishSync.from_record(config["finish_sync"]),
        )


def _quota_key(config: Mapping[str, Any]) -> str:
    """The token budget a run draws on: its model and quota scope, per provider (the default
    provider's key has no prefix, as before there were others)."""
    provider = config.get("provider") or DEFAULT_PROVIDER
    prefix = "" if provider == DEFAULT_PROVIDER else f"{provider}:"
    return f"{prefix}{config.get('model')}|{config.get('quota_scope') or ''}"


@dataclass(slots=True)
class RunContext:
    """A run and the components that drive it."""

    run: RunRecord
    settings: RunSettings
    store: StateStore
    artifacts: ArtifactStore
    transport: BatchTransport
    codec: RequestCodec
    limits: ProviderLimits
    output_model: type[BaseModel] | None
    prices: PriceTable | None = None
    """The runner's price table (what the spending cap reckons with)."""
    remote_batches: dict[str, list[ProviderBatch]] | None = None
    """The provider's batches of this run by batch key, from the one listing this context
    takes before it first creates a batch (``None`` until then); see `engine.submit`."""
    plan: PackPlan | None = None
    """The batches cut while this process ingested the run whole, for its first packing
    (see `engine.plan`)."""

    def slice_key(self, number: int) -> str:
        """The artifact holding request bodies of ingestion slice ``number``."""
        return f"runs/{self.run.run_id}/requests/{number:06d}.jsonl"

    @property
    def run_dir(self) -> str:
        """The artifact folder holding everything of the run."""
        return f"runs/{self.run.run_id}"

    def batch_dir(self, batch_key: str) -> str:
        """The artifact folder of one batch (input, raw output, raw errors)."""
        number = batch_key.rsplit("/", 1)[1]
        return f"runs/{self.run.run_id}/batches/{number}"
