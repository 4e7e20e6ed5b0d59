"""Artifacts in object stores through fsspec (``s3://``, ``gs://``, ``az://``, ``memory://``, ...):
streamed both ways, and published atomically (an upload that fails never leaves an object)."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any, BinaryIO, cast
from urllib.parse import urlsplit

from batchor.errors import ConfigurationError

# Upload part size: the most a writer holds in memory (S3 parts must be at least 5 MiB).
PART_BYTES = 8 << 20
# Read buffer: the most a reader holds in memory, and the size of each ranged GET.
READ_BYTES = 1 << 20
# Backends whose uploads become visible only once complete and can be discarded before
# (S3 multipart or one-shot PUT, GCS resumable upload). Others (memory://, Azure, whose
# files appear as soon as they are opened) write to a temporary key and move it in place.
_STAGED_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs"})
# The optional extra and library each protocol needs, for the error when one is missing.
_EXTRAS = {
    "s3": ("s3fs", "s3"),
    "s3a": ("s3fs", "s3"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
    "abfs": ("adlfs", "azure"),
    "abfss": ("adlfs", "azure"),
}
_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")


class FsspecArtifactStore:
    """An `ArtifactStore` under an fsspec URL such as ``s3://bucket/prefix``.

    Credentials and endpoints come from the environment as the backend reads them
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...) or
    from ``storage_options``; batchor never records them, and `uri` never shows them.

    Args:
        url: The root every artifact lives under: ``<protocol>://<bucket or container>/<prefix>``.
        storage_options: Passed to the fsspec filesystem (e.g. ``endpoint_url=...``).

    Raises:
        ConfigurationError: the URL is not usable, or its backend library is not installed
            (the message names the extra to install).
    """

    def __init__(self, url: str, **storage_options: Any) -> None:
        scheme = url.split("://", 1)[0].lower()
        self._fs, root = _url_filesystem(url, storage_options)
        self._root: str = root.rstrip("/")
        if not self._root.strip("/"):
            raise ConfigurationError(
                f"artifact URL {redact(url)!r} names no bucket or folder; "
                f"use {scheme}://<bucket>/<prefix>"
            )
        self._staged = bool(_protocols(self._fs) & _STAGED_PROTOCOLS)
        self.url: str = self._fs.unstrip_protocol(self._root)
        """The store's root as a URL, without any credential."""

    def __repr__(self) -> str:
        return f"FsspecArtifactStore({self.url!r})"

    def _path(self, key: str) -> str:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ConfigurationError(f"artifact key {key!r} is not a relative path under the root")
        return f"{self._root}/{key}"

    def open_write(self, key: str) -> AbstractContextManager[BinaryIO]:
        """Write ``key`` streamed, in parts; it appears, complete, when the block exits
        without an error and not at all otherwise (the upload is aborted)."""
        return _publish(self._fs, self._path(key), self._staged)

    def open_read(self, key: str) -> BinaryIO:
        """A seekable reader of ``key`` that fetches byte ranges as it goes (never the
        whole object at once)."""
        raw = self._fs.open(self._path(key), "rb", block_size=READ_BYTES, cache_type="none")
        if isinstance(raw, io.BytesIO):
            # memory:// hands out the stored object itself: read a private view of it, so
            # two readers do not share a position.
            return io.BytesIO(raw.getvalue())
        if isinstance(raw, io.BufferedIOBase):
            return cast(BinaryIO, raw)
        # fsspec's own line reading re-reads a whole block per line: buffer it instead.
        return cast(BinaryIO, io.BufferedReader(raw, READ_BYTES))

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists (as an object, not a folder)."""
        return bool(self._fs.isfile(self._path(key)))

    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists."""
        with suppress(FileNotFoundError):
            self._fs.rm_file(self._path(key))

    def keys(self, prefix: str) -> Iterator[str]:
        """Every artifact key under the folder ``prefix``, sorted (temporary objects of
        writes in progress left out)."""
        folder = self._path(prefix.strip("/")) if prefix.strip("/") else self._root
        try:
            found = self._fs.find(folder, withdirs=False)
        except FileNotFoundError:
            return
        start = len(self._root) + 1
        keys = []
        for path in found:
            if not path.startswith(folder + "/") or path.endswith("/"):
                continue
            if _TEMP_NAME.match(path.rsplit("/", 1)[-1]):
                continue
            keys.append(path[start:])
        yield from sorted(keys)

    def size(self, key: str) -> int:
        """The artifact's size in bytes."""
        return int(self._fs.size(self._path(key)))

    def uri(self, key: str) -> str:
        """The artifact's URL (``s3://bucket/prefix/key``), without any credential."""
        return str(self._fs.unstrip_protocol(self._path(key)))


def open_url_write(url: str, **storage_options: Any) -> AbstractContextManager[BinaryIO]:
    """Write the one object at ``url`` (``s3://bucket/results.parquet``) streamed, in parts,
    published as `FsspecArtifactStore.open_write` publishes an artifact: complete when the
    block exits without an error, not at all otherwise.

    Raises:
        ConfigurationError: the URL is not usable, or its backend library is not installed.
    """
    fs, path = _url_filesystem(url, storage_options, "results URL")
    return _publish(fs, path, bool(_protocols(fs) & _STAGED_PROTOCOLS))


def url_is_file(url: str, **storage_options: Any) -> bool:
    """Whether an object exists at ``url``."""
    fs, path = _url_filesystem(url, storage_options, "results URL")
    return bool(fs.isfile(path))


def _url_filesystem(
    url: str, storage_options: dict[str, Any], what: str = "artifact URL"
) -> tuple[Any, str]:
    """The filesystem and path of a URL, checked first; errors call it ``what``."""
    _check_url(url, what)
    return _filesystem(url.split("://", 1)[0].lower(), url, storage_options, what)


@contextmanager
def _publish(fs: Any, path: str, staged: bool) -> Iterator[BinaryIO]:
    writer = _ObjectWriter(
        (lambda: _StagedUpload(fs, path)) if staged else (lambda: _MovedUpload(fs, path))
    )
    try:
        yield cast(BinaryIO, writer)
        writer.publish()
    except BaseException:
        writer.discard()
        raise


def missing_backend(scheme: str, detail: str | None = None) -> str:
    """The error for a URL whose fsspec backend is not installed, naming the extra."""
    library, extra = _EXTRAS.get(scheme, (None, "fsspec"))
    if library is not None:
        return f"{scheme}:// artifacts need {library}: pip install 'batchor[{extra}]'"
    if detail is None:
        return f"{scheme}:// artifacts need fsspec: pip install 'batchor[fsspec]'"
    return (
        f"{scheme}:// artifacts need fsspec and its backend for {scheme}:// ({detail}): "
        "pip install 'batchor[fsspec]' and that backend"
    )


def redact(url: str) -> str:
    """``url`` without a password, query or fragment (for messages)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1] if parts.password is not None else parts.netloc
    except ValueError:
        return url.split("://", 1)[0] + "://..."
    return f"{parts.scheme}://{netloc}{parts.path}"


def _check_url(url: str, what: str) -> None:
    """Refuse credentials or options in the URL: they would be shown wherever it is."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        raise ConfigurationError(f"{what} {redact(url)!r} is not valid") from None
    if password is not None:
        raise ConfigurationError(
            f"{what} {redact(url)!r} carries a credential; set it in the environment "
            "(e.g. AWS_SECRET_ACCESS_KEY) or pass storage options instead"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(
            f"{what} {redact(url)!r} has a query or fragment; pass options through the "
            "environment or as storage options instead"
        )


def _filesystem(
    scheme: str, url: str, storage_options: dict[str, Any], what: str
) -> tuple[Any, str]:
    """The fsspec filesystem for ``url`` and the root path in it."""
    try:
        from fsspec.core import url_to_fs
    except ImportError as exc:
        raise ConfigurationError(missing_backend(scheme)) from exc
    options: dict[str, Any] = {
        # Another process may write at any time: list the store, never a stale cache; and a
        # filesystem of our own, so credentials and endpoints are read afresh.
        "use_listings_cache": False,
        "skip_instance_cache": True,
        **storage_options,
    }
    try:
        fs, root = url_to_fs(url, **options)
    except ImportError as exc:
        raise ConfigurationError(missing_backend(scheme, _first_line(exc))) from exc
    except ValueError as exc:
        if "protocol" not in str(exc).lower():
            raise
        raise ConfigurationError(
            f"{what} scheme {scheme!r} is not known to fsspec; use a local directory or "
            "a URL such as s3://bucket/prefix, gs://, az:// or memory://"
        ) from None
    return fs, str(root)


def _protocols(fs: Any) -> set[str]:
    protocol = fs.protocol
    return {protocol} if isinstance(protocol, str) else set(protocol)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class _StagedUpload:
    """An upload the backend publishes only when the file is closed, and can abort before."""

    def __init__(self, fs: Any, path: str) -> None:
        self.file: Any = fs.open(path, "wb", block_size=PART_BYTES)

    def publish(self) -> None:
        self.file.close()  # completes the multipart upload (or PUTs a small object)

    def discard(self) -> None:
        try:
            self.file.discard()  # aborts the multipart upload
        finally:
            # Never let close() (or the finalizer, which calls it) publish the part written.
            self.file.closed = True


class _MovedUpload:
    """An upload to a temporary key beside the artifact, moved over it once complete."""

    def __init__(self, fs: Any, path: str) -> None:
        self._fs = fs
        self._path = path
        folder, _, name = path.rpartition("/")
        self._temp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        self.file: Any = fs.open(self._temp, "wb", block_size=PART_BYTES)

    def publish(self) -> None:
        self.file.close()
        self._fs.cp_file(self._temp, self._path)  # replaces the artifact in one step
        self._fs.rm_file(self._temp)

    def discard(self) -> None:
        try:
            if not isinstance(self.file, io.BytesIO):
                with suppress(Exception):
                    self.file.discard()
                self.file.closed = True
        finally:
            with suppress(FileNotFoundError):
                self._fs.rm_file(self._temp)


_Upload = _StagedUpload | _MovedUpload


class _ObjectWriter(io.BufferedIOBase):
    """The binary writer `open_write` yields: writes stream into the upload; rewinding to
    the start (``seek(0)``, as a download retried from scratch does) starts a new upload."""

    def __init__(self, begin: Callable[[], _Upload]) -> None:
        super().__init__()
        self._begin = begin
        self._upload: _Upload | None = begin()

    def _current(self) -> _Upload:
        if self._upload is None:
            raise ValueError("I/O operation on a finished artifact upload")
        return self._upload

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return int(self._current().file.write(data))

    def tell(self) -> int:
        return int(self._current().file.tell())

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position = self.tell()
        target = offset if whence == io.SEEK_SET else position + offset
        if target == position:
            return position
        if target == 0:
            self._current().discard()
            self._upload = None
            self._upload = self._begin()
            return 0
        raise io.UnsupportedOperation("an artifact upload can only be rewound to its start")

    def truncate(self, size: int | None = None) -> int:
        position = self.tell()
        if size is not None and size != position:
            raise io.UnsupportedOperation("an artifact upload can only be truncated where it is")
        return position

    def publish(self) -> None:
        """Make the artifact appear, complete."""
        upload, self._upload = self._current(), None
        try:
            upload.publish()
        except BaseException:
            upload.discard()
            raise
        finally:
            self.close()

    def discard(self) -> None:
        """Abort the upload: nothing appears."""
        upload, self._upload = self._upload, None
        try:
            if upload is not None:
                upload.discard()
        finally:
            self.close()
