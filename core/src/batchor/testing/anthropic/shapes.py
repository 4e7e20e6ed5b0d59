"""Fast reading of Message Batch requests, with the same result as parsing each in full.

The requests of one batch usually differ only in their ``custom_id`` and their prompt (the
text of the last user message); the rest (model, ``max_tokens``, a forced tool and its
possibly large schema) is the same text in every request. A `RequestShape` learned from one
parsed request is that shared text cut around those two JSON strings, compiled to one
regular expression: the shared text literally, and a JSON string where each of the two was.
A request it matches is exactly the learned request with two other strings in it, so it is
read with no JSON parse; one matching no shape is parsed in full (and may teach a new
shape), so every request reads as a full parse would read it.

The create call's body is split into its requests this way (`scan_requests`), and the worker
reads the spooled request lines this way too (`ShapeReader`).
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from batchor.testing.anthropic import wire
from batchor.testing.emulator.lines import _SLOT, _STRING, _STYLES, _with_slot

_MAX_SHAPES = 8
_RELEARN_EVERY = 64  # after the first misses, learn from only one miss in this many
_raw_decode = json.JSONDecoder().raw_decode
_COMMA = re.compile(r"[ \t\n\r]*,[ \t\n\r]*")
_PREFIX = re.compile(r'[ \t\n\r]*\{[ \t\n\r]*"requests"[ \t\n\r]*:[ \t\n\r]*\[')
_SUFFIX = re.compile(r"[ \t\n\r]*\][ \t\n\r]*\}[ \t\n\r]*")


def _decode(literal: str) -> str:
    """The value of a JSON string literal already known to be well formed."""
    if "\\" not in literal:
        return literal[1:-1]
    value: str = json.loads(literal)
    return value


def prompt_holder(params: Any) -> dict[str, Any] | None:
    """The message whose ``content`` is a request's prompt (`params.prompt_of`), if that
    content is a plain string."""
    messages = params.get("messages") if isinstance(params, dict) else None
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message if isinstance(message.get("content"), str) else None
    return None


class RequestShape:
    """The text shared by requests that differ only in custom_id and prompt."""

    __slots__ = ("_pattern", "groups", "params", "prompt")

    def __init__(self, pieces: list[str], prompt_first: bool, params: dict[str, Any]) -> None:
        """``pieces`` surround the string slots (custom_id and prompt, or custom_id alone)."""
        pattern = _STRING.join(re.escape(piece) for piece in pieces)
        if len(pieces) == 2:
            pattern += "()"  # an empty prompt group: every shape has two groups
        self._pattern = re.compile(pattern)
        self.groups = (2, 1) if prompt_first else (1, 2)
        """The numbers of the custom_id group and the prompt group (empty when no prompt)."""
        self.params = params
        """The ``params`` of the request the shape was learned from (the prompt aside,
        every matching request's)."""
        holder = prompt_holder(params)
        self.prompt: str | None = holder["content"] if holder is not None else None
        """The learned request's prompt if it is a slot of the shape, else ``None``."""

    def match(self, text: str, pos: int = 0, end: int | None = None) -> re.Match[str] | None:
        """The request starting at ``text[pos]``, if it has this shape; ``end``: where it must
        end (anywhere if ``None``)."""
        if end is None:
            return self._pattern.match(text, pos)
        return self._pattern.fullmatch(text, pos, end)


def learn_shape(raw: str, request: Any) -> RequestShape | None:
    """The shape of ``raw``, the text of one request parsed into ``request``: ``None`` if
    the request is not a ``{"custom_id": str, "params": object}`` or has no usable shape."""
    if not isinstance(request, dict) or len(request) != 2:
        return None
    custom_id, params = request.get("custom_id"), request.get("params")
    if not isinstance(custom_id, str) or not isinstance(params, dict):
        return None
    skeleton = {key: _SLOT + "c" if key == "custom_id" else value for key, value in request.items()}
    holder = prompt_holder(params)
    if holder is not None:
        skeleton["params"] = _with_slot(params, holder, "content")
    for separators, ascii_only in _STYLES:
        text = json.dumps(skeleton, separators=separators, ensure_ascii=ascii_only)
        marks = [json.dumps(_SLOT + s, ensure_ascii=ascii_only) for s in ("c", "p")]
        spots = [(text.find(mark), mark) for mark in marks if mark in text]
        if any(text.count(mark) != 1 for _, mark in spots):
            return None
        if len(spots) != (1 if holder is None else 2):
            return None
        prompt_first = spots[0][0] > spots[-1][0]
        spots.sort()
        pieces: list[str] = []
        pos = 0
        for index, mark in spots:
            pieces.append(text[pos:index])
            pos = index + len(mark)
        pieces.append(text[pos:])
        if not (raw.startswith(pieces[0]) and raw.endswith(pieces[-1])):
            continue  # another style, surely: do not compile a pattern for nothing
        shape = RequestShape(pieces, prompt_first, params)
        found = shape.match(raw, 0, len(raw))
        if found is None:
            continue
        literal, prompt = found.group(*shape.groups)
        if _decode(literal) != custom_id:
            continue
        if holder is None or (prompt and _decode(prompt) == holder["content"]):
            return shape
    return None


class Request(NamedTuple):
    """One request read through a shape."""

    custom_id: str
    custom_id_json: str
    """The custom_id as a JSON string literal."""
    prompt: str | None
    """The prompt, when it is a slot of the shape (else the shape's params hold it)."""
    shape: RequestShape
    end: int
    """Where the request's text ends."""


class ShapeReader:
    """Learned shapes, and the reading of requests through them."""

    def __init__(self) -> None:
        """Start with no shape."""
        self._shapes: list[RequestShape] = []
        self._misses = 0

    def read(self, text: str, pos: int = 0, end: int | None = None) -> Request | None:
        """The request starting at ``text[pos]`` read through a known shape, or ``None`` if no
        shape matches there; ``end``: where it must end (anywhere if ``None``)."""
        for shape in self._shapes:
            found = shape.match(text, pos, end)
            if found is not None:
                literal, slot = found.group(*shape.groups)
                custom_id = literal[1:-1] if "\\" not in literal else _decode(literal)
                prompt = None
                if slot:  # a JSON string literal (never empty), or no prompt slot
                    prompt = slot[1:-1] if "\\" not in slot else _decode(slot)
                return Request(custom_id, literal, prompt, shape, found.end())
        return None

    def line(self, raw: str) -> Request | None:
        """A spooled request line (its newline aside) read through a known shape."""
        return self.read(raw, 0, len(raw) - 1 if raw.endswith("\n") else len(raw))

    def learn(self, raw: str, request: Any) -> None:
        """Learn the shape of a request (``raw``, a newline aside, parsed into ``request``)
        that matched no known shape.

        Learning costs a few encodings of the request, so past the first few misses (requests
        that may have no usable shape at all) only one miss in `_RELEARN_EVERY` is learned.
        """
        if raw.endswith("\n"):
            raw = raw[:-1]
        self._misses += 1
        if self._misses > _MAX_SHAPES and self._misses % _RELEARN_EVERY:
            return
        shape = learn_shape(raw, request)
        if shape is None:
            return
        if len(self._shapes) >= _MAX_SHAPES:
            self._shapes.pop()  # the oldest
        self._shapes.insert(0, shape)


def split_requests(text: str, limit: int) -> list[tuple[str, str]] | None:
    """The requests of a create body ``text`` as ``(custom_id, spool line)`` pairs, read
    without a full parse where shapes allow; ``None`` if the body needs the full parse and
    check (it is not ``{"requests": [...]}`` holding 1 to ``limit`` objects each with a
    string ``custom_id`` and an object ``params``, or it is not JSON).

    A request read through a shape is spooled as it was sent (a shape's text is one line);
    one parsed in full is spooled as ``{"custom_id", "params"}`` re-encoded.
    """
    head = _PREFIX.match(text)
    if head is None:
        return None
    reader = ShapeReader()
    read = reader.read
    pairs: list[tuple[str, str]] = []
    pos = head.end()
    while True:
        request = read(text, pos)
        if request is not None:
            pairs.append((request.custom_id, text[pos : request.end]))
            pos = request.end
        else:
            try:
                value, end = _raw_decode(text, pos)
            except (ValueError, RecursionError):
                return None
            if not isinstance(value, dict):
                return None
            custom_id, params = value.get("custom_id"), value.get("params")
            if not isinstance(custom_id, str) or not isinstance(params, dict):
                return None
            reader.learn(text[pos:end], value)
            pairs.append((custom_id, wire.encode({"custom_id": custom_id, "params": params})))
            pos = end
        if len(pairs) > limit:
            return None
        between = _COMMA.match(text, pos)
        if between is None:
            break
        pos = between.end()
    if _SUFFIX.fullmatch(text, pos) is None:
        return None
    return pairs
