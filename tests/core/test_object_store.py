"""Object-store artifacts: the `ArtifactStore` contract on S3 (a real moto server on loopback)
and memory://, a whole run on S3 finished and read back in a fresh process, export and prune,
missing backends named with their extra, and no secret shown anywhere."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from batchor import (
    BatchJob,
    BatchLimits,
    BatchRunner,
    ConfigurationError,
    OpenAIProviderConfig,
)
from batchor.artifacts import FsspecArtifactStore, LocalArtifactStore, open_artifacts
from batchor.artifacts.fsspec import PART_BYTES
from batchor.testing import EmulatorFaults, OpenAIBatchEmulator

from .conftest import Sentiment, make_items, prompt

ROOT = Path(__file__).resolve().parents[2]


def _s3() -> Any:
    """A boto3 client of the test server (the environment points at it)."""
    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def _bucket(url: str) -> str:
    return url.removeprefix("s3://").split("/", 1)[0]


@pytest.fixture(params=["s3", "memory"])
def store(request: pytest.FixtureRequest) -> Iterator[FsspecArtifactStore]:
    """An empty store under a prefix, on the S3 server or in memory."""
    if request.param == "s3":
        url = f"{request.getfixturevalue('s3_bucket')}/artifacts"
    else:
        url = f"memory://test-{uuid.uuid4().hex[:8]}/artifacts"
    opened = open_artifacts(url)
    assert isinstance(opened, FsspecArtifactStore)
    yield opened
    for key in list(opened.keys("")):
        opened.delete(key)


def _write(store: FsspecArtifactStore, key: str, data: bytes) -> None:
    with store.open_write(key) as fh:
        fh.write(data)


def _write_then_fail(store: FsspecArtifactStore, key: str, data: bytes) -> None:
    """Write ``data`` to ``key``, then fail inside the block."""
    with store.open_write(key) as fh:
        fh.write(data)
        raise RuntimeError("boom")


def _read(store: FsspecArtifactStore, key: str) -> bytes:
    with store.open_read(key) as fh:
        return fh.read()


# ---- the ArtifactStore contract ---------------------------------------------------------------
def test_written_artifacts_read_back_and_seek(store: FsspecArtifactStore) -> None:
    lines = [f'{{"n": {i}, "text": "line {i}"}}\n'.encode() for i in range(200)]
    with store.open_write("runs/r1/requests/000000.jsonl") as fh:
        for line in lines:
            fh.write(line)
    key = "runs/r1/requests/000000.jsonl"
    data = b"".join(lines)
    assert store.exists(key)
    assert store.size(key) == len(data)
    assert _read(store, key) == data
    with store.open_read(key) as fh:
        assert list(fh) == lines  # line by line, as collection reads output files
        # The packer seeks to each request's offset and reads its length.
        offset = sum(map(len, lines[:150]))
        fh.seek(offset)
        assert fh.read(len(lines[150])) == lines[150]
        fh.seek(len(lines[0]))
        assert fh.read(len(lines[1])) == lines[1]
        assert fh.tell() == len(lines[0]) + len(lines[1])
    assert store.uri(key) == f"{store.url}/{key}"
    assert store.uri(key).split("://", 1)[0] in ("s3", "memory")


def test_a_write_interrupted_by_an_error_leaves_no_object(store: FsspecArtifactStore) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        _write_then_fail(store, "runs/r1/a.jsonl", b"half a file")
    assert not store.exists("runs/r1/a.jsonl")
    assert list(store.keys("runs")) == []

    # An interrupted overwrite leaves the previous artifact as it was.
    _write(store, "runs/r1/a.jsonl", b"complete\n")
    with pytest.raises(RuntimeError, match="boom"):
        _write_then_fail(store, "runs/r1/a.jsonl", b"replacement, half")
    assert _read(store, "runs/r1/a.jsonl") == b"complete\n"
    assert list(store.keys("runs")) == ["runs/r1/a.jsonl"]


def test_an_artifact_appears_only_when_its_write_completes(store: FsspecArtifactStore) -> None:
    with store.open_write("runs/r1/a.jsonl") as fh:
        fh.write(b"in progress")
        assert not store.exists("runs/r1/a.jsonl")
        assert list(store.keys("runs")) == []
    assert _read(store, "runs/r1/a.jsonl") == b"in progress"


def test_rewinding_a_write_starts_it_over(store: FsspecArtifactStore) -> None:
    # A download retried from scratch rewinds its destination and truncates it.
    with store.open_write("runs/r1/output.jsonl") as fh:
        fh.seek(0)
        fh.truncate()
        fh.write(b"first attempt, cut short")
        fh.seek(0)
        fh.truncate()
        fh.write(b"second attempt\n")
    assert _read(store, "runs/r1/output.jsonl") == b"second attempt\n"


def test_keys_are_recursive_sorted_and_relative(store: FsspecArtifactStore) -> None:
    for key in [
        "runs/r1/requests/000001.jsonl",
        "runs/r1/batches/r1/000001/input.jsonl",
        "runs/r1/requests/000000.jsonl",
        "runs/r10/requests/000000.jsonl",
        "other.json",
    ]:
        _write(store, key, key.encode())
    assert list(store.keys("runs/r1")) == [
        "runs/r1/batches/r1/000001/input.jsonl",
        "runs/r1/requests/000000.jsonl",
        "runs/r1/requests/000001.jsonl",
    ]
    assert list(store.keys("runs/r1/")) == list(store.keys("runs/r1"))
    assert list(store.keys("runs/none")) == []
    assert list(store.keys("runs")) == sorted(store.keys("runs"))
    assert len(list(store.keys(""))) == 5
    assert not store.exists("runs/r1")  # a folder is not an artifact


def test_delete_is_idempotent_and_keys_stay_inside_the_root(store: FsspecArtifactStore) -> None:
    _write(store, "runs/r1/a.jsonl", b"x")
    store.delete("runs/r1/a.jsonl")
    store.delete("runs/r1/a.jsonl")
    assert not store.exists("runs/r1/a.jsonl")
    assert list(store.keys("runs")) == []
    with pytest.raises(FileNotFoundError):
        store.size("runs/r1/a.jsonl")
    with pytest.raises(FileNotFoundError):
        store.open_read("runs/r1/a.jsonl")
    for bad in ("../escape", "runs/../../x", "/absolute", "runs//x", ""):
        with pytest.raises(ConfigurationError, match="not a relative path"):
            store.exists(bad)


def test_large_artifacts_stream_in_parts(s3_bucket: str) -> None:
    store = open_artifacts(f"{s3_bucket}/big")
    chunk = bytes(range(256)) * 4096  # 1 MiB
    count = 2 * PART_BYTES // len(chunk) + 3
    with store.open_write("big.bin") as fh:
        for i in range(count):
            fh.write(chunk[i:] + chunk[:i])
    assert store.size("big.bin") == count * len(chunk)
    # Uploaded as a multipart upload, part by part, not buffered whole.
    etag = _s3().head_object(Bucket=_bucket(s3_bucket), Key="big/big.bin")["ETag"]
    assert etag.strip('"').endswith("-3")
    with store.open_read("big.bin") as fh:
        fh.seek(17 * len(chunk) + 5)
        assert fh.read(10) == (chunk[17:] + chunk[:17])[5:15]
        fh.seek(0)
        digest = hashlib.sha256()
        while block := fh.read(len(chunk) // 3):
            digest.update(block)
    expected = hashlib.sha256(b"".join(chunk[i:] + chunk[:i] for i in range(count)))
    assert digest.hexdigest() == expected.hexdigest()


def test_an_interrupted_multipart_upload_is_aborted(s3_bucket: str) -> None:
    store = open_artifacts(f"{s3_bucket}/big")
    client, bucket = _s3(), _bucket(s3_bucket)
    with store.open_write("big.bin") as fh:  # a multipart upload is under way...
        fh.write(b"x" * (PART_BYTES + 1))
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads")
        assert not store.exists("big.bin")
        fh.write(b"more")
    store.delete("big.bin")
    with pytest.raises(RuntimeError, match="boom"):  # ...and is aborted on an error
        _write_then_fail(store, "big.bin", b"x" * (PART_BYTES + 1))
    assert not store.exists("big.bin")
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert client.list_objects_v2(Bucket=bucket).get("KeyCount") == 0

    with store.open_write("big.bin") as fh:  # a rewind aborts the upload in flight too
        fh.write(b"x" * (PART_BYTES + 1))
        fh.seek(0)
        fh.write(b"small")
    assert _read(store, "big.bin") == b"small"
    assert not client.list_multipart_uploads(Bucket=bucket).get("Uploads")


# ---- opening artifacts from what users pass ---------------------------------------------------
def test_urls_open_object_stores_and_paths_stay_local(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert isinstance(open_artifacts(f"{s3_bucket}/p"), FsspecArtifactStore)
    assert isinstance(open_artifacts("memory://somewhere/p"), FsspecArtifactStore)
    assert isinstance(open_artifacts(tmp_path / "a"), LocalArtifactStore)
    assert isinstance(open_artifacts(str(tmp_path / "a")), LocalArtifactStore)
    local = open_artifacts(f"file://{tmp_path}/b")
    assert isinstance(local, LocalArtifactStore)
    assert local.root == tmp_path / "b"

    monkeypatch.setenv("BATCHOR_ARTIFACTS", f"{s3_bucket}/from-env")
    with BatchRunner(f"sqlite:///{tmp_path}/b.db") as runner:
        assert isinstance(runner.artifacts, FsspecArtifactStore)
        assert runner.artifacts.uri("x") == f"{s3_bucket}/from-env/x"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("gs://bucket/p", "gs:// artifacts need gcsfs: pip install 'batchor[gcs]'"),
        ("gcs://bucket/p", "gcs:// artifacts need gcsfs: pip install 'batchor[gcs]'"),
        ("az://container/p", "az:// artifacts need adlfs: pip install 'batchor[azure]'"),
        ("abfs://container/p", "abfs:// artifacts need adlfs: pip install 'batchor[azure]'"),
    ],
)
def test_a_missing_backend_names_the_extra_to_install(url: str, message: str) -> None:
    # gcsfs and adlfs are not installed in the test environment: the real thing.
    with pytest.raises(ConfigurationError) as caught:
        open_artifacts(url)
    assert str(caught.value) == message


def test_missing_s3fs_or_fsspec_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = importlib.import_module("fsspec.registry")
    monkeypatch.setitem(sys.modules, "s3fs", None)  # import s3fs -> ImportError
    # Forget the class fsspec loaded for s3:// earlier in this process.
    monkeypatch.delitem(registry._registry, "s3", raising=False)
    with pytest.raises(ConfigurationError, match=r"^s3:// artifacts need s3fs: "):
        open_artifacts("s3://bucket/p")
    with pytest.raises(ConfigurationError, match=r"pip install 'batchor\[s3\]'$"):
        open_artifacts("s3://bucket/p")

    monkeypatch.setitem(sys.modules, "fsspec.core", None)
    with pytest.raises(ConfigurationError) as caught:
        open_artifacts("memory://x/p")
    assert str(caught.value) == "memory:// artifacts need fsspec: pip install 'batchor[fsspec]'"


def test_an_unknown_scheme_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="scheme 'nosuch' is not known to fsspec"):
        open_artifacts("nosuch://bucket/p")


# ---- secrets ----------------------------------------------------------------------------------
def test_no_secret_in_uris_or_errors(s3_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # moto accepts any key
    store = open_artifacts(f"{s3_bucket}/p")
    _write(store, "a.txt", b"a")
    shown = [store.uri("a.txt"), repr(store), str(vars(store))]
    for action in (
        lambda: store.open_read("missing"),
        lambda: store.size("missing"),
        lambda: open_artifacts("s3://no-such-bucket-here/p").open_read("a"),
        lambda: _write(open_artifacts("s3://no-such-bucket-here/p"), "a", b"a"),
    ):
        with pytest.raises(Exception) as caught:  # noqa: PT011 - any error, as long as it is quiet
            action()
        shown += [str(caught.value), repr(caught.value)]
    assert not [text for text in shown if secret in text]

    # A credential in the URL itself is refused without being repeated.
    with pytest.raises(ConfigurationError) as refused:
        open_artifacts(f"s3://AKIAEXAMPLE:{secret}@{_bucket(s3_bucket)}/p")
    assert secret not in str(refused.value)
    with pytest.raises(ConfigurationError) as refused:
        open_artifacts(f"{s3_bucket}/p?token={secret}")
    assert secret not in str(refused.value)


def test_storage_options_reach_the_backend_and_stay_hidden(
    s3_bucket: str, s3_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    store = FsspecArtifactStore(
        f"{s3_bucket}/opts", endpoint_url=s3_env, key="AKIAEXAMPLE", secret=secret
    )
    _write(store, "a.txt", b"through options")
    assert _read(store, "a.txt") == b"through options"
    assert secret not in f"{store!r} {store.uri('a.txt')} {vars(store)}"


# ---- a whole run on S3 ------------------------------------------------------------------------
CHILD = textwrap.dedent(
    """
    import json, sys
    from batchor import BatchRunner

    with BatchRunner(sys.argv[1], artifacts=sys.argv[2]) as runner:
        run = runner.get_run("on-s3")
        summary = run.wait(timeout=120, poll_interval=0.05, max_poll_interval=0.2)
        results = list(run.results())
    print(json.dumps({
        "status": summary.status.value,
        "results": [r.to_dict() for r in results],
        "types": sorted({type(r.output).__name__ for r in results if r.output is not None}),
    }))
    """
)


def test_a_run_on_s3_finishes_in_a_fresh_process_then_exports_and_prunes(
    s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    store_url = f"sqlite:///{tmp_path}/b.db"
    artifacts = f"{s3_bucket}/batchor"
    # Every 8th item is answered 500 once: retried, it is packed again in the fresh process,
    # from the request files on S3.
    failed: set[str] = set()

    def once(custom_id: str, body: dict[str, Any]) -> str | None:
        if int(custom_id) % 8 or custom_id in failed:
            return None
        failed.add(custom_id)
        return "server_error"

    faults = EmulatorFaults(line_fault=once)
    with OpenAIBatchEmulator(faults=faults, phase_seconds=0.05) as emu:
        job = BatchJob(
            items=make_items(40),
            build_prompt=prompt,
            provider_config=OpenAIProviderConfig(
                model="gpt-4.1-mini", base_url=emu.base_url, api_key=emu.api_key
            ),
            structured_output=Sentiment,
            limits=BatchLimits(max_requests=15),
        )
        with BatchRunner(store_url, artifacts=artifacts) as runner:
            started = runner.start(job, "on-s3")  # ingest, pack and submit, here
            assert not started.summary().is_terminal
        env = dict(os.environ, OPENAI_API_KEY=emu.api_key, PYTHONPATH=str(ROOT))
        child = subprocess.run(
            [sys.executable, "-c", CHILD, store_url, artifacts],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
            cwd=tmp_path,
        )
        assert child.returncode == 0, child.stderr
        created = emu.stats.batches_created
        assert created > 3  # 3 from the first pass, then the retries
    fresh = json.loads(child.stdout)
    assert fresh["status"] == "completed"
    assert fresh["types"] == ["Sentiment"]  # typed outputs in the fresh process too
    assert sum(r["attempts"] == 2 for r in fresh["results"]) == len(failed) == 5

    with BatchRunner(store_url, artifacts=artifacts) as runner:
        run = runner.get_run("on-s3")
        assert [r.to_dict() for r in run.results()] == fresh["results"]
        assert len(fresh["results"]) == 40
        store = runner.artifacts
        keys = list(store.keys("runs/on-s3"))
        inputs = [k for k in keys if k.endswith("/input.jsonl")]
        assert len(inputs) == created
        assert any(k.endswith("/output.jsonl") for k in keys)
        assert any("/requests/" in k for k in keys)

        export = run.export_artifacts(tmp_path / "audit")
        manifest = json.loads(Path(export.manifest).read_text())
        assert export.files == len(keys)
        for entry in manifest["files"]:
            copied = (tmp_path / "audit" / entry["path"]).read_bytes()
            with store.open_read(f"runs/on-s3/{entry['path']}") as fh:
                assert fh.read() == copied
            assert hashlib.sha256(copied).hexdigest() == entry["sha256"]

        everything = [p.read_bytes() for p in tmp_path.glob("b.db*")] + [child.stdout.encode()]
        everything += [p.read_bytes() for p in (tmp_path / "audit").rglob("*") if p.is_file()]
        assert not [blob for blob in everything if secret.encode() in blob]

        pruned = run.prune_artifacts(include_raw_outputs=True)
        assert pruned.files == len(keys)
        assert list(store.keys("runs/on-s3")) == []
        assert [r.to_dict() for r in run.results()] == fresh["results"]
