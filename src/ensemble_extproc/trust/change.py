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

Forgetting must not become a way in for one client: after an alarm, a client's capped
evidence would weigh more against what is left. So, with ``max_client_share`` = s < 1:

- each step is clipped to [-K/s, K/s]: a client whose observations are at most a share s
  of a run adds at most s K/s = K per observation on average, which the -K allowance of
  the others' observations cancels, so it cannot drive the sum up by itself;
- an alarm is vetoed (and the sum restarts) when one client sent more than a share s of
  the observations since the sum last left zero: a burst of crafted prompts raises none.
"""

from __future__ import annotations

import math

K = 0.25  # allowance, in standard deviations: smaller shifts are left to the decay
FORGET = 1.0 / 32.0  # share of a changed member's old evidence that is kept
_WARM = 100.0  # questions of history before the detector may raise an alarm
_SD_FLOOR = 0.05
_RUN_CLIENTS = 1024  # distinct clients remembered per run (more only make it more diverse)


class _Run:
    """The clients behind one side of the sum since it last left zero."""

    def __init__(self) -> None:
        self.length = 0
        self.counts: dict[str, int] = {}

    def add(self, client: str) -> None:
        self.length += 1
        if client in self.counts or len(self.counts) < _RUN_CLIENTS:
            self.counts[client] = self.counts.get(client, 0) + 1

    def top_share(self) -> float:
        return max(self.counts.values(), default=0) / self.length if self.length else 0.0

    def clear(self) -> None:
        self.length = 0
        self.counts.clear()


class ChangeDetector:
    """A CUSUM of one member's agreement with the others."""

    def __init__(self, half_life: float, threshold: float, max_client_share: float = 1.0) -> None:
        self._decay = 2.0 ** (-1.0 / half_life)
        self._threshold = threshold
        self._share = max_client_share
        self._clip = K / max_client_share if max_client_share < 1.0 else math.inf
        self._runs = (_Run(), _Run())
        self._restart()

    def _restart(self) -> None:
        self._mass = 0.0
        self._mean = 0.0
        self._square = 0.0
        self._sums = [0.0, 0.0]
        for run in self._runs:
            run.clear()

    def update(self, agreement: float, client: str = "") -> bool:
        """Add one question's agreement (0..1); True when the member has changed."""
        alarm = False
        if self._mass >= _WARM:
            sd = max(math.sqrt(max(self._square - self._mean**2, 0.0)), _SD_FLOOR)
            z = min(self._clip, max(-self._clip, (agreement - self._mean) / sd))
            for side, step in enumerate((z - K, -z - K)):
                self._sums[side] = max(0.0, self._sums[side] + step)
                run = self._runs[side]
                if self._sums[side] > 0.0:
                    run.add(client)
                else:
                    run.clear()
                if self._sums[side] > self._threshold:
                    if self._share >= 1.0 or run.top_share() <= self._share:
                        alarm = True
                    else:  # one client's doing: no alarm, and the sum starts over
                        self._sums[side] = 0.0
                        run.clear()
        if alarm:
            self._restart()
        self._mass = self._decay * self._mass + 1.0
        step = 1.0 / self._mass
        self._mean += step * (agreement - self._mean)
        self._square += step * (agreement * agreement - self._square)
        return alarm
