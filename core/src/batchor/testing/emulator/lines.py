"""Fast reading of batch request lines, with the same result as parsing every line in full.

The lines of one batch usually differ only in their ``custom_id`` and their prompt; the rest
(method, url, model, parameters, a possibly large JSON schema) is the same text on every
line. A `LineShape` learned from one parsed line is that shared text cut around those two
JSON strings, compiled to one regular expression: the shared text literally, and a JSON
string where each of the two was. A line it matches is exactly the learned line with two
other strings in it, so it is read with no JSON parse. A line matching no shape is parsed
in full (and may teach a new shape), so every line reads as a full parse would read it.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple, TextIO

_raw_decode = json.JSONDecoder().raw_decode
_STRING = r'("[^"\\\x00-\x1f]*(?:\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4})[^"\\\x00-\x1f]*)*")'
_STYLES = (((",", ":"), False), ((", ", ": "), True), ((", ", ": "), False), ((",", ":"), True))
_MAX_SHAPES = 8
_RELEARN_EVERY = 64  # after the first misses, learn from only one miss in this many
_SLOT = "\x00slot-" + os.urandom(6).hex() + "-"


def parse_line(line: str) -> Any:
    """Parse one JSON line (faster than `json.loads`); raise `ValueError` if it is not JSON."""
    if line[:1].isspace():
        line = line.lstrip()
    value, end = _raw_decode(line)
    if end != len(line) and not line[end:].isspace():
        raise ValueError("extra data after the JSON value")
    return value


def _decode(literal: str) -> str:
    """The value of a JSON string literal already known to be well formed."""
    if "\\" not in literal:
        return literal[1:-1]
    value: str = json.loads(literal)
    return value


def _last_user(messages: Any) -> dict[str, Any] | None:
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message
    return None


def prompt_slot(endpoint: str, body: Mapping[str, Any]) -> tuple[dict[str, Any], str] | None:
    """``(container, key)`` where the request's prompt is a plain string, if it is one.

    Holds exactly when ``replies.extract_prompt`` returns ``container[key]`` unchanged.
    """
    holder: Any
    if endpoint == "/v1/chat/completions":
        holder, key = _last_user(body.get("messages")), "content"
    elif endpoint == "/v1/responses" and isinstance(body.get("input"), list):
        holder, key = _last_user(body.get("input")), "content"
    else:
        holder, key = body, ("prompt" if endpoint == "/v1/completions" else "input")
    if isinstance(holder, dict) and isinstance(holder.get(key), str):
        return holder, key
    return None


class LineShape:
    """The text shared by request lines that differ only in custom_id and prompt."""

    __slots__ = ("body", "fullmatch", "groups", "model")

    def __init__(self, pieces: tuple[str, ...], prompt_first: bool, body: dict[str, Any]) -> None:
        """``pieces`` surround the string slots (custom_id and prompt, or custom_id alone)."""
        pattern = _STRING.join(re.escape(piece) for piece in pieces) + r"\s*"
        if len(pieces) == 2:
            pattern += "()"  # an empty prompt group: every shape has two groups
        self.fullmatch = re.compile(pattern).fullmatch
        """Match a whole line: groups hold the custom_id and prompt literals (see `groups`)."""
        self.groups = (2, 1) if prompt_first else (1, 2)
        """The numbers of the custom_id group and the prompt group (empty when no prompt)."""
        self.body = body
        """The body of the line the shape was learned from (its prompt aside, every line's)."""
        self.model: str = body["model"]

    def match(self, raw: str) -> tuple[str, str | None] | None:
        """``(custom_id literal, prompt literal or None)`` of a matching line, else None."""
        found = self.fullmatch(raw)
        if found is None:
            return None
        custom_id, prompt = found.group(*self.groups)
        return custom_id, prompt or None


def learn_shape(raw: str, request: dict[str, Any], endpoint: str) -> LineShape | None:
    """The shape of the valid, parsed line ``raw``, or None if it has no usable shape."""
    body: dict[str, Any] = request["body"]
    skeleton: dict[str, Any] = {**request, "custom_id": _SLOT + "c"}
    prompt_first = False
    slot = prompt_slot(endpoint, body)
    if slot is not None:
        # Copy the path from the body down to the prompt's holder, then blank the prompt.
        holder, key = slot
        skeleton["body"] = _with_slot(body, holder, key)
    for separators, ascii_only in _STYLES:
        text = json.dumps(skeleton, separators=separators, ensure_ascii=ascii_only)
        marks = [json.dumps(_SLOT + s, ensure_ascii=ascii_only) for s in ("c", "p")]
        spots = [(text.find(mark), mark) for mark in marks if mark in text]
        if any(text.count(mark) != 1 for _, mark in spots):
            return None
        if len(spots) != (1 if slot is None else 2):
            return None
        prompt_first = spots[0][0] > spots[-1][0]
        spots.sort()
        pieces: list[str] = []
        pos = 0
        for index, mark in spots:
            pieces.append(text[pos:index])
            pos = index + len(mark)
        pieces.append(text[pos:])
        if not (raw.startswith(pieces[0]) and raw.rstrip().endswith(pieces[-1])):
            continue  # another style, surely: do not compile a pattern for nothing
        shape = LineShape(tuple(pieces), prompt_first, body)
        found = shape.match(raw)
        if found is None or _decode(found[0]) != request["custom_id"]:
            continue
        if slot is None or (found[1] is not None and _decode(found[1]) == slot[0][slot[1]]):
            return shape
    return None


def _with_slot(node: Any, holder: dict[str, Any], key: str) -> Any:
    """A copy of ``node`` with ``holder[key]`` replaced by the prompt slot marker."""
    if node is holder:
        return {**node, key: _SLOT + "p"}
    if isinstance(node, dict):
        return {k: _with_slot(v, holder, key) for k, v in node.items()}
    if isinstance(node, list):
        return [_with_slot(v, holder, key) for v in node]
    return node


class RequestLine(NamedTuple):
    """One request line of an already validated input file, read for answering."""

    custom_id: str
    custom_id_json: str
    """The custom_id as a JSON string literal."""
    prompt: str | None
    """The prompt when it is a plain string read through a shape, else None."""
    body: dict[str, Any] | None
    """The parsed body, when the line was parsed in full (no shape matched)."""
    shape: LineShape | None
    """The shape the line matched, if any."""
    raw: str
    """The line as read from the file."""


class RequestReader:
    """Reads request lines through learned shapes, parsing in full only when none matches."""

    def __init__(self, endpoint: str) -> None:
        """Read lines of a batch on ``endpoint``."""
        self.endpoint = endpoint
        self._shapes: list[LineShape] = []
        self._misses = 0

    def fast(self, raw: str) -> RequestLine | None:
        """The line read through a known shape, or None if it matches none."""
        for shape in self._shapes:
            found = shape.fullmatch(raw)
            if found is not None:
                literal, prompt = found.group(*shape.groups)
                custom_id = literal[1:-1] if "\\" not in literal else _decode(literal)
                if not prompt:
                    return RequestLine(custom_id, literal, None, None, shape, raw)
                if "\\" not in prompt:
                    return RequestLine(custom_id, literal, prompt[1:-1], None, shape, raw)
                return RequestLine(custom_id, literal, _decode(prompt), None, shape, raw)
        return None

    def learn(self, raw: str, request: dict[str, Any]) -> None:
        """Learn the shape of a valid line that matched no known shape.

        Learning costs a few encodings of the line, so past the first few misses (lines
        that may have no usable shape at all) only one miss in `_RELEARN_EVERY` is learned.
        """
        self._misses += 1
        if self._misses > _MAX_SHAPES and self._misses % _RELEARN_EVERY:
            return
        shape = learn_shape(raw, request, self.endpoint)
        if shape is None:
            return
        if len(self._shapes) >= _MAX_SHAPES:
            self._shapes.pop()  # the oldest
        self._shapes.insert(0, shape)

    def read(self, raw: str) -> RequestLine:
        """Read one line of a validated file (parsed in full if no shape matches)."""
        line = self.fast(raw)
        if line is not None:
            return line
        request = parse_line(raw)
        self.learn(raw, request)
        return parsed_line(raw, request)


def parsed_line(raw: str, request: dict[str, Any]) -> RequestLine:
    """The `RequestLine` of a valid line ``raw`` parsed in full into ``request``."""
    custom_id: str = request["custom_id"]
    return RequestLine(custom_id, json.dumps(custom_id), None, request["body"], None, raw)


def iter_requests(handle: TextIO, endpoint: str) -> Iterator[RequestLine]:
    """Yield each request line of an already validated input file."""
    reader = RequestReader(endpoint)
    read = reader.read
    for raw in handle:
        if not raw.isspace():
            yield read(raw)
