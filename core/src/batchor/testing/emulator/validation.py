"""Validation of a batch input file, line by line, as the validating phase does it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from batchor.testing.emulator.batches import canonical_endpoint
from batchor.testing.emulator.embeddings import EMBEDDINGS, count_inputs
from batchor.testing.emulator.limits import EmulatorLimits
from batchor.testing.emulator.lines import (
    LineShape,
    RequestLine,
    RequestReader,
    parse_line,
    parsed_line,
)

_READ_BUFFER = 1 << 20
_REQUIRED = ("custom_id", "method", "url", "body")


@dataclass
class InputCheck:
    """The outcome of validating one input file."""

    total: int = 0
    """Number of request lines."""
    model: str | None = None
    """The (first) ``body.model`` found in the file."""
    errors: list[dict[str, Any]] = field(default_factory=list)
    """Batch ``errors.data`` entries; empty when the file is valid."""


def batch_error(
    code: str, message: str, param: str | None = None, line: int | None = None
) -> dict[str, Any]:
    """One entry of a failed batch's ``errors.data``."""
    return {"code": code, "message": message, "param": param, "line": line}


def open_input(path: Path) -> TextIO:
    """Open a batch input file for streaming reads, line by line."""
    return path.open(encoding="utf-8", errors="replace", buffering=_READ_BUFFER)


def _check_line(
    raw: str, number: int, endpoint: str, seen: set[str], check: InputCheck
) -> tuple[dict[str, Any] | None, Any]:
    """``(error or None, parsed request)`` of one line read in full."""
    try:
        request = parse_line(raw)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        error = batch_error(
            "invalid_json_line", "This line is not parseable as valid JSON.", None, number
        )
        return error, None
    return _check_request(request, number, endpoint, seen, check), request


def _check_request(
    request: dict[str, Any], number: int, endpoint: str, seen: set[str], check: InputCheck
) -> dict[str, Any] | None:
    for name in _REQUIRED:
        if request.get(name) is None:
            return batch_error(
                "missing_required_parameter", f"Missing required parameter: '{name}'.", name, number
            )
    custom_id, body = request["custom_id"], request["body"]
    if not isinstance(custom_id, str):
        return batch_error("invalid_type", "custom_id must be a string.", "custom_id", number)
    if not isinstance(body, dict):
        return batch_error("invalid_type", "body must be a JSON object.", "body", number)
    if request["method"] != "POST":
        return batch_error(
            "invalid_method", "The HTTP method of every request must be 'POST'.", "method", number
        )
    if request["url"] != endpoint:
        return batch_error(
            "url_mismatch",
            f"The provided URL '{request['url']}' does not match the batch endpoint '{endpoint}'.",
            "url",
            number,
        )
    if custom_id in seen:
        return _duplicate(number)
    seen.add(custom_id)
    model = body.get("model")
    if not isinstance(model, str):
        return batch_error(
            "missing_required_parameter",
            "Missing required parameter: 'body.model'.",
            "body.model",
            number,
        )
    return _check_model(model, number, check)


def _duplicate(number: int) -> dict[str, Any]:
    return batch_error(
        "duplicate_custom_id",
        "The custom_id for this request is a duplicate of another request. "
        "The custom_id parameter must be unique for each request in a batch.",
        "custom_id",
        number,
    )


def _check_model(model: str, number: int, check: InputCheck) -> dict[str, Any] | None:
    if check.model is None:
        check.model = model
    elif model != check.model:
        return batch_error(
            "model_mismatch",
            f"The provided model '{model}' does not match the model '{check.model}' of the other "
            "requests. All requests in a batch must use the same model.",
            "body.model",
            number,
        )
    return None


class InputValidator:
    """Validates a batch input file line by line, handing out the valid lines as it goes."""

    def __init__(self, path: Path, endpoint: str, limits: EmulatorLimits) -> None:
        """Prepare to validate the file at ``path`` for a batch on ``endpoint``.

        ``endpoint`` is spelled as the batch was created (OpenAI's or Azure's spelling), and
        every line's ``url`` must spell it the same way.
        """
        self.path = path
        self.endpoint = endpoint
        self.limits = limits
        self.check = InputCheck()
        """The outcome, complete once `requests` is exhausted."""
        self._embedding_inputs = 0
        self._shape_inputs: dict[LineShape, int] = {}

    def requests(self) -> Iterator[RequestLine]:
        """Validate the whole file; yield each line read until the first invalid one."""
        check, limits = self.check, self.limits
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            check.errors.append(
                batch_error("file_not_found", "The input file was deleted.", "input_file_id")
            )
            return
        if size > limits.max_batch_input_bytes:
            check.errors.append(
                batch_error(
                    "file_too_large",
                    f"The batch input file is larger than the {limits.max_batch_input_bytes} "
                    "bytes maximum. Please try again with a smaller file.",
                    "input_file_id",
                )
            )
            return
        with open_input(self.path) as handle:
            yield from self._lines(handle)
        if check.total == 0 and not check.errors:
            check.errors.append(
                batch_error("empty_file", "The batch input file is empty.", "input_file_id")
            )

    def _lines(self, handle: TextIO) -> Iterator[RequestLine]:
        check, endpoint, errors = self.check, self.endpoint, self.check.errors
        seen: set[str] = set()
        reader = RequestReader(canonical_endpoint(endpoint))
        fast = reader.fast
        max_lines = self.limits.max_batch_lines
        embeddings = reader.endpoint == EMBEDDINGS
        for number, raw in enumerate(handle, start=1):
            line = fast(raw)
            if line is None and raw.isspace():
                continue
            check.total += 1
            if check.total > max_lines:
                errors.append(
                    batch_error(
                        "too_many_tasks",
                        f"The batch input file contains more than the maximum of "
                        f"{max_lines} requests.",
                        None,
                        number,
                    )
                )
                return
            error: dict[str, Any] | None
            if line is not None:  # all but its custom_id was checked on another line
                assert line.shape is not None
                if line.custom_id in seen:
                    error = _duplicate(number)
                else:
                    seen.add(line.custom_id)
                    model = line.shape.model
                    error = None if model == check.model else _check_model(model, number, check)
            else:
                error, request = _check_line(raw, number, endpoint, seen, check)
                if error is None:
                    reader.learn(raw, request)
                    line = parsed_line(raw, request)
            if error is None and embeddings:
                assert line is not None
                error = self._count_embedding_inputs(line, number)
                if error is not None:
                    errors.append(error)
                    return
            if error is not None:
                errors.append(error)
                if len(errors) >= self.limits.max_validation_errors:
                    return
            elif not errors:
                assert line is not None
                yield line

    def _count_embedding_inputs(self, line: RequestLine, number: int) -> dict[str, Any] | None:
        """Count a valid line's embedding inputs; the error once there are too many."""
        shape = line.shape
        if line.body is not None:
            count = count_inputs(line.body.get("input"))
        elif line.prompt is not None or shape is None:
            count = 1  # a string input read through a shape's prompt slot
        else:  # a shape without a prompt slot: every line has the shape's input
            count = self._shape_inputs.get(shape, 0)
            if not count:
                count = self._shape_inputs[shape] = count_inputs(shape.body.get("input"))
        self._embedding_inputs += count
        limit = self.limits.max_embedding_inputs
        if self._embedding_inputs <= limit:
            return None
        return batch_error(
            "too_many_tasks",
            f"The batch input file contains more than the maximum of {limit} embedding "
            f"inputs. {self.endpoint} batches are restricted to a maximum of {limit} embedding "
            "inputs across all requests in the batch.",
            None,
            number,
        )
