"""Fuzzing the file sources through real runs (slow tier).

Random bytes, random quoting, random code points (NUL and lone surrogates included) and
random id types, for CSV, JSONL and Parquet, from fixed seeds. Every generated input must end
as either a completed run in which every row's id comes back exactly once, or one one-line
`SourceError` and no run in the store. Inputs built well-formed also carry a prediction (which
of the two, and the exact ids and payloads) that the outcome must match; mutated and random
inputs only have to keep the invariant.

Accepted inputs with disjoint ids are run together, several to a `CompositeItemSource`, so
the whole file takes about a minute; inputs that fail only once read each get a
`runner.start` of their own.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from batchor import (
    BatchItem,
    BatchJob,
    BatchRunner,
    CompositeItemSource,
    CsvItemSource,
    ItemStatus,
    JsonlItemSource,
    OpenAIProviderConfig,
    ParquetItemSource,
    PromptParts,
    SourceError,
)
from batchor.testing import OpenAIBatchEmulator

pytestmark = pytest.mark.slow

_POOLS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ",
    ",;|\t\"'\r\n",
    "\x00\x01\x1b\x7f\x85\xa0",
    "éßøÆ€中文ä\u2028\u200b\ufeff",
    "😀\U0010ffff\U0001f600",
)
_SURROGATES = ("\ud800", "\udbff", "\udc00", "\udfff")
_GROUP_ITEMS = 400


def _text(rng: random.Random, longest: int, surrogate: float = 0.0, shortest: int = 0) -> str:
    """Random code points; at most one lone surrogate, so it can never pair up."""
    chars = [rng.choice(rng.choice(_POOLS)) for _ in range(rng.randint(shortest, longest))]
    if chars and rng.random() < surrogate:
        chars[rng.randrange(len(chars))] = rng.choice(_SURROGATES)
    return "".join(chars)


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def _mutate(rng: random.Random, data: bytes) -> bytes:
    """A few random edits: quotes and separators added or removed, bytes flipped, a cut."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(5)
        at = rng.randrange(len(out) + 1)
        if op == 0:
            out[at:at] = rng.choice([b'"', b",", b"\n", b"\r", b"{", b"\\"])
        elif op == 1 and out:
            del out[min(at, len(out) - 1)]
        elif op == 2 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif op == 3:
            del out[at:]
        else:
            out[at:at] = rng.randbytes(rng.randint(1, 4))
    return bytes(out)


@dataclass
class Case:
    """One generated input: how to open it and, for well-formed ones, what must happen."""

    name: str
    open: Callable[[], Any]
    refused: bool | None = None  # predicted: True refused, False accepted, None unknown
    ids: list[str] | None = None  # predicted ids, in order, when accepted
    payloads: list[dict[str, Any]] | None = None  # predicted payloads, when known
    notes: list[str] = field(default_factory=list)


# ---- CSV ------------------------------------------------------------------------------


def _csv_field(rng: random.Random, value: str, delimiter: str, mode: str) -> str:
    needs = value == "" or any(c in value for c in (delimiter, '"', "\r", "\n"))
    if mode == "all" or needs or (mode == "random" and rng.random() < 0.3):
        if needs and value == "" and mode == "minimal":
            return ""
        return '"' + value.replace('"', '""') + '"'
    return value


def _csv_case(rng: random.Random, folder: Path, index: int) -> Case:
    path = folder / f"c{index}.csv"
    roll = rng.random()
    if roll < 0.08:
        path.write_bytes(rng.randbytes(rng.randint(0, 200)))
        return Case(path.name, lambda: CsvItemSource(path, id_field="id"))
    if roll < 0.13:
        path.write_bytes(b"id,text\n" + rng.randbytes(rng.randint(0, 200)))
        return Case(path.name, lambda: CsvItemSource(path, id_field="id"))
    names = ["id"] + [
        _text(rng, 6).replace("\ufeff", "") or f"c{k}" for k in range(rng.randint(0, 3))
    ]
    if rng.random() < 0.03:
        names.append("id")
    rng.shuffle(names)
    delimiter = rng.choice(",;\t|")
    mode = rng.choice(["minimal", "all", "random"])
    term = rng.choice(["\n", "\r\n"])
    limit = rng.choice([None] * 8 + [4, 12, 40])
    rows: list[list[str]] = []
    for _ in range(rng.randint(0, 10)):
        row = [_text(rng, 14, surrogate=0.004) for _ in names]
        row[names.index("id")] = "" if rng.random() < 0.01 else _text(rng, 10, shortest=3)
        if rng.random() < 0.01 and rows:
            row[names.index("id")] = rows[-1][names.index("id")]
        rows.append(row)
    lines = [delimiter.join(_csv_field(rng, v, delimiter, mode) for v in names)]
    kept: list[list[str]] = []
    for row in rows:
        line = delimiter.join(_csv_field(rng, v, delimiter, mode) for v in row)
        if rng.random() < 0.1:
            lines.append("")  # a blank line, skipped
        lines.append(line)
        if line:  # a single empty unquoted field is a blank line: no row
            kept.append(row)
    text = term.join(lines) + ("" if rng.random() < 0.2 else term)
    every = [*names, *(v for row in rows for v in row)]
    surrogate = any(_has_surrogate(v) for v in every)
    encoding = rng.choice(["utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"])
    if encoding == "latin-1" and (surrogate or any(ord(c) > 255 for c in text)):
        encoding = "utf-8"
    data = text.encode(encoding, errors="surrogatepass")
    mutated = rng.random() < 0.15
    if mutated:
        data = _mutate(rng, data)
    path.write_bytes(data)
    ids = [row[names.index("id")] for row in kept]
    refused = (
        len(set(names)) != len(names)
        or surrogate
        or (limit is not None and any(len(v) > limit for v in every))
        or "" in ids
        or len(set(ids)) != len(ids)
    )
    options: dict[str, Any] = {"delimiter": delimiter, "encoding": encoding}
    if limit is not None:
        options["field_size_limit"] = limit
    case = Case(path.name, lambda: CsvItemSource(path, id_field="id", **options))
    if not mutated:
        case.refused = refused
        if not refused:
            case.ids = ids
            case.payloads = [dict(zip(names, row, strict=True)) for row in kept]
    return case


# ---- JSONL ----------------------------------------------------------------------------


def _jsonl_id(rng: random.Random) -> tuple[Any, bool]:
    """A random id and whether it is a valid one."""
    kind = rng.random()
    if kind < 0.6:
        value = _text(rng, 10, surrogate=0.005, shortest=3)
        return value, not _has_surrogate(value)
    if kind < 0.97:
        value = rng.choice([rng.randint(-(10**6), 10**9), 2**70 + rng.randrange(10**6)])
        return value, True
    bad: list[Any] = [1.5, 2.0, True, False, None, "", {"a": 1}, [1], "MISSING"]
    return rng.choice(bad), False


def _jsonl_case(rng: random.Random, folder: Path, index: int) -> Case:
    path = folder / f"j{index}.jsonl"
    roll = rng.random()
    if roll < 0.08:
        path.write_bytes(rng.randbytes(rng.randint(0, 200)))
        return Case(path.name, lambda: JsonlItemSource(path, id_field="id"))
    if roll < 0.12:
        path.write_bytes(b'{"id": "p"}\n' + rng.randbytes(rng.randint(0, 200)))
        return Case(path.name, lambda: JsonlItemSource(path, id_field="id"))
    ascii_only = rng.random() < 0.5
    term = rng.choice(["\n", "\r\n"])
    lines, ids, payloads, refused = [], [], [], False
    for _ in range(rng.randint(0, 10)):
        if rng.random() < 0.08:
            lines.append(rng.choice(["", " ", "\t", "\r"]))  # blank: skipped
        if rng.random() < 0.005:
            lines.append(rng.choice(["[1, 2]", "42", '"s"', "null"]))
            refused = True
            continue
        value, ok = _jsonl_id(rng)
        record: dict[str, Any] = {"text": _text(rng, 14, surrogate=0.005)}
        if rng.random() < 0.3:
            record["extra"] = {_text(rng, 4): [rng.randint(-9, 9), _text(rng, 4)]}
        if value != "MISSING":
            record["id"] = value
        items = list(record.items())
        rng.shuffle(items)
        record = dict(items)
        refused = refused or not ok or _has_surrogate(record)
        lines.append(json.dumps(record, ensure_ascii=ascii_only))
        if ok:
            ids.append(str(value))
            payloads.append(record)
    text = term.join(lines) + ("" if rng.random() < 0.2 else term)
    encoding = "utf-8"
    if rng.random() < 0.3 and not _has_surrogate(text) and all(ord(c) < 256 for c in text):
        encoding = "latin-1"
    data = text.encode(encoding, errors="surrogatepass")
    if encoding == "utf-8" and rng.random() < 0.1:
        data = b"\xef\xbb\xbf" + data
    mutated = rng.random() < 0.2
    if mutated:
        data = _mutate(rng, data)
    path.write_bytes(data)
    refused = refused or len(set(ids)) != len(ids)
    case = Case(path.name, lambda: JsonlItemSource(path, id_field="id", encoding=encoding))
    if not mutated:
        case.refused = refused
        if not refused:
            case.ids, case.payloads = ids, payloads
    return case


# ---- Parquet --------------------------------------------------------------------------


def _parquet_ids(rng: random.Random, n: int) -> tuple[Any, list[Any], bool]:
    """A random id column: (arrow array, python values, valid type)."""
    import pyarrow as pa

    kind = rng.choice(
        ["int64", "int32", "uint64", "string", "large_string", "dictionary"] * 3
        + ["float64", "bool", "struct", "list", "binary", "timestamp", "null", "decimal"]
    )
    if kind in ("int64", "int32", "uint64"):
        top = {"int64": 2**62, "int32": 2**30, "uint64": 2**64 - 1}[kind]
        low = 0 if kind == "uint64" else -top
        values: list[Any] = [rng.randint(low, top) for _ in range(n)]
        return pa.array(values, getattr(pa, kind)()), values, True
    if kind in ("string", "large_string", "dictionary"):
        values = [_text(rng, 10, shortest=3) for _ in range(n)]
        if n and rng.random() < 0.05:
            values[rng.randrange(n)] = ""
        arrow = pa.array(values, pa.large_string() if kind == "large_string" else pa.string())
        return (arrow.dictionary_encode() if kind == "dictionary" else arrow), values, True
    import datetime
    import decimal

    make = {
        "float64": lambda: rng.random() * 100,
        "bool": lambda: rng.random() < 0.5,
        "struct": lambda: {"a": rng.randint(0, 9)},
        "list": lambda: [rng.randint(0, 9)],
        "binary": lambda: rng.randbytes(3),
        "timestamp": lambda: datetime.datetime(2026, 1, 1) + datetime.timedelta(rng.random()),
        "null": lambda: None,
        "decimal": lambda: decimal.Decimal(rng.randint(0, 999)).scaleb(-2),
    }[kind]
    values = [make() for _ in range(n)]
    return pa.array(values, pa.null() if kind == "null" else None), values, False


def _invalid_utf8(n: int) -> Any:
    import pyarrow as pa

    data = b"ok" * n + b"\xed\xa0\x80"
    offsets = [2 * i for i in range(n)] + [len(data)]
    buffers = [None, pa.array(offsets, pa.int32()).buffers()[1], pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.string(), n, buffers)


def _parquet_case(rng: random.Random, folder: Path, index: int) -> Case:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / f"p{index}.parquet"
    roll = rng.random()
    if roll < 0.06:
        path.write_bytes(rng.randbytes(rng.randint(0, 300)))
        return Case(path.name, lambda: ParquetItemSource(path, id_field="id"))
    n = rng.randint(0, 10)
    arrow, values, ok = _parquet_ids(rng, n)
    if ok and n and rng.random() < 0.05:
        values[rng.randrange(n)] = None
        if pa.types.is_dictionary(arrow.type):
            arrow = pa.array(values, pa.string()).dictionary_encode()
        else:
            arrow = pa.array(values, arrow.type)
    texts = [_text(rng, 14) for _ in range(n)]
    bad_text = bool(n) and rng.random() < 0.04
    columns = {"id": arrow, "text": _invalid_utf8(n) if bad_text else pa.array(texts, pa.string())}
    if rng.random() < 0.3:
        columns["extra"] = pa.array([{"k": [rng.randint(0, 9)], "b": b"\x00"} for _ in range(n)])
    table = pa.table(columns)
    pq.write_table(table, path, row_group_size=rng.randint(1, 4))
    corrupt = rng.random() < 0.06
    if corrupt:
        data = bytearray(path.read_bytes())
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(4, max(5, len(data) - 8))] = rng.randrange(256)
        path.write_bytes(bytes(data))
    ids = [str(v) for v in values]
    case = Case(path.name, lambda: ParquetItemSource(path, id_field="id"))
    if not corrupt:
        bad_id = any(v is None or v == "" for v in values) or (not ok and n > 0)
        case.refused = bad_id or bad_text or len(set(ids)) != len(ids)
        if not case.refused:
            case.ids = ids
            case.payloads = table.to_pylist()
    return case


# ---- driving the runs -----------------------------------------------------------------


def _prompt(item: BatchItem) -> PromptParts:
    return PromptParts(prompt=f"[{item.item_id}] {item.payload.get('text')}"[:300])


class Driver:
    """Runs the cases: refused ones each through `runner.start`, accepted ones in groups."""

    def __init__(self, runner: BatchRunner, emulator: OpenAIBatchEmulator, prefix: str) -> None:
        self.runner, self.emulator, self.prefix = runner, emulator, prefix
        self.problems: list[str] = []
        self.left_behind: list[str] = []
        self.groups: list[list[tuple[Any, list[str]]]] = []
        self.refused = self.accepted = self.started_refused = 0

    def job(self, items: Any) -> BatchJob:
        return BatchJob(
            items=items,
            build_prompt=_prompt,
            provider_config=OpenAIProviderConfig(
                model="gpt-4.1-mini",
                base_url=self.emulator.base_url,
                api_key=self.emulator.api_key,
            ),
        )

    def check(self, index: int, case: Case) -> None:
        source = None
        try:
            source = case.open()
            items = [item for item, _ in source.iter_from(None)]
        except SourceError as exc:
            self._refused(index, case, source, exc)
            return
        ids = [item.item_id for item in items]
        if len(set(ids)) != len(ids):  # refused by the run (duplicate ids)
            self._refused(index, case, source, None)
            return
        if case.refused:
            self.problems.append(f"{case.name}: accepted, predicted refused")
            return
        if case.ids is not None and ids != case.ids:
            self.problems.append(f"{case.name}: ids {ids!r} != {case.ids!r}")
        if case.payloads is not None:
            got = [dict(item.payload) for item in items]
            if got != case.payloads:
                self.problems.append(f"{case.name}: payloads {got!r} != {case.payloads!r}")
        self.accepted += 1
        self._place(source, ids)

    def _refused(self, index: int, case: Case, source: Any, exc: SourceError | None) -> None:
        self.refused += 1
        if case.refused is False:
            self.problems.append(f"{case.name}: refused ({exc}), predicted accepted")
        if exc is not None and ("\n" in str(exc) or case.name not in str(exc)):
            self.problems.append(f"{case.name}: not one line naming the file: {exc!r}")
        if source is None:
            return  # no job can be built: nothing reaches a runner
        run_id = f"{self.prefix}-refused-{index}"
        self.started_refused += 1
        try:
            self.runner.start(self.job(source), run_id)
        except SourceError as error:
            if "\n" in str(error):
                self.problems.append(f"{case.name}: multi-line error {error!r}")
        else:
            self.problems.append(f"{case.name}: refused when read, but the run started")
        if self.runner.store.get_run(run_id) is not None:
            self.left_behind.append(f"{case.name} ({run_id})")

    def _place(self, source: Any, ids: list[str]) -> None:
        wanted = set(ids)
        for group in self.groups:
            used = {i for _, group_ids in group for i in group_ids}
            if len(used) + len(ids) <= _GROUP_ITEMS and not used & wanted:
                group.append((source, ids))
                return
        self.groups.append([(source, ids)])

    def run_groups(self) -> None:
        runs = []
        for number, group in enumerate(self.groups):
            parts = [source for source, _ in group]
            items = parts[0] if len(parts) == 1 else CompositeItemSource(parts)
            runs.append((self.runner.start(self.job(items), f"{self.prefix}-ok-{number}"), group))
        for run, group in runs:
            run.wait(timeout=120, poll_interval=0.05, max_poll_interval=0.2)
            expected = {i: source.identity for source, ids in group for i in ids}
            results = list(run.results())
            counts = Counter(r.item_id for r in results)
            if set(counts) != set(expected) or any(c != 1 for c in counts.values()):
                self.problems.append(f"run {run.run_id}: ids not each exactly once")
            for r in results:
                if r.status is not ItemStatus.COMPLETED:
                    self.problems.append(f"run {run.run_id}: {r.item_id!r} is {r.status}")
                elif expected.get(r.item_id) != r.source:
                    self.problems.append(f"run {run.run_id}: {r.item_id!r} from {r.source}")

    def verdict(self, total: int) -> None:
        wanted = {f"{self.prefix}-ok-{n}" for n in range(len(self.groups))}
        stored = {r.run_id for r in self.runner.store.list_runs()}
        stray = sorted(stored - wanted)
        assert self.refused + self.accepted == total
        assert not self.problems, "\n".join(self.problems[:20])
        assert not self.left_behind, (
            f"{len(self.left_behind)} refused inputs left a run in the store (issue 16 item "
            f"2): {', '.join(self.left_behind[:10])}"
        )
        assert not stray, f"runs in the store for refused inputs: {stray[:10]}"


FORMATS: dict[str, tuple[Callable[[random.Random, Path, int], Case], int]] = {
    "csv": (_csv_case, 850),
    "jsonl": (_jsonl_case, 700),
    "parquet": (_parquet_case, 450),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_input_completes_or_is_refused_cleanly(
    tmp_path: Path, openai_emulator: OpenAIBatchEmulator, fmt: str
) -> None:
    make, count = FORMATS[fmt]
    rng = random.Random(f"batchor-source-fuzz-{fmt}")
    folder = tmp_path / "inputs"
    folder.mkdir()
    cases = [make(rng, folder, index) for index in range(count)]
    with BatchRunner(
        store=f"sqlite:///{tmp_path}/store/batchor.db", artifacts=tmp_path / "artifacts"
    ) as runner:
        driver = Driver(runner, openai_emulator, fmt)
        for index, case in enumerate(cases):
            driver.check(index, case)
        driver.run_groups()
        driver.verdict(len(cases))
    print(
        f"{fmt}: {count} inputs, {driver.accepted} accepted in {len(driver.groups)} runs, "
        f"{driver.refused} refused ({driver.started_refused} of them through runner.start)"
    )
    # both outcomes must be well represented for the test to mean something
    assert driver.refused > count // 10
    assert driver.accepted > count // 4
