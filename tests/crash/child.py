"""A batchor run in a child process that SIGKILLs itself at a chosen step boundary.

    python tests/crash/child.py WORKDIR RUN_ID KILL_POINT JOB ITEMS     (KILL_POINT "none": no kill)

JOB is ``responses`` (plain replies on /v1/responses), ``embeddings`` (/v1/embeddings),
``azure`` (chat completions through the ``AzureOpenAI`` client), ``anthropic`` (structured
replies through Anthropic's Message Batches: requests inline in the create call, batches
without metadata) or ``gemini`` (structured replies through Gemini's Batch Mode: an input file
uploaded through the Files API, batches that keep only a display name); ITEMS the number of
items, packed ITEMS // 2 to a batch.

Faults come in through the runner's own seams, never by patching a class: the provider-side
kill points wrap the job's real transport in a `KillingTransport` (``BatchRunner(provider=)``),
the store-side ones wrap the real store in a `KillingStore` (``BatchRunner(store=)``). What
dies is the real engine between two real steps. The provider is reached through
OPENAI_BASE_URL / OPENAI_API_KEY, AZURE_OPENAI_ENDPOINT / AZURE_OPENAI_API_KEY,
ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY, or GOOGLE_GEMINI_BASE_URL / GEMINI_API_KEY.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel

from batchor import (
    AnthropicProviderConfig,
    BatchJob,
    BatchLimits,
    BatchRunner,
    GeminiProviderConfig,
    JsonlItemSource,
    OpenAIProviderConfig,
    PromptParts,
)
from batchor.providers.base import BatchTransport, ProviderBatch, ProviderConfig
from batchor.stores.base import StateStore
from batchor.stores.open import open_store

AZURE_API_VERSION = "2024-10-21"
CREATE_KILL_DELAY = 0.3  # the emulator delays its create answer longer (harness.py)
# Jobs whose process dies at ``during-create`` once the provider lists the new batch, not on a
# timer (harness.py's ``LISTED_CREATE_JOBS``): an inline create sends the batch's requests in
# the call itself, which may take longer than any fixed delay, and a Gemini create's kill is
# thus sure to follow the batch's creation however slow the machine. harness.py delays the
# create's answer far longer; the process dies at the latest after this many seconds.
LISTED_CREATE_JOBS = frozenset({"anthropic", "gemini"})
CREATE_SEEN_DEADLINE = 60.0
STRUCTURED_JOBS = frozenset({"anthropic", "gemini"})


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillingTransport:
    """A `BatchTransport` that hands every call to a real one and SIGKILLs the process at
    one provider-side kill point:

    - ``upload-unrecorded``: right after the first upload returns (its id never recorded);
    - ``during-create``: while the first create is in flight (the emulator creates the batch
      and delays its answer; a timer kills the process before it arrives). With
      ``die_once_listed`` (for requests that go inline in the create call, so sending them
      takes a while, and for Gemini), the process dies as soon as the provider lists the
      batch the create made, its answer still held back: a create that succeeded on the
      server while the client was killed;
    - ``after-create``: right after the first create returns (its batch id never recorded);
    - ``during-download``: once the first chunk of the first downloaded file reached disk.
    """

    def __init__(self, inner: BatchTransport, point: str, die_once_listed: bool = False) -> None:
        self.inner = inner
        self.point = point
        self.die_once_listed = die_once_listed
        self.inline_requests = inner.inline_requests
        self.tags_batches = inner.tags_batches

    def check_credentials(self) -> None:
        self.inner.check_credentials()

    def upload_file(self, content: BinaryIO, filename: str) -> str:
        file_id = self.inner.upload_file(content, filename)
        if self.point == "upload-unrecorded":
            die()
        return file_id

    def find_uploads(self, filename: str, created_after: float) -> list[str]:
        return self.inner.find_uploads(filename, created_after)

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        metadata: Mapping[str, str],
        content: Callable[[], AbstractContextManager[BinaryIO]] | None = None,
    ) -> ProviderBatch:
        if self.point == "during-create":
            if self.die_once_listed:
                self._die_once_listed()
            else:
                threading.Timer(CREATE_KILL_DELAY, die).start()
        batch = self.inner.create_batch(input_file_id, endpoint, metadata, content)
        if self.point == "after-create":
            die()
        return batch

    def _die_once_listed(self) -> None:
        """SIGKILL the process, from a thread of its own, once the provider lists a batch it
        did not list before this create (or past `CREATE_SEEN_DEADLINE`)."""
        before = {b.id for b in self.inner.list_batches(created_after=0.0)}
        deadline = time.monotonic() + CREATE_SEEN_DEADLINE

        def watch() -> None:
            while time.monotonic() < deadline:
                try:
                    if any(b.id not in before for b in self.inner.list_batches(0.0)):
                        break
                except Exception:  # a transient error: look again
                    pass
                time.sleep(0.02)
            die()

        threading.Thread(target=watch, daemon=True).start()

    def retrieve_batch(self, batch_id: str) -> ProviderBatch:
        return self.inner.retrieve_batch(batch_id)

    def list_batches(self, created_after: float) -> Iterator[ProviderBatch]:
        return self.inner.list_batches(created_after)

    def cancel_batch(self, batch_id: str) -> ProviderBatch:
        return self.inner.cancel_batch(batch_id)

    def download_file(self, file_id: str, dest: BinaryIO) -> int:
        if self.point == "during-download":
            dest = _DyingFile(dest)  # type: ignore[assignment]
        return self.inner.download_file(file_id, dest)

    def delete_file(self, file_id: str) -> None:
        self.inner.delete_file(file_id)


class _DyingFile:
    """A download's destination that SIGKILLs the process once its first chunk is written."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner

    def write(self, chunk: bytes) -> int:
        written = self._inner.write(chunk)
        self._inner.flush()
        die()
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class KillingStore:
    """The real store, SIGKILLing the process right after the nth call of one of its methods
    (counting only calls ``when`` accepts) returns. Everything else is the real store's."""

    def __init__(
        self,
        inner: StateStore,
        method: str,
        nth: int = 1,
        when: Callable[..., bool] = lambda *a, **k: True,
    ) -> None:
        self._inner = inner
        self._method = method
        self._left = nth
        self._when = when

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name != self._method:
            return attr

        def dying(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if self._when(*args, **kwargs):
                self._left -= 1
                if self._left == 0:
                    die()
            return result

        return dying


STORE_POINTS: dict[str, Callable[[StateStore], Any]] = {
    "mid-ingest": lambda s: KillingStore(s, "add_items", 2),
    # Ingested whole, every batch cut and its items born in it, none sealed yet.
    "after-ingest": lambda s: KillingStore(s, "add_items", when=lambda *a, **k: k["complete"]),
    "after-pack": lambda s: KillingStore(s, "seal_batch"),
    "after-upload": lambda s: KillingStore(s, "record_upload"),
    "during-persist": lambda s: KillingStore(s, "apply_outcomes"),
}
PROVIDER_POINTS = ("upload-unrecorded", "during-create", "after-create", "during-download")


class Verdict(BaseModel):
    """The structured output of the ``anthropic`` job (a forced tool's input) and the
    ``gemini`` one (a response JSON schema)."""

    label: Literal["positive", "negative", "neutral"]
    score: float
    note: str | None


def provider_config(kind: str) -> ProviderConfig:
    """The job's provider settings."""
    if kind == "responses":
        return OpenAIProviderConfig(model="gpt-4.1-mini")
    if kind == "embeddings":
        return OpenAIProviderConfig(
            model="text-embedding-3-small",
            endpoint="/v1/embeddings",
            request_params={"dimensions": 16},
        )
    if kind == "azure":
        from batchor.providers.azure import AzureOpenAIProviderConfig

        return AzureOpenAIProviderConfig(
            deployment="gpt-4.1-mini",
            azure_endpoint=os.environ["AZURE_OPENAI_ENDPOINT"],
            api_version=AZURE_API_VERSION,
            api_key=os.environ["AZURE_OPENAI_API_KEY"],
        )
    if kind == "anthropic":  # key and base URL from ANTHROPIC_API_KEY / ANTHROPIC_BASE_URL
        return AnthropicProviderConfig(model="claude-sonnet-4-5", max_tokens=256)
    if kind == "gemini":  # key and base URL from GEMINI_API_KEY / GOOGLE_GEMINI_BASE_URL
        return GeminiProviderConfig(model="gemini-2.5-flash")
    raise ValueError(f"unknown job {kind!r}")


def items_file(workdir: Path, count: int) -> Path:
    """The job's source, written once per size and shared by every run in ``workdir``."""
    source = workdir / f"items-{count}.jsonl"
    if not source.exists():
        partial = source.with_suffix(".partial")
        partial.write_text(
            "".join(json.dumps({"id": f"i{k}", "text": f"item {k}"}) + "\n" for k in range(count))
        )
        partial.rename(source)
    return source


def main() -> None:
    workdir, run_id, point = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    kind, count = sys.argv[4], int(sys.argv[5])
    config = provider_config(kind)
    store: Any = open_store(f"sqlite:///{workdir}/batchor.db")
    provider: BatchTransport | None = None
    if point in STORE_POINTS:
        store = STORE_POINTS[point](store)
    elif point in PROVIDER_POINTS:
        provider = KillingTransport(
            config.transport(api_key=None, base_url=None), point, kind in LISTED_CREATE_JOBS
        )
    elif point != "none":
        raise ValueError(f"unknown kill point {point!r}")
    runner = BatchRunner(store=store, artifacts=workdir / "artifacts", provider=provider)
    job = BatchJob(
        items=JsonlItemSource(items_file(workdir, count), id_field="id"),
        build_prompt=lambda item: PromptParts(prompt=item.payload["text"]),
        provider_config=config,  # type: ignore[arg-type]
        structured_output=Verdict if kind in STRUCTURED_JOBS else None,
        # 2 batches per run, each collected in chunks of 5,000 items after an ingestion in
        # slices of 5,000 (at 12,000 items: 2 chunks per batch, 3 slices).
        limits=BatchLimits(max_requests=count // 2),
    )
    run = runner.start(job, run_id=run_id)
    summary = run.wait(poll_interval=0.05, max_poll_interval=0.2)
    with open(workdir / f"{run_id}.results.jsonl", "w") as fh:
        for r in run.results():
            fh.write(json.dumps([r.item_id, r.status.value, r.output_text, r.attempts]) + "\n")
    runner.close()
    print(summary.status.value)


if __name__ == "__main__":
    main()
