"""Validation of a batch input file, line by line, as the validating phase does it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from batchor.testing.emulator.limits import EmulatorLimits

_READ_BUFFER = 1 << 20
_raw_decode = json.JSONDecoder().raw_decode
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


def parse_line(line: str) -> Any:
    """Parse one JSON line (faster than `json.loads`); raise `ValueError` if it is not JSON."""
    if line[:1].isspace():
        line = line.lstrip()
    value, end = _raw_decode(line)
    if end != len(line) and not line[end:].isspace():
        raise ValueError("extra data after the JSON value")
    return value


def iter_requests(handle: TextIO) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield ``(custom_id, body)`` of each request line of an already validated file."""
    for raw in handle:
        if not raw.isspace():
            request = parse_line(raw)
            yield request["custom_id"], request["body"]


def _check_line(
    raw: str, number: int, endpoint: str, seen: set[str], check: InputCheck
) -> dict[str, Any] | None:
    try:
        request = parse_line(raw)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        return batch_error(
            "invalid_json_line", "This line is not parseable as valid JSON.", None, number
        )
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
        return batch_error(
            "duplicate_custom_id",
            "The custom_id for this request is a duplicate of another request. "
            "The custom_id parameter must be unique for each request in a batch.",
            "custom_id",
            number,
        )
    seen.add(custom_id)
    model = body.get("model")
    if not isinstance(model, str):
        return batch_error(
            "missing_required_parameter",
            "Missing required parameter: 'body.model'.",
            "body.model",
            number,
        )
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


def check_input_file(path: Path, endpoint: str, limits: EmulatorLimits) -> InputCheck:
    """Validate every line of the input file at ``path`` for a batch on ``endpoint``."""
    check = InputCheck()
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        check.errors.append(
            batch_error("file_not_found", "The input file was deleted.", "input_file_id")
        )
        return check
    if size > limits.max_batch_input_bytes:
        check.errors.append(
            batch_error(
                "file_too_large",
                f"The batch input file is larger than the {limits.max_batch_input_bytes} bytes "
                "maximum. Please try again with a smaller file.",
                "input_file_id",
            )
        )
        return check
    seen: set[str] = set()
    with open_input(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.isspace():
                continue
            check.total += 1
            if check.total > limits.max_batch_lines:
                check.errors.append(
                    batch_error(
                        "too_many_tasks",
                        f"The batch input file contains more than the maximum of "
                        f"{limits.max_batch_lines} requests.",
                        None,
                        number,
                    )
                )
                break
            error = _check_line(raw, number, endpoint, seen, check)
            if error is not None:
                check.errors.append(error)
                if len(check.errors) >= limits.max_validation_errors:
                    break
    if check.total == 0 and not check.errors:
        check.errors.append(
            batch_error("empty_file", "The batch input file is empty.", "input_file_id")
        )
    return check
