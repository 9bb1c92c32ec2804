"""Retry delays, what is retryable, and the circuit breaker's states (injected clock)."""

from __future__ import annotations

import random

import pytest

from ensemble_extproc.config.model import BreakerPolicy, RetryPolicy
from ensemble_extproc.strategies import Candidate, Failure, Status
from ensemble_extproc.upstream.client import retry_after_seconds
from ensemble_extproc.upstream.resilience import (
    CircuitBreaker,
    CircuitState,
    retry_delay,
    retryable,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (
            Candidate(
                "m", Status.ERROR, error="HTTP 500: x", http_status=500, failure=Failure.HTTP
            ),
            True,
        ),
        (
            Candidate(
                "m", Status.ERROR, error="HTTP 429: x", http_status=429, failure=Failure.HTTP
            ),
            True,
        ),
        (
            Candidate(
                "m", Status.ERROR, error="HTTP 400: x", http_status=400, failure=Failure.HTTP
            ),
            False,
        ),
        (
            Candidate(
                "m",
                Status.ERROR,
                error="request failed: ClientConnectorError",
                failure=Failure.CONNECTION,
            ),
            True,
        ),
        (
            Candidate("m", Status.ERROR, error="answer is not JSON", failure=Failure.BAD_ANSWER),
            False,
        ),
        (Candidate("m", Status.TIMEOUT, error="no answer"), False),
        (Candidate("m", Status.OK, {"content": "x"}, "stop"), False),
    ],
)
def test_retryable(candidate: Candidate, expected: bool) -> None:
    assert retryable(candidate) is expected


def test_retry_delay_backs_off_with_jitter_and_honours_retry_after() -> None:
    policy = RetryPolicy(attempts=5, backoff_ms=100, max_backoff_ms=300)
    rng = random.Random(1)
    delays = [retry_delay(policy, attempt, None, rng) for attempt in range(4)]
    for attempt, delay in enumerate(delays):
        base = min(0.1 * 2**attempt, 0.3)
        assert 0.5 * base <= delay <= 1.5 * base
    assert retry_delay(policy, 0, 2.5, rng) == 2.5


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), (None, None), ("", None), ("soon", None), ("Thu, 01 Jan 1970 00:00:00 GMT", 0.0)],
)
def test_retry_after_header(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value) == expected


def test_circuit_breaker_opens_cools_down_and_probes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(
        BreakerPolicy(failures=3, window_seconds=10, cooldown_seconds=5), clock
    )
    for _ in range(2):
        assert breaker.allow()
        breaker.record(False)
    assert breaker.state is CircuitState.CLOSED
    breaker.record(False)
    assert breaker.state is CircuitState.OPEN
    assert not breaker.allow()
    clock.now = 5.1
    assert breaker.allow()  # the probe
    assert breaker.state is CircuitState.HALF_OPEN
    assert not breaker.allow()  # one probe at a time
    breaker.record(False)
    assert breaker.state is CircuitState.OPEN
    clock.now = 10.2
    assert breaker.allow()
    breaker.record(True)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allow()


def test_failures_outside_the_window_do_not_count() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerPolicy(failures=2, window_seconds=1, cooldown_seconds=5), clock)
    breaker.record(False)
    clock.now = 2.0
    breaker.record(False)
    assert breaker.state is CircuitState.CLOSED


def test_an_abandoned_probe_lets_the_next_one_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerPolicy(failures=1, window_seconds=1, cooldown_seconds=1), clock)
    breaker.record(False)
    clock.now = 1.5
    assert breaker.allow()
    breaker.abandon()
    assert breaker.allow()


@pytest.mark.parametrize(
    ("candidate", "failed"),
    [
        (
            Candidate(
                "m",
                Status.ERROR,
                error="HTTP 400: bad top_p",
                http_status=400,
                failure=Failure.HTTP,
            ),
            False,
        ),
        (
            Candidate(
                "m", Status.ERROR, error="HTTP 429: slow", http_status=429, failure=Failure.HTTP
            ),
            True,
        ),
        (
            Candidate(
                "m", Status.ERROR, error="HTTP 503: x", http_status=503, failure=Failure.HTTP
            ),
            True,
        ),
        (
            Candidate("m", Status.ERROR, error="request failed: reset", failure=Failure.CONNECTION),
            True,
        ),
        (Candidate("m", Status.TIMEOUT, error="late"), True),
        (Candidate("m", Status.OK, {"content": ""}, "stop"), False),
    ],
)
def test_what_counts_against_the_circuit(candidate: Candidate, failed: bool) -> None:
    from ensemble_extproc.upstream.resilience import endpoint_failed

    assert endpoint_failed(candidate) is failed
