"""Admission of adaptive ensembles: a sampling rate and a cap per second.

The only stateful part of the decision: one gate per processor process (so the cap is
per replica). Sampling hashes Envoy's ``x-request-id``, so a retried request gets the same
answer; requests without one are sampled at random.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable


class AdmissionGate:
    def __init__(
        self,
        sample_rate: float = 1.0,
        max_per_second: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._sample_rate = sample_rate
        self._rate = max_per_second
        self._clock = clock
        self._rng = rng or random.Random()
        # Token bucket: a burst of up to one second's worth.
        self._capacity = max(1.0, max_per_second or 0.0)
        self._tokens = self._capacity
        self._last = clock()

    def _sampled(self, request_id: str | None) -> bool:
        if self._sample_rate >= 1.0:
            return True
        if request_id:
            digest = hashlib.sha256(request_id.encode()).digest()
            fraction = int.from_bytes(digest[:8], "big") / 2**64
        else:
            fraction = self._rng.random()
        return fraction < self._sample_rate

    def _take_token(self) -> bool:
        if self._rate is None:
            return True
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def admit(self, request_id: str | None) -> tuple[bool, str]:
        """Whether a low-confidence request may be ensembled, and if not, why."""
        if not self._sampled(request_id):
            return False, "not sampled"
        if not self._take_token():
            return False, "rate cap reached"
        return True, ""
