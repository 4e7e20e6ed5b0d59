"""BatchRunner: starts and rehydrates runs, wiring the store, artifacts and provider."""

from __future__ import annotations

import itertools
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from batchor.artifacts.base import ArtifactStore
from batchor.artifacts.open import check_writable, is_process_local, location, open_artifacts
from batchor.engine.context import RunContext, RunSettings, log
from batchor.engine.finish import check_sync_transport
from batchor.engine.ingest import PROMPT_FINGERPRINT_ITEMS, prompt_fingerprint
from batchor.errors import (
    ConfigurationError,
    JobMismatchError,
    RunNotFoundError,
)
from batchor.items import BatchItem
from batchor.jobrecord import fingerprint_of, job_codec, job_config, mismatch_message
from batchor.jobs import BatchJob
from batchor.limits import apply_limits, check_priced
from batchor.pricing import ModelPrice, PriceTable, price_table
from batchor.providers.base import (
    BatchTransport,
    ProviderConfig,
    ProviderCredentials,
    RequestCodec,
)
from batchor.providers.registry import config_from_record, credentials_by_provider, provider_of
from batchor.results import RunSummary
from batchor.run import Run
from batchor.schema_models import output_model
from batchor.sources.base import CheckpointedItemSource
from batchor.states import BatchStatus
from batchor.stores.base import RunRecord, StateStore

if TYPE_CHECKING:
    from pydantic import BaseModel

DEFAULT_HOME = ".batchor"
DEFAULT_STORE = f"sqlite:///{DEFAULT_HOME}/batchor.db"
"""The store a runner opens when it is given none and ``BATCHOR_STORE`` is unset."""
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,199}$")


class BatchRunner:
    """Starts runs and rehydrates them, on one store and one artifact location.

    Args:
        store: A store URL (``sqlite:///path``, ``postgresql+psycopg://...``, ``memory://``)
            or a store object. Default: ``$BATCHOR_STORE``, else ``sqlite:///.batchor/batchor.db``.
        artifacts: A directory, an object-store URL (``s3://bucket/prefix``, ``gs://``,
            ``az://``, ``memory://``) or an artifact-store object. Default:
            ``$BATCHOR_ARTIFACTS``, else ``.batchor/artifacts``.
        api_key: A key for every OpenAI run this runner drives whose job does not set one
            (else ``OPENAI_API_KEY``); the same as ``credentials={"openai": api_key}``.
            Never persisted; never sent to another provider.
        base_url: An API base URL for OpenAI runs whose job does not set one (else the one
            stored with the run, else ``OPENAI_BASE_URL``).
        credentials: Keys and base URLs by provider name (``openai``, ``azure``,
            ``anthropic``, ``gemini``), each a `ProviderCredentials` or a plain key, for the
            runs of that provider whose job sets none, in every process that drives them
            (else the provider's environment variables). A key goes only to its provider;
            a base URL overrides the one stored with a run. Never persisted.
        prices: Batch API prices to add to or override in the default table
            (`PriceTable`), for the costs in summaries.
        provider: A transport to drive every run with instead of the one the job's provider
            config makes (as ``httpx.Client(transport=...)``): the in-process emulator
            (`batchor.testing.InProcessBatchTransport`), or a wrapper that injects faults. The
            wire format still follows each job's provider config.

    Raises:
        ConfigurationError: a URL is invalid, a credential names an unknown provider (or
            OpenAI's are given both ways), or ``memory://`` artifacts are given with a
            store that outlives the process (a later process would find runs whose request
            files are gone).
    """

    def __init__(
        self,
        store: str | StateStore | None = None,
        artifacts: str | os.PathLike[str] | ArtifactStore | None = None,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        credentials: Mapping[str, ProviderCredentials | str] | None = None,
        prices: PriceTable | Mapping[str, ModelPrice | tuple[float, float]] | None = None,
        provider: BatchTransport | None = None,
    ) -> None:
        self._credentials = credentials_by_provider(credentials, api_key=api_key, base_url=base_url)
        if store is None:
            store = os.environ.get("BATCHOR_STORE") or DEFAULT_STORE
        opened = isinstance(store, str)
        if isinstance(store, str):
            # SQLAlchemy loads with the first store opened, not with `import batchor`
            from batchor.stores.open import open_store

            store = open_store(store)
        self.store: StateStore = store
        """The control-plane store."""
        if artifacts is None:
            artifacts = os.environ.get("BATCHOR_ARTIFACTS") or f"{DEFAULT_HOME}/artifacts"
        self.artifacts: ArtifactStore = open_artifacts(artifacts)
        """Where request and output files live."""
        if is_process_local(self.artifacts) and _outlives_process(self.store):
            if opened:
                self.store.close()
            raise ConfigurationError(
                f"artifacts at {location(self.artifacts)} live only in this process, but the "
                "store outlives it: later processes would find runs without their request "
                "files; give a directory or an object-store URL (s3://, gs://, az://) for "
                "the artifacts, or use the memory:// store"
            )
        self._transport = provider
        self.prices: PriceTable = price_table(prices)
        """Prices used for the runs' costs (the defaults plus any passed)."""

    def close(self) -> None:
        """Release the store's connections."""
        self.store.close()

    def __enter__(self) -> BatchRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- runs --------------------------------------------------------------------------
    def start(
        self,
        job: BatchJob,
        run_id: str | None = None,
        *,
        on_ingest: Callable[[int], None] | None = None,
    ) -> Run:
        """Create the run ``run_id`` for ``job``, or attach to it if it exists, then ingest
        what remains of the source and submit what is ready. Idempotent: starting the same
        job under the same id again never submits anything twice.

        Args:
            job: The job.
            run_id: A stable id (letters, digits and ``._:@+=-``); generated when omitted.
            on_ingest: Called with the number of items accepted so far, after each slice.

        Raises:
            JobMismatchError: the run exists with a different job definition.
            SourceError: the source is invalid. Nothing is left behind: the run is created
                only once its first items have been read, and a bad row found later removes
                it again (nothing is ever sent before the whole input has been read), so
                the same call with the input fixed starts cleanly under the same id.
            ProviderAuthError: no API key is set (raised before the run is created).
            ConfigurationError: the job, the run id or the artifact location is unusable
                (raised before the run is created).
        """
        run_id = run_id or new_run_id()
        _check_run_id(run_id)
        check_priced(job, self.prices)
        config = job_config(job)
        fingerprint = fingerprint_of(config)
        codec = job_codec(job)
        transport = self._transport_for(job.provider_config)
        check_sync_transport(job.finish_sync, job.provider_config.provider_name, transport)
        existing = self.store.get_run(run_id)
        if existing is None or not existing.status.is_terminal:
            transport.check_credentials()  # fails at once without an API key
        # The first items are read (and prompted) before the run exists: a bad one leaves
        # nothing behind.
        items, head = _head(job.items)
        prompts = prompt_fingerprint(head, job.build_prompt, codec)
        if existing is None:
            check_writable(self.artifacts, f"runs/{run_id}")
        record, created = self.store.create_run(run_id, config, fingerprint)
        if not created and record.fingerprint != fingerprint:
            raise JobMismatchError(mismatch_message(run_id, record.config, config))
        record = apply_limits(self.store, record, job, created)
        if record.prompt_fingerprint is None:
            self.store.set_prompt_fingerprint(record.pk, prompts)
        elif record.prompt_fingerprint != prompts:
            raise JobMismatchError(
                f"run {run_id!r} exists with different prompts for its first items; "
                "use a new run_id for a different job"
            )
        ctx = self._context(record, job.provider_config, transport, codec, job.structured_output)
        run = Run(self, ctx, job, items)
        try:
            run.ingest_pending(on_ingest)
        except Exception:
            # Whatever failed (a bad row, an unwritable slice, a raw error of a custom
            # source), the run does not outlive it while nothing has been sent: packing
            # waits for the whole input, so this is every run that fails here.
            discard_unsent(self.store, self.artifacts, run_id)
            raise
        run._step()  # refresh's step, without a summary (a count of the run's items)
        return run

    def get_run(self, run_id: str, *, model: type[BaseModel] | None = None) -> Run:
        """Rehydrate a run from the store alone: polling, collecting and reading results
        need neither the job nor the source.

        Args:
            run_id: The run's id.
            model: The Pydantic model for typed outputs; by default the class recorded with
                the run (its ``module:Class`` path) when it imports and still gives the
                recorded schema, else a model rebuilt from that schema (a class defined in a
                DAG file, a notebook or ``__main__`` imports nowhere else).

        Raises:
            RunNotFoundError: no such run.
        """
        record = self.store.get_run(run_id)
        if record is None:
            raise RunNotFoundError(f"no run {run_id!r} in the store")
        cfg = record.config
        provider = config_from_record(cfg, base_url=self._reach(provider_of(cfg)).base_url)
        codec = provider.codec(cfg.get("schema"), cfg.get("schema_name") or "output")
        if model is None:
            model = output_model(cfg)
        transport = self._transport_for(provider)
        return Run(self, self._context(record, provider, transport, codec, model))

    def run_and_wait(
        self,
        job: BatchJob,
        run_id: str | None = None,
        *,
        timeout: float | None = None,
        on_progress: Callable[[RunSummary], None] | None = None,
    ) -> Run:
        """`start` then `Run.wait`; returns the finished run."""
        run = self.start(job, run_id)
        run.wait(timeout, on_progress=on_progress)
        return run

    # ---- wiring --------------------------------------------------------------------------
    def _transport_for(self, config: ProviderConfig) -> BatchTransport:
        """The transport given to this runner, else the one ``config`` makes, with this
        runner's key and base URL for its provider where the config sets none."""
        if self._transport is not None:
            return self._transport
        reach = self._reach(config.provider_name)
        return config.transport(api_key=reach.api_key, base_url=reach.base_url)

    def _reach(self, provider_name: str) -> ProviderCredentials:
        """This runner's credentials for one provider (empty when it was given none)."""
        return self._credentials.get(provider_name) or ProviderCredentials()

    def _context(
        self,
        record: RunRecord,
        provider: ProviderConfig,
        transport: BatchTransport,
        codec: RequestCodec,
        model: type[BaseModel] | None,
    ) -> RunContext:
        return RunContext(
            run=record,
            settings=RunSettings.from_config(record.config),
            store=self.store,
            artifacts=self.artifacts,
            transport=transport,
            codec=codec,
            limits=provider.limits,
            output_model=model,
            prices=self.prices,
        )


def discard_unsent(store: StateStore, artifacts: ArtifactStore, run_id: str) -> None:
    """Remove the run ``run_id``, its items and its artifacts, if nothing of it was ever
    sent to the provider. Best effort: the caller re-raises the error that led here, so a
    failure to clean up is only logged."""
    try:
        record = store.get_run(run_id)
        # Batches still forming hold items but were never sent (nor sealed).
        if record is None or set(store.batch_counts(record.pk)) - {BatchStatus.FORMING.value}:
            return
        store.delete_run(record.pk)
        for key in list(artifacts.keys(f"runs/{run_id}")):
            artifacts.delete(key)
    except Exception as exc:
        log.warning("run %s: could not remove it after its start failed: %s", run_id, exc)


def _outlives_process(store: StateStore) -> bool:
    """Whether the store is durable (anything but an in-memory SQLite database)."""
    engine = getattr(store, "engine", None)
    url = getattr(engine, "url", None)
    if url is None:
        return True  # a store object of the user's own: assume it is durable
    return not (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"))


def _head(
    items: CheckpointedItemSource | Iterable[BatchItem],
) -> tuple[CheckpointedItemSource | Iterator[BatchItem], list[BatchItem]]:
    """The first items (for the prompt fingerprint), and the items to ingest from."""
    if isinstance(items, CheckpointedItemSource):
        head = [
            item for item, _ in itertools.islice(items.iter_from(None), PROMPT_FINGERPRINT_ITEMS)
        ]
        return items, head
    iterator = iter(items)
    head = list(itertools.islice(iterator, PROMPT_FINGERPRINT_ITEMS))
    return itertools.chain(head, iterator), head


def new_run_id() -> str:
    """A fresh run id (``run-YYYYmmdd-HHMMSS-xxxxxx``), for a run started without one."""
    return time.strftime("run-%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def _check_run_id(run_id: str) -> None:
    if not _RUN_ID.match(run_id):
        raise ConfigurationError(
            f"run_id {run_id!r} is not valid: use 1-200 letters, digits and ._:@+=- "
            "starting with a letter or digit"
        )
