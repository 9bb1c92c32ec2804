"""What the upstream records per ensemble: the log line's call fields (the response
summary's, projected) and the circuit gauges (read when scraped)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from ensemble_extproc.observability.metrics import UpstreamMetrics, generate_latest
from ensemble_extproc.strategies import Candidate, Failure, Role, Status
from ensemble_extproc.upstream.response import LOG_FIELDS, log_fields, summarise

ANSWER = {"role": "assistant", "content": "Paris."}
CANDIDATES = {
    "valid": Candidate("m1", Status.OK, message=ANSWER, finish_reason="stop", latency_ms=12.34),
    "judge": Candidate("j", Status.OK, message=ANSWER, role=Role.JUDGE, attempts=2),
    "filtered": Candidate("m2", Status.OK, message=ANSWER, finish_reason="content_filter"),
    "empty": Candidate("m3", Status.OK, message={"role": "assistant", "content": " "}),
    "http error": Candidate(
        "m4", Status.ERROR, error="HTTP 500", failure=Failure.HTTP, http_status=500
    ),
    "timeout": Candidate("m5", Status.TIMEOUT, latency_ms=8000.04, error="no answer"),
    "cancelled": Candidate("m6", Status.CANCELLED, error="cancelled: decided"),
}


@pytest.mark.parametrize("candidate", CANDIDATES.values(), ids=CANDIDATES.keys())
def test_log_fields_are_the_summary_fields(candidate: Candidate) -> None:
    summary = summarise(candidate)
    assert log_fields(candidate) == {name: getattr(summary, name) for name in LOG_FIELDS}


def test_circuit_gauges_read_the_states_when_scraped() -> None:
    states = {"a": "closed", "b": "closed"}
    metrics = UpstreamMetrics(CollectorRegistry())
    metrics.watch_circuits(lambda: states)

    def scraped() -> str:
        return generate_latest(metrics.registry).decode()

    assert 'ensemble_circuit_state{endpoint="b",state="closed"} 1.0' in scraped()
    states["b"] = "open"
    assert 'ensemble_circuit_state{endpoint="b",state="open"} 1.0' in scraped()
    assert 'ensemble_circuit_state{endpoint="b",state="closed"} 0.0' in scraped()
    states["b"] = "half_open"
    assert 'ensemble_circuit_state{endpoint="b",state="half_open"} 1.0' in scraped()
    assert 'ensemble_circuit_state{endpoint="a",state="closed"} 1.0' in scraped()
