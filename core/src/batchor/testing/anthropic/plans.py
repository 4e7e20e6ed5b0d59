"""Result lines of requests read through a shape (`shapes.RequestShape`), rendered from text
templates: what the requests of a shape share (validation, reply kind, compiled schema,
prompt-cache breakpoints, the constant parts of the line) is worked out once per shape.

A line rendered here is the line `replies.Replier.answer` gives the same request, encoded
(the same ids, usage and prompt-cache effects, drawn in the same order); the requests a
template does not cover (an ``invalid_json`` or ``schema_mismatch`` fault, breakpoints that
depend on the prompt) are left to it.
"""

from __future__ import annotations

from typing import Any

from batchor.testing.anthropic.faults import LineFault
from batchor.testing.anthropic.params import (
    breakpoints,
    check_params,
    prompt_of,
    reply_shape,
)
from batchor.testing.anthropic.replies import (
    _ERRORS,
    Replier,
    _apply_stop,
    _prompt_chars,
    errored,
)
from batchor.testing.anthropic.shapes import RequestShape, prompt_holder
from batchor.testing.anthropic.wire import encode, quote
from batchor.testing.emulator.lines import _with_slot
from batchor.testing.emulator.schemas import Entropy

Rendered = tuple[str, str]
"""A result line (JSON text, no newline) and its result type."""

_FAULT_RESULTS = {fault: encode(errored(fault, message)) for fault, message in _ERRORS.items()}
_LINE = '{"custom_id":%s,"result":%s}'


def _format(model: Any) -> str:
    """The %-format of a ``succeeded`` line: custom_id literal, message id, content block,
    stop reason, stop sequence literal, then the six usage counts."""
    model_json = encode(model).replace("%", "%%")
    return (
        '{"custom_id":%s,"result":{"type":"succeeded","message":{"id":"%s","type":"message",'
        f'"role":"assistant","model":{model_json},"content":[%s],"stop_reason":"%s",'
        '"stop_sequence":%s,"usage":{"input_tokens":%d,"cache_creation_input_tokens":%d,'
        '"cache_read_input_tokens":%d,"cache_creation":{"ephemeral_5m_input_tokens":%d,'
        '"ephemeral_1h_input_tokens":%d},"output_tokens":%d,"service_tier":"batch"}}}}'
    )


class ShapePlan:
    """How every request of one shape is answered, its prompt aside."""

    def __init__(self, replier: Replier, shape: RequestShape) -> None:
        """Work out what the requests of ``shape`` share."""
        params = shape.params
        self._replier = replier
        self.usable = True
        """Whether lines are rendered here (else every request goes to `Replier.answer`)."""
        self._prompt = prompt_of(params)
        """The prompt of a shape without a prompt slot (every request's)."""
        problem = check_params(params)  # a string prompt never changes the verdict
        self._refusal: str | None = None
        if problem is not None:
            self._refusal = encode(errored("invalid_request_error", problem))
            return
        reply = reply_shape(params)
        self._generate = None
        if reply.kind != "text":
            self._generate = replier.schemas.generator(reply.schema)
        self._tool_open = ""
        if reply.kind == "tool":
            self._tool_open = '{"type":"tool_use","id":"%s","name":' + encode(reply.tool).replace(
                "%", "%%"
            )
        self._budget = int(params["max_tokens"]) * 4
        self._stops = params.get("stop_sequences")
        self._format = _format(params["model"])
        self._chars = _prompt_chars(params)
        self._points = breakpoints(params)
        if shape.prompt is not None:
            self._chars -= len(shape.prompt)
            holder = prompt_holder(params)
            assert holder is not None
            if breakpoints(_with_slot(params, holder, "content")) != self._points:
                self.usable = False  # a breakpoint after the prompt: its key is the prompt's

    def render(
        self, custom_id_json: str, prompt: str | None, fault: LineFault | None, cached: bool
    ) -> Rendered | None:
        """The result line of one request (``prompt``: its prompt, ``None`` for the shape's
        own; ``cached``: whether it may hold ``cache_control``), or ``None`` to leave it to
        `Replier.answer`."""
        if self._refusal is not None:
            return _LINE % (custom_id_json, self._refusal), "errored"
        if fault is not None:
            result = _FAULT_RESULTS.get(fault)
            if result is None:
                return None
            return _LINE % (custom_id_json, result), "errored"
        if prompt is None:
            prompt = self._prompt
        ids = self._replier.ids
        stop_reason = "end_turn"
        stop_sequence = "null"
        if self._tool_open:
            assert self._generate is not None
            text = self._generate(Entropy.for_text(prompt))
            content = (self._tool_open % ids.next("toolu")) + ',"input":' + text + "}"
            stop_reason = "tool_use"
        else:
            if self._generate is not None:
                text = self._generate(Entropy.for_text(prompt))
            else:
                text, stop = _apply_stop("Echo: " + prompt, self._stops)
                if stop is not None:
                    stop_reason, stop_sequence = "stop_sequence", encode(stop)
            if len(text) > self._budget:
                text, stop_reason, stop_sequence = text[: self._budget], "max_tokens", "null"
            content = '{"type":"text","text":' + quote(text) + "}"
        total = (self._chars + len(prompt)) // 4 or 1
        read = written = five_minutes = one_hour = 0
        if cached and self._points:
            read, written, five_minutes, one_hour = self._replier.cache.use(self._points)
        line = self._format % (
            custom_id_json,
            ids.next("msg"),
            content,
            stop_reason,
            stop_sequence,
            max(total - read - written, 1),
            written,
            read,
            five_minutes,
            one_hour,
            len(text) // 4 or 1,
        )
        return line, "succeeded"
