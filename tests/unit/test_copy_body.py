"""A streamed download's body copied into its destination: a connection lost on the
provider's side is transient, what the destination raises is not judged."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pytest

from batchor.providers.base import TransientProviderError, connection_errors, copy_body


def cut_after(first: bytes) -> Iterator[bytes]:
    yield first
    raise httpx.RemoteProtocolError("peer closed connection without sending complete body")


def test_a_body_cut_half_way_is_transient_and_names_the_download() -> None:
    dest = io.BytesIO()
    with pytest.raises(TransientProviderError, match="the download of file-1 broke off: peer"):
        copy_body(cut_after(b"line 1\n"), dest, "file-1")
    assert dest.getvalue() == b"line 1\n"


def test_a_whole_body_is_copied_and_counted() -> None:
    dest = io.BytesIO()
    assert copy_body(iter([b"a\n", b"bc\n"]), dest, "file-1") == 5
    assert dest.getvalue() == b"a\nbc\n"


def test_what_the_destination_raises_passes_as_it_is() -> None:
    class Refusing(io.BytesIO):
        def write(self, data: object) -> int:
            raise httpx.ReadError("the destination's own transport failed")

    with pytest.raises(httpx.ReadError):
        copy_body(iter([b"a\n"]), Refusing(), "file-1")


def test_only_http_transport_errors_are_connection_errors() -> None:
    import httpx2

    lost = connection_errors()
    assert isinstance(httpx.ConnectError("refused"), lost)
    assert isinstance(httpx.ReadTimeout("slow"), lost)
    assert isinstance(httpx2.RemoteProtocolError("cut short"), lost)  # the openai SDK's
    status = httpx.HTTPStatusError("500", request=None, response=None)  # type: ignore[arg-type]
    assert not isinstance(status, lost)
    assert not isinstance(OSError("disk full"), lost)
