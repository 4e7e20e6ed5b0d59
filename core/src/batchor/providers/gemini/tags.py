"""A batch's metadata, carried in its display name (a Gemini batch job keeps no other).

The engine creates every batch with three values: the run id, the batch key (always
``<run id>/<number>``) and the SHA-256 of its input file. A Gemini batch job keeps only a
display name, so they travel in it::

    batchor <batch key> <SHA-256, base64url, 43 characters>

and are read back from it when the batch is listed: the run id is the batch key before its
last ``/``, the checksum the hex of the decoded digest. The whole checksum is kept, not a
prefix, because the engine adopts a batch found before its first create only when the
checksums are equal (`batchor.engine.lookup.lookup_first_create`).

No length limit is documented for a batch's display name; batchor keeps to 128 characters
(the limit of other Google AI resources' display names), which holds every batch key of a run
id up to 69 characters (generated run ids have 26). A longer batch key is replaced by 22
base64url characters (132 bits) of its SHA-256::

    batchor ~<digest of the batch key> <SHA-256 of the input>

and recovered, when the batch is listed, from the display name of the batch's input file,
which the engine uploads under a name holding the whole batch key (the Files API allows 512
characters): the key is the one whose digest matches, so it can never be taken for another.
Such a batch is found again only while its input file exists (the Files API keeps a file 48
hours, as long as a batch can live).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import NamedTuple

#: The engine's metadata keys (`batchor.engine.lookup`).
META_RUN_ID = "batchor_run_id"
META_BATCH_KEY = "batchor_batch_key"
META_INPUT_SHA256 = "batchor_input_sha256"

PREFIX = "batchor"
#: The longest display name batchor writes.
MAX_DISPLAY_NAME = 128
_DIGEST_CHARS = 22
_SHA256_BYTES = 32


class KeyDigest(NamedTuple):
    """A display name whose batch key was too long to keep: the key's digest, to be matched
    against the input file's name, and the input checksum (hex) if it had one."""

    digest: str
    checksum: str | None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def key_digest(batch_key: str) -> str:
    """The 22-character digest of a batch key used in place of a long one."""
    return _b64(hashlib.sha256(batch_key.encode("utf-8")).digest())[:_DIGEST_CHARS]


def display_name(metadata: Mapping[str, str]) -> str:
    """The display name carrying ``metadata`` (the engine's three values).

    Raises:
        ValueError: the metadata is not the engine's (no batch key or run id, a key that does
            not start with the run id, a space in the key, a checksum that is not SHA-256).
    """
    run_id = metadata.get(META_RUN_ID)
    key = metadata.get(META_BATCH_KEY)
    checksum = metadata.get(META_INPUT_SHA256)
    if not run_id or not key or not key.startswith(run_id + "/") or " " in key:
        raise ValueError(f"batch metadata without a batch key of its run id: {dict(metadata)}")
    tail = ""
    if checksum:
        try:
            digest = bytes.fromhex(checksum)
        except ValueError:
            digest = b""
        if len(digest) != _SHA256_BYTES:
            raise ValueError(f"input checksum {checksum!r} is not a SHA-256 hex digest")
        tail = " " + _b64(digest)
    name = f"{PREFIX} {key}{tail}"
    if len(name) <= MAX_DISPLAY_NAME:
        return name
    return f"{PREFIX} ~{key_digest(key)}{tail}"


def read_display_name(name: str | None) -> dict[str, str] | KeyDigest | None:
    """The metadata a display name carries; a `KeyDigest` when the batch key must be found
    from the input file (`resolve`); ``None`` for a display name batchor did not write."""
    if not name:
        return None
    parts = name.split(" ")
    if len(parts) not in (2, 3) or parts[0] != PREFIX:
        return None
    checksum: str | None = None
    if len(parts) == 3:
        encoded = parts[2]
        try:
            digest = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(digest) != _SHA256_BYTES:
            return None
        checksum = digest.hex()
    token = parts[1]
    if token.startswith("~"):
        return KeyDigest(token[1:], checksum) if len(token) == _DIGEST_CHARS + 1 else None
    run_id, slash, number = token.rpartition("/")
    if not slash or not run_id or not number:
        return None
    found = {META_RUN_ID: run_id, META_BATCH_KEY: token}
    if checksum is not None:
        found[META_INPUT_SHA256] = checksum
    return found


def resolve(tag: KeyDigest, input_name: str | None) -> dict[str, str] | None:
    """The metadata of a batch whose display name holds a `KeyDigest`, from its input file's
    display name (``batchor-<batch key, / as ->-<checksum prefix>.jsonl``): the batch key is
    the reading of that name, with one ``-`` put back as ``/``, whose digest matches;
    ``None`` if none does."""
    if not input_name:
        return None
    stem = input_name.removeprefix(PREFIX + "-").removesuffix(".jsonl")
    if tag.checksum:
        stem = stem.removesuffix("-" + tag.checksum[:16])
    at = len(stem)
    while (at := stem.rfind("-", 0, at)) > 0:
        key = stem[:at] + "/" + stem[at + 1 :]
        if key_digest(key) == tag.digest:
            found = {META_RUN_ID: stem[:at], META_BATCH_KEY: key}
            if tag.checksum:
                found[META_INPUT_SHA256] = tag.checksum
            return found
    return None
