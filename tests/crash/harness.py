"""The crash harness: for each kill point, run a job in a child process that SIGKILLs itself
there, resume it in a fresh process, and compare with an uninterrupted run.

    uv run python tests/crash/harness.py [--job responses] [--items 12000] [--repetitions 3]
        [POINT ...]

Prints a table (kill point x repetitions, provider batches per batch key, lost and
duplicated items, results equal to the uninterrupted run, seconds per repetition).
tests/crash/test_crash.py runs it.
The job is a plain /v1/responses one, an /v1/embeddings one, chat completions through the
``AzureOpenAI`` client to the emulator's Azure routes, a structured one through Anthropic's
Message Batches to `AnthropicBatchEmulator`, or a structured one through Gemini's Batch Mode
(an input file uploaded through the Files API) to `GeminiBatchEmulator` (child.py).

Anthropic's batches keep no metadata, so "one provider batch per batch key" is judged from
what the emulator holds: each batch key's provider batch (recorded in the store) and every
other batch the emulator made holding any of its requests. A Gemini batch keeps only its
display name, which carries its batch key: the batches created are counted by the key read
back from it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from batchor.providers.gemini.tags import META_BATCH_KEY, read_display_name
from batchor.states import BatchStatus
from batchor.stores.open import open_store
from batchor.testing import AnthropicBatchEmulator, EmulatorLimits, OpenAIBatchEmulator
from batchor.testing.gemini import GeminiBatchEmulator

CHILD = Path(__file__).with_name("child.py")
KILL_POINTS = [
    "mid-ingest",
    "after-ingest",
    "after-pack",
    "upload-unrecorded",
    "after-upload",
    "during-create",
    "after-create",
    "during-download",
    "during-persist",
]
JOBS = ["responses", "embeddings", "azure", "anthropic", "gemini"]
INLINE_JOBS = frozenset({"anthropic"})  # requests go inline in the create call: no upload
# Jobs whose child dies at ``during-create`` once the provider lists the batch the create made
# (child.py's ``LISTED_CREATE_JOBS``), not on a timer: the kill is sure to follow the create.
LISTED_CREATE_JOBS = frozenset({"anthropic", "gemini"})
ITEMS = 12_000  # the default size: 2 batches of 6,000
# How long the emulator holds a create's answer at ``during-create``: where the child dies as
# soon as the batch is listed (child.py), well within this; else its timer fires first.
CREATE_DELAY = {"listed": 10.0, "timer": 1.0}

Emulator = OpenAIBatchEmulator | AnthropicBatchEmulator | GeminiBatchEmulator


@dataclass(frozen=True)
class Job:
    """What the child runs: a job kind (one of `JOBS`, made in child.py) and its number of
    items, packed ``items // 2`` to a batch."""

    kind: str = "responses"
    items: int = ITEMS

    @property
    def api(self) -> str:
        """The first segment of every route the job's client calls (``v1`` for OpenAI's
        and Anthropic's URL shape, ``openai`` for Azure's, ``{version}`` for Gemini's, whose
        emulator records ``v1`` and ``v1beta`` alike under that name; a Gemini upload's
        ``/upload/...`` and download's ``/download/...`` count as their version's, see
        `_api`)."""
        if self.kind == "gemini":
            return "{version}"
        return "openai" if self.kind == "azure" else "v1"

    @property
    def inline(self) -> bool:
        """Whether the job's requests travel inline in the create call (nothing uploaded)."""
        return self.kind in INLINE_JOBS

    @property
    def create_kill(self) -> str:
        """How the child dies at ``during-create``: once the provider lists the batch
        (``listed``) or on a timer (``timer``); see child.py."""
        return "listed" if self.kind in LISTED_CREATE_JOBS else "timer"

    @property
    def points(self) -> list[str]:
        """The kill points that apply to the job: all but ``upload-unrecorded`` where
        nothing is uploaded."""
        return [p for p in KILL_POINTS if not (self.inline and p == "upload-unrecorded")]

    def __str__(self) -> str:
        return f"{self.kind}-{self.items}"


def _emulator(job: Job) -> Emulator:
    if job.kind == "anthropic":
        return AnthropicBatchEmulator()
    if job.kind == "gemini":
        return GeminiBatchEmulator()
    return OpenAIBatchEmulator(limits=EmulatorLimits.azure() if job.kind == "azure" else None)


def _environment(emu: Emulator) -> dict[str, str]:
    """What points the child's client at ``emu``."""
    if isinstance(emu, AnthropicBatchEmulator):
        return {"ANTHROPIC_BASE_URL": emu.base_url, "ANTHROPIC_API_KEY": emu.api_key}
    if isinstance(emu, GeminiBatchEmulator):  # GEMINI_API_KEY, GOOGLE_GEMINI_BASE_URL
        return emu.environment
    return {
        "OPENAI_BASE_URL": emu.base_url,
        "OPENAI_API_KEY": emu.api_key,
        "AZURE_OPENAI_ENDPOINT": emu.azure_endpoint,
        "AZURE_OPENAI_API_KEY": emu.api_key,
    }


@dataclass
class Outcome:
    """One kill-and-resume repetition, judged."""

    point: str
    api: str
    killed: bool
    batches_per_key: set[int]
    lost: int
    duplicated: int
    equal_to_baseline: bool
    lines_bought_twice: int
    orphaned_uploads: int
    apis_called: set[str]
    # Provider batches that no batch row of the store holds (made, paid, never used).
    unheld_batches: int = 0
    # Provider batches that existed when the child died (at ``during-create``: the create
    # landed on the server, its answer never reached the client).
    created_before_kill: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.killed
            and self.batches_per_key == {1}
            and self.unheld_batches == 0
            and (self.point != "during-create" or self.created_before_kill >= 1)
            and self.lost == 0
            and self.duplicated == 0
            and self.equal_to_baseline
            and self.lines_bought_twice == 0
            and self.orphaned_uploads == 0
            and self.apis_called == {self.api}
        )


def _child(workdir: Path, run_id: str, point: str, emu: Emulator, job: Job) -> int:
    env = dict(os.environ, **_environment(emu))
    proc = subprocess.run(
        [sys.executable, str(CHILD), str(workdir), run_id, point, job.kind, str(job.items)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode not in (0, -9):
        raise RuntimeError(f"child failed at {point} ({job}): {proc.stderr[-2000:]}")
    return proc.returncode


def _results(workdir: Path, run_id: str) -> list[list[object]]:
    path = workdir / f"{run_id}.results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def baseline(workdir: Path, job: Job = Job()) -> list[list[object]]:
    """The results of an uninterrupted run."""
    run_id = f"baseline-{job}"
    with _emulator(job) as emu:
        _child(workdir, run_id, "none", emu, job)
    return _results(workdir, run_id)


def repetition(
    workdir: Path, point: str, rep: int, expected: list[list[object]], job: Job = Job()
) -> Outcome:
    """Kill at ``point``, resume in a fresh process, judge the outcome."""
    run_id = f"crash-{job}-{point}-{rep}"
    started = time.monotonic()
    with _emulator(job) as emu:
        if point == "during-create":
            emu.faults.create_response_delay = CREATE_DELAY[job.create_kill]
        killed = _child(workdir, run_id, point, emu, job) == -9
        created_before_kill = emu.stats.batches_created
        emu.faults.create_response_delay = 0.0
        if _child(workdir, run_id, "none", emu, job) != 0:
            raise RuntimeError(f"resume after {point} ({job}) did not finish")
        held = _held_batches(workdir, run_id)
        if isinstance(emu, AnthropicBatchEmulator):
            per_key = _untagged_batches_per_key(emu, held)
            orphans: list[object] = []
        elif isinstance(emu, GeminiBatchEmulator):
            per_key = _display_name_batches_per_key(emu)
            used = {b["metadata"]["inputConfig"]["fileName"] for b in emu.batches()}
            uploads = [f for f in emu.files() if f["source"] == "UPLOADED"]
            orphans = [f for f in uploads if f["name"] not in used]
        else:
            per_key = emu.stats.batches_by_metadata("batchor_batch_key")
            used = {b["input_file_id"] for b in emu.batches()}
            orphans = [f for f in emu.files() if f["purpose"] == "batch" and f["id"] not in used]
        # A batch's id: ``id`` in OpenAI's and Anthropic's shape, ``name`` in Gemini's.
        made = [b["id"] if "id" in b else b["name"] for b in emu.batches()]
        unheld = [batch_id for batch_id in made if batch_id not in held.values()]
        bought = emu.stats.lines_answered
        apis_called = {_api(route) for _method, route in emu.stats.calls}
    results = _results(workdir, run_id)
    ids = Counter(str(r[0]) for r in results)
    expected_ids = {str(r[0]) for r in expected}
    return Outcome(
        point=point,
        api=job.api,
        killed=killed,
        batches_per_key=set(per_key.values()),
        lost=len(expected_ids - set(ids)),
        duplicated=sum(n - 1 for n in ids.values() if n > 1),
        # Attempts are compared too: an interruption must not charge an attempt.
        equal_to_baseline=results == expected,
        lines_bought_twice=sum(1 for n in bought.values() if n > 1),
        orphaned_uploads=len(orphans),
        apis_called=apis_called,
        unheld_batches=len(unheld),
        created_before_kill=created_before_kill,
        seconds=time.monotonic() - started,
    )


def _held_batches(workdir: Path, run_id: str) -> dict[str, str]:
    """Each batch key of the run and the provider batch id its row holds, from the store."""
    store = open_store(f"sqlite:///{workdir}/batchor.db")
    try:
        run = store.get_run(run_id)
        assert run is not None, run_id
        return {
            b.batch_key: b.provider_batch_id
            for b in store.batches(run.pk, list(BatchStatus))
            if b.provider_batch_id is not None
        }
    finally:
        store.close()


def _api(route: str) -> str:
    """The API a route called belongs to: its first segment, but for a Gemini upload's or
    download's (``/upload/{version}/files``, ``/download/{version}/...``), its second."""
    segments = route.split("/")
    return segments[2] if segments[1] in ("upload", "download") else segments[1]


def _display_name_batches_per_key(emu: GeminiBatchEmulator) -> Counter[str]:
    """For each batch key, how many batches were created (even if since deleted) with a
    display name carrying it. A display name batchor did not write, or that carries a digest
    of the key instead of the key, counts under the name itself."""
    counted: Counter[str] = Counter()
    for name, created in emu.stats.batches_by_metadata("display_name").items():
        tag = read_display_name(name)
        counted[tag[META_BATCH_KEY] if isinstance(tag, dict) else name] += created
    return counted


def _untagged_batches_per_key(emu: AnthropicBatchEmulator, held: dict[str, str]) -> Counter[str]:
    """Where batches keep no metadata: for each batch key, how many of the emulator's
    batches hold any of the requests (custom ids) of the batch its row holds. A batch bought
    twice for the same key shares its requests with the one kept."""
    assert emu.data_dir is not None
    requests = {
        b["id"]: {
            json.loads(line)["custom_id"]
            for line in (emu.data_dir / f"{b['id']}.requests.jsonl").read_text().splitlines()
        }
        for b in emu.batches()
    }
    return Counter(
        {
            key: sum(1 for ids in requests.values() if ids & requests.get(batch_id, set()))
            for key, batch_id in held.items()
        }
    )


def run(points: list[str], repetitions: int, job: Job = Job()) -> list[Outcome]:
    """Every kill point given (that applies to the job), ``repetitions`` times each."""
    with tempfile.TemporaryDirectory(prefix="batchor-crash-") as tmp:
        workdir = Path(tmp)
        expected = baseline(workdir, job)
        return [
            repetition(workdir, point, rep, expected, job)
            for point in points
            if point in job.points
            for rep in range(repetitions)
        ]


def table(outcomes: list[Outcome]) -> str:
    """Markdown table: kill point x repetitions."""
    rows = [
        "| kill point | repetitions | killed | batches created before the kill | batches per "
        "key | unheld batches | lost | duplicated | lines bought twice | orphaned uploads | "
        "equal to uninterrupted | seconds per repetition |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for point in dict.fromkeys(o.point for o in outcomes):
        mine = [o for o in outcomes if o.point == point]
        per_key = sorted(set().union(*(o.batches_per_key for o in mine)))
        before = sorted({o.created_before_kill for o in mine})
        rows.append(
            f"| {point} | {len(mine)} | {sum(o.killed for o in mine)} | "
            f"{', '.join(map(str, before))} | {', '.join(map(str, per_key))} | "
            f"{sum(o.unheld_batches for o in mine)} | {sum(o.lost for o in mine)} | "
            f"{sum(o.duplicated for o in mine)} | {sum(o.lines_bought_twice for o in mine)} | "
            f"{sum(o.orphaned_uploads for o in mine)} | "
            f"{sum(o.equal_to_baseline for o in mine)}/{len(mine)} | "
            f"{sum(o.seconds for o in mine) / len(mine):.1f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--job", choices=JOBS, default="responses")
    parser.add_argument("--items", type=int, default=ITEMS)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("points", nargs="*", default=KILL_POINTS)
    args = parser.parse_args()
    outcomes = run(args.points, args.repetitions, Job(args.job, args.items))
    print(table(outcomes))
    sys.exit(0 if all(o.ok for o in outcomes) else 1)


if __name__ == "__main__":
    main()
