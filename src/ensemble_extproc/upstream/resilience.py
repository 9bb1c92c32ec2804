"""Per-endpoint retries and circuit breakers (pure state machines; the clock is injected)."""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from enum import StrEnum

from ..config.model import BreakerPolicy, RetryPolicy
from ..strategies import Candidate, Failure, Status

# HTTP statuses worth another try: overload and transient server errors.
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


def retry_delay(
    policy: RetryPolicy, attempt: int, retry_after: float | None, rng: random.Random
) -> float:
    """Seconds to wait before try ``attempt + 1``: the server's Retry-After when it gave
    one, else exponential backoff with jitter (x0.5 to x1.5), capped."""
    if retry_after is not None:
        return retry_after
    base = min(policy.backoff_ms * 2.0**attempt, policy.max_backoff_ms) / 1000
    return base * rng.uniform(0.5, 1.5)


def retryable(candidate: Candidate) -> bool:
    """Connection errors, 429 and 5xx; never a timeout (the time is gone) or a bad answer."""
    if candidate.failure is Failure.HTTP:
        return candidate.http_status in RETRYABLE_STATUSES
    return candidate.failure is Failure.CONNECTION


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed: calls go through. ``failures`` failures within ``window_seconds`` open it:
    calls are skipped for ``cooldown_seconds``; then one probe goes through (half open),
    and its result closes or reopens the circuit."""

    def __init__(self, policy: BreakerPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._clock = clock
        self._failures: deque[float] = deque()
        self.state = CircuitState.CLOSED
        self._opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        if self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            if self._clock() - self._opened_at < self._policy.cooldown_seconds:
                return False
            self.state = CircuitState.HALF_OPEN
        if self._probing:
            return False  # one probe at a time
        self._probing = True
        return True

    def abandon(self) -> None:
        """A call let through was cancelled before it said anything about the endpoint."""
        self._probing = False

    def record(self, success: bool) -> None:
        now = self._clock()
        if self.state is CircuitState.HALF_OPEN:
            self._probing = False
            if success:
                self.state = CircuitState.CLOSED
                self._failures.clear()
            else:
                self._open(now)
            return
        if success:
            return
        self._failures.append(now)
        while self._failures and now - self._failures[0] > self._policy.window_seconds:
            self._failures.popleft()
        if len(self._failures) >= self._policy.failures:
            self._open(now)

    def _open(self, now: float) -> None:
        self.state = CircuitState.OPEN
        self._opened_at = now
        self._failures.clear()

    def reopens_in(self) -> float:
        return max(0.0, self._policy.cooldown_seconds - (self._clock() - self._opened_at))


def endpoint_failed(candidate: Candidate) -> bool:
    """What counts against an endpoint's circuit: no answer in time, 429/5xx, or an answer
    that is not a completion. A 4xx is the request's fault (one client's bad field must
    not shut an endpoint for everyone); an empty or filtered completion is the model's."""
    if candidate.status is Status.TIMEOUT:
        return True
    if candidate.failure is Failure.HTTP:
        return candidate.http_status in RETRYABLE_STATUSES
    return candidate.failure is not None
