"""Text that a backend cannot hold as it is, escaped on its way in and restored on its way out.

PostgreSQL's text types cannot contain NUL (U+0000), and no UTF-8 database can hold a lone
surrogate (U+D800..U+DFFF, which Python strings may carry). A provider's reply or a source's
item id may contain either, so on Postgres every string goes through `escape` when the driver
sends it and `unescape` when the driver reads it back: the escaping lives at the driver's
adapters, one place for every statement of the store, and values round-trip unchanged.

The escaped form is the marker U+FDD0 (a Unicode noncharacter, which text does not carry)
followed by the value as an ASCII JSON string literal. Only values that need it are escaped:
those holding NUL or a lone surrogate, and those that begin with the marker (so that they,
too, come back unchanged). Every other value is stored as it is. SQLite holds NUL as it is.
"""

from __future__ import annotations

import functools
import json
from typing import Any

MARK = "\ufdd0"
"""The first character of an escaped value."""

_MARK_UTF8 = MARK.encode()
_dumps = json.JSONEncoder(ensure_ascii=True).encode  # ASCII only: no NUL, no surrogate
_loads = json.JSONDecoder().decode


def escape(value: str) -> str:
    """``value`` in a form any UTF-8 text column can hold (itself if it already is one)."""
    if "\x00" in value or value.startswith(MARK) or not _encodable(value):
        return MARK + _dumps(value)
    return value


def unescape(value: str) -> str:
    """The value that `escape` turned into ``value``."""
    if value.startswith(MARK):
        try:
            decoded = _loads(value[1:])
        except ValueError:
            return value  # not an escaped value (text written before escaping existed)
        if isinstance(decoded, str):
            return decoded
    return value


def _encodable(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _utf8(value: str) -> bytes:
    """``value`` escaped if it must be, in UTF-8: one encode for the common case."""
    if "\x00" not in value:
        try:
            data = value.encode()
        except UnicodeEncodeError:
            pass
        else:
            if not data.startswith(_MARK_UTF8):
                return data
    return (MARK + _dumps(value)).encode()


def register_postgres_adapters(dbapi_connection: Any) -> None:
    """Make a psycopg connection escape every string it sends and restore those it reads."""
    adapters = dbapi_connection.adapters
    text_dumper, binary_dumper, text_loader, binary_loader = _psycopg_adapters()
    adapters.register_dumper(str, binary_dumper)
    adapters.register_dumper(str, text_dumper)  # the default: registered last
    for name in ("text", "varchar", "bpchar", "name"):
        adapters.register_loader(name, text_loader)
        adapters.register_loader(name, binary_loader)


@functools.cache
def _psycopg_adapters() -> tuple[type, type, type, type]:
    """psycopg's string dumpers and loaders, with the escaping (psycopg is imported only
    when a Postgres store is used)."""
    from psycopg.adapt import Dumper, Loader
    from psycopg.pq import Format

    class TextDumper(Dumper):
        oid = 0  # unknown: the server infers the type, as psycopg's own default does

        def dump(self, obj: str) -> bytes:
            return _utf8(obj)

    class BinaryTextDumper(Dumper):
        format = Format.BINARY
        oid = 25  # text

        def dump(self, obj: str) -> bytes:
            return _utf8(obj)

    class TextLoader(Loader):
        def load(self, data: Any) -> str:
            raw = bytes(data)
            text = raw.decode()
            return unescape(text) if raw.startswith(_MARK_UTF8) else text

    class BinaryTextLoader(TextLoader):
        format = Format.BINARY

    return TextDumper, BinaryTextDumper, TextLoader, BinaryTextLoader
