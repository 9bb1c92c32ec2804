"""Change detection: notice when a member suddenly answers differently (a model update).

Decay alone follows a change slowly: ``half_life`` questions after a model drops from 0.9
to 0.5, half of its evidence is still from before. So each member's agreement with the
others (the share of the other members that gave its answer) is watched by a two-sided
CUSUM (Page's cumulative sum) against its long-run mean and standard deviation (an
exponential average with the key's half-life):

    S+ = max(0, S+ + z - K),  S- = max(0, S- - z - K),  z = (x - mean) / sd

A shift of the mean by d standard deviations raises an alarm after about
threshold / (d - K) questions (a 0.9 model dropping to 0.5 among four 0.6 ones: within
200 questions). Without a shift the default threshold (25, K 0.25) stayed silent over
400,000 member-questions of simulated steady traffic; threshold 10 does not
(tests/test_trust_change.py). On an alarm the key forgets most of its old evidence
about that member (``FORGET``) and the long-run mean starts over.

A change of the *other* members moves this agreement too; they raise their own alarms.
"""

from __future__ import annotations

import math

K = 0.25  # allowance, in standard deviations: smaller shifts are left to the decay
FORGET = 1.0 / 32.0  # share of a changed member's old evidence that is kept
_WARM = 100.0  # questions of history before the detector may raise an alarm
_SD_FLOOR = 0.05


class ChangeDetector:
    """A CUSUM of one member's agreement with the others."""

    def __init__(self, half_life: float, threshold: float) -> None:
        self._decay = 2.0 ** (-1.0 / half_life)
        self._threshold = threshold
        self._restart()

    def _restart(self) -> None:
        self._mass = 0.0
        self._mean = 0.0
        self._square = 0.0
        self._high = 0.0
        self._low = 0.0

    def update(self, agreement: float) -> bool:
        """Add one question's agreement (0..1); True when the member has changed."""
        alarm = False
        if self._mass >= _WARM:
            sd = max(math.sqrt(max(self._square - self._mean**2, 0.0)), _SD_FLOOR)
            z = (agreement - self._mean) / sd
            self._high = max(0.0, self._high + z - K)
            self._low = max(0.0, self._low - z - K)
            alarm = max(self._high, self._low) > self._threshold
        if alarm:
            self._restart()
        self._mass = self._decay * self._mass + 1.0
        step = 1.0 / self._mass
        self._mean += step * (agreement - self._mean)
        self._square += step * (agreement * agreement - self._square)
        return alarm
