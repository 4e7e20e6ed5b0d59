"""An embeddings job ends with one vector per item; a reply without a proper vector is
retried like any retryable failure, and a text the provider refuses fails at once."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import pytest

from batchor import (
    BatchItem,
    BatchJob,
    BatchRunner,
    ConfigurationError,
    ItemStatus,
    PromptParts,
    RunNotFoundError,
    RunStatus,
)
from batchor.testing import InProcessBatchTransport

from .helpers import (
    CREATE,
    Verdict,
    assert_exactly_once,
    by_id,
    drive,
    line_fault_on,
    make_job,
    prompt,
)

EMBEDDING_MODEL = "text-embedding-3-small"
DIMENSIONS = 8


def embedding_job(
    items: list[BatchItem],
    *,
    max_requests: int | None = None,
    max_attempts: int = 3,
    build_prompt: Callable[[BatchItem], PromptParts] = prompt,
) -> BatchJob:
    return make_job(
        items,
        structured=None,
        model=EMBEDDING_MODEL,
        endpoint="/v1/embeddings",
        request_params={"dimensions": DIMENSIONS},
        max_requests=max_requests,
        max_attempts=max_attempts,
        build_prompt=build_prompt,
    )


def texts(*values: str) -> list[BatchItem]:
    return [
        BatchItem(item_id=f"t{i}", payload={"text": v}, metadata={"i": i})
        for i, v in enumerate(values)
    ]


def vector(text: str | None) -> list[float]:
    assert text is not None
    parsed = json.loads(text)
    assert isinstance(parsed, list)
    assert all(type(x) in (float, int) for x in parsed)  # numbers (a JSON 0 reads as an int)
    return [float(x) for x in parsed]


def test_each_item_gets_its_vector(runner: BatchRunner, transport: InProcessBatchTransport) -> None:
    items = texts("good coffee", "bad coffee", "good coffee", "a long review " * 20)
    run = runner.start(embedding_job(items, max_requests=3), "vectors")
    summary = drive(run)

    assert summary.status is RunStatus.COMPLETED
    assert summary.completed == 4
    results = by_id(run)
    vectors = {item_id: vector(r.output_text) for item_id, r in results.items()}
    assert all(len(v) == DIMENSIONS for v in vectors.values())
    assert all(
        math.isclose(math.fsum(x * x for x in v), 1.0, abs_tol=1e-4) for v in vectors.values()
    )
    assert vectors["t0"] == vectors["t2"]  # the same text, the same vector
    assert vectors["t0"] != vectors["t1"]
    assert [results[f"t{i}"].metadata for i in range(4)] == [{"i": i} for i in range(4)]
    assert all(r.attempts == 1 and r.error is None for r in results.values())
    assert summary.usage.input_tokens > 0
    assert {b["endpoint"] for b in transport.batches()} == {"/v1/embeddings"}
    assert [b["request_counts"]["total"] for b in transport.batches()] == [3, 1]
    assert_exactly_once(transport)


@pytest.mark.parametrize("fault", ["invalid_json", "schema_mismatch", "server_error"])
def test_a_failed_or_vectorless_reply_is_retried(
    runner: BatchRunner, transport: InProcessBatchTransport, fault: str
) -> None:
    transport.faults.line_fault = line_fault_on(["second"], fault, times=1)
    run = runner.start(embedding_job(texts("first", "second")), f"retry-{fault}")
    assert drive(run).completed == 2

    results = by_id(run)
    assert (results["t0"].attempts, results["t1"].attempts) == (1, 2)
    assert len(vector(results["t1"].output_text)) == DIMENSIONS
    assert transport.stats.batches_created == 2
    assert_exactly_once(transport)


@pytest.mark.parametrize(
    ("fault", "error_class"),
    [("invalid_json", "invalid_response"), ("schema_mismatch", "invalid_response")],
)
def test_a_reply_never_holding_a_vector_fails_after_max_attempts(
    runner: BatchRunner, transport: InProcessBatchTransport, fault: str, error_class: str
) -> None:
    transport.faults.line_fault = line_fault_on(["second"], fault)
    job = embedding_job(texts("first", "second"), max_attempts=2)
    run = runner.start(job, f"never-a-vector-{fault}")
    assert drive(run).status is RunStatus.COMPLETED_WITH_FAILURES

    failed = by_id(run)["t1"]
    assert failed.status is ItemStatus.FAILED
    assert failed.attempts == 2
    assert failed.error is not None
    assert failed.error.error_class == error_class
    assert failed.error.retryable is True


def test_a_text_the_provider_cannot_embed_fails_at_once(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    run = runner.start(embedding_job(texts("fine", "")), "empty-text")
    drive(run)

    failed = by_id(run)["t1"]
    assert failed.status is ItemStatus.FAILED
    assert failed.attempts == 1
    assert failed.error is not None
    assert failed.error.error_class == "invalid_request"
    assert by_id(run)["t0"].status is ItemStatus.COMPLETED
    assert transport.stats.batches_created == 1


def test_a_system_prompt_is_refused_before_the_run_exists(
    runner: BatchRunner, transport: InProcessBatchTransport
) -> None:
    job = embedding_job(
        texts("a", "b"), build_prompt=lambda item: PromptParts(prompt="x", system="be brief")
    )
    with pytest.raises(ConfigurationError, match="takes no system prompt"):
        runner.start(job, "with-system")
    with pytest.raises(RunNotFoundError):
        runner.get_run("with-system")
    assert transport.stats.calls[CREATE] == 0


def test_structured_output_is_refused_for_embeddings() -> None:
    with pytest.raises(ConfigurationError, match="structured output cannot be used"):
        make_job(
            texts("a"),
            structured=Verdict,
            model=EMBEDDING_MODEL,
            endpoint="/v1/embeddings",
        )
