"""Decayed sufficient statistics of one key: all the estimator remembers.

Per key (a profile or a model set) the estimator keeps, for every member, pair and
triple of members, exponentially decayed counts of the questions they answered and on
which they agreed. Everything learned (accuracies, the wrong-answer agreement c,
correlated pairs) is a function of these counts alone, so they are:

- bounded: O(n^3) numbers for n members, whatever the traffic;
- mergeable: the statistics of two replicas add up (``Totals.merged``);
- independent of the estimates: old evidence is never re-interpreted, and nothing that a
  strategy decided feeds back into what is learned.

Decay is per observation of the key: each new ensemble multiplies all older evidence by
``decay`` = 2^(-1 / half_life). It is applied lazily: increments are scaled up by
decay^-t instead of scaling every count down at each step. Besides the counts, each
member has a change detector (``trust.change``), local to the process: when it fires, the
member's counts are scaled down (``forget``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .change import FORGET, ChangeDetector
from .model import Observation

K = TypeVar("K")
V = TypeVar("V", int, float, "Counts")
Pair = tuple[str, str]
Triple = tuple[str, str, str]

# Rescale the lazy counters before decay^-2t overflows a float.
_RESCALE_AT = 1e120
# Clients whose mass is kept in snapshots (the largest; the rest hold almost nothing).
SNAPSHOT_CLIENTS = 256


@dataclass(frozen=True, slots=True)
class Counts:
    """Decayed counts of one member set (a pair or a triple): questions all of them
    answered (``n``, and the sum of squared weights ``n2`` for the effective sample size)
    and questions on which they all agreed."""

    n: float = 0.0
    n2: float = 0.0
    agree: float = 0.0

    @property
    def rate(self) -> float:
        return self.agree / self.n if self.n > 0 else 0.0

    @property
    def effective(self) -> float:
        """Kish's effective sample size of the decayed counts: n^2 / n2."""
        return self.n * self.n / self.n2 if self.n2 > 0 else 0.0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.n + other.n, self.n2 + other.n2, self.agree + other.agree)


@dataclass(frozen=True, slots=True)
class Totals:
    """The statistics of a key in plain (already decayed) units: what is fitted, saved
    and merged."""

    members: tuple[str, ...]
    answered: Mapping[str, float]
    failed: Mapping[str, float]
    pairs: Mapping[Pair, Counts]
    triples: Mapping[Triple, Counts]
    mass: float = 0.0  # decayed number of accepted observations
    observations: int = 0  # accepted, ever
    rejected: int = 0  # refused by the client cap, ever
    # Largest single client's mass and share of ``mass`` (for a merge: the largest share).
    top_client_mass: float = 0.0
    top_client_share: float = 0.0
    clients: Mapping[str, float] = field(default_factory=dict)
    # Per member: sudden changes detected (each one forgot most of its evidence).
    changes: Mapping[str, int] = field(default_factory=dict)

    def merged(self, other: Totals) -> Totals:
        """The statistics of both: counts add (replicas saw different questions).

        Members are the union; the client share is the larger of the two (a client's
        share of a sum is at most its largest share of a part)."""
        members = tuple(dict.fromkeys((*self.members, *other.members)))
        return Totals(
            members=members,
            answered=_add(self.answered, other.answered),
            failed=_add(self.failed, other.failed),
            pairs=_add(self.pairs, other.pairs),
            triples=_add(self.triples, other.triples),
            mass=self.mass + other.mass,
            observations=self.observations + other.observations,
            rejected=self.rejected + other.rejected,
            top_client_mass=max(self.top_client_mass, other.top_client_mass),
            top_client_share=max(self.top_client_share, other.top_client_share),
            changes=_add(self.changes, other.changes),
        )

    def restricted(self, members: Iterable[str]) -> Totals:
        """Only the statistics of ``members`` (a profile lost a model in a config change)."""
        keep = tuple(m for m in members if m in set(self.members))
        kept = set(keep)
        return Totals(
            members=keep,
            answered={m: v for m, v in self.answered.items() if m in kept},
            failed={m: v for m, v in self.failed.items() if m in kept},
            pairs={k: v for k, v in self.pairs.items() if set(k) <= kept},
            triples={k: v for k, v in self.triples.items() if set(k) <= kept},
            mass=self.mass,
            observations=self.observations,
            rejected=self.rejected,
            top_client_mass=self.top_client_mass,
            top_client_share=self.top_client_share,
            clients=self.clients,
            changes={m: v for m, v in self.changes.items() if m in kept},
        )


def _add(a: Mapping[K, V], b: Mapping[K, V]) -> dict[K, V]:
    out = dict(a)
    for key, value in b.items():
        out[key] = out[key] + value if key in out else value
    return out


class KeyStats:
    """The live, lazily decayed statistics of one key, with the per-client cap.

    Internally every counter holds sum(decay^-s x_s) over observations s; the true decayed
    value at step t is that times decay^t (= counter / scale).
    """

    def __init__(
        self,
        members: Iterable[str],
        decay: float,
        client_cap: float,
        change_threshold: float | None = None,
    ) -> None:
        self.members = tuple(members)
        self._member_set = frozenset(self.members)
        self._decay = decay
        self._grow = 1.0 / decay
        self._client_cap = client_cap
        self._scale = 1.0  # decay^-t since the last rescale
        self._answered: dict[str, float] = {}
        self._failed: dict[str, float] = {}
        # Pair and triple counters: [n, n2, agree] (n2 is kept in squared scale).
        self._pairs: dict[Pair, list[float]] = {}
        self._triples: dict[Triple, list[float]] = {}
        self._mass = 0.0
        self._clients: dict[str, float] = {}
        self.observations = 0
        self.rejected = 0
        # Per member: its change detector (None: detection off), and changes seen.
        half_life = math.log(0.5) / math.log(decay)
        share = min(1.0, client_cap * (1.0 - decay))  # the cap as a share of full evidence
        self._detectors = (
            {m: ChangeDetector(half_life, change_threshold, share) for m in self.members}
            if change_threshold is not None
            else {}
        )
        self.changes: dict[str, int] = {}

    # ------------------------------------------------------------------- updates

    def client_mass(self, client: str) -> float:
        return self._clients.get(client, 0.0) / self._scale

    @property
    def mass(self) -> float:
        return self._mass / self._scale

    def admits(self, client: str) -> bool:
        """True when one more observation keeps ``client`` within its cap."""
        return self.client_mass(client) + 1.0 <= self._client_cap + 1e-9

    def add(self, observation: Observation, max_clients: int) -> bool:
        """Count one observation; False (and nothing counted) when its client is capped.

        A refused observation does not advance the decay either: otherwise a capped client
        could wash out everyone else's evidence by sending more.
        """
        if not self.admits(observation.client):
            self.rejected += 1
            return False
        self._scale *= self._grow
        if self._scale > _RESCALE_AT:
            self._rescale()
        g = self._scale
        g2 = g * g
        self._mass += g
        self._count_client(observation.client, g, max_clients)
        answers = {m: a for m, a in observation.answers.items() if m in self._member_set}
        for member in answers:
            self._answered[member] = self._answered.get(member, 0.0) + g
        for member in observation.failed:
            if member in self._member_set and member not in answers:
                self._failed[member] = self._failed.get(member, 0.0) + g
        present = sorted(answers)
        tables: tuple[dict[Any, list[float]], ...] = (self._pairs, self._triples)
        for size, counters in enumerate(tables, start=2):
            for names in itertools.combinations(present, size):
                counter = counters.setdefault(names, [0.0, 0.0, 0.0])
                counter[0] += g
                counter[1] += g2
                if len({answers[m] for m in names}) == 1:
                    counter[2] += g
        self.observations += 1
        self._detect(answers, observation.client)
        return True

    def _detect(self, answers: Mapping[str, int], client: str) -> None:
        if len(answers) < 2 or not self._detectors:
            return
        others = len(answers) - 1
        changed = [
            member
            for member, answer in answers.items()
            if self._detectors[member].update(
                (sum(a == answer for a in answers.values()) - 1) / others, client
            )
        ]
        for member in changed:
            self.forget(member, FORGET)
            self.changes[member] = self.changes.get(member, 0) + 1

    def forget(self, member: str, keep: float) -> None:
        """Keep only ``keep`` of the evidence about ``member`` (it changed)."""
        for table in (self._answered, self._failed):
            if member in table:
                table[member] *= keep
        for counters in (self._pairs, self._triples):
            for names, counter in counters.items():
                if member in names:
                    counter[0] *= keep
                    counter[1] *= keep * keep
                    counter[2] *= keep

    def _count_client(self, client: str, g: float, max_clients: int) -> None:
        if client not in self._clients and len(self._clients) >= max_clients:
            # Forget the smallest: it holds at most mass / max_clients, so the cap can be
            # exceeded by at most that much through eviction.
            smallest = min(self._clients, key=self._clients.__getitem__)
            del self._clients[smallest]
        self._clients[client] = self._clients.get(client, 0.0) + g

    def _rescale(self) -> None:
        s, s2 = 1.0 / self._scale, 1.0 / (self._scale * self._scale)
        for table in (self._answered, self._failed, self._clients):
            for key in table:
                table[key] *= s
        for counters in (self._pairs, self._triples):
            for counter in counters.values():
                counter[0] *= s
                counter[1] *= s2
                counter[2] *= s
        self._mass *= s
        self._scale = 1.0

    # --------------------------------------------------------------------- reads

    def totals(self) -> Totals:
        s = 1.0 / self._scale
        s2 = s * s
        mass = self._mass * s
        top = max(self._clients.values(), default=0.0) * s
        largest = sorted(self._clients.items(), key=lambda kv: -kv[1])[:SNAPSHOT_CLIENTS]
        return Totals(
            members=self.members,
            answered={m: v * s for m, v in self._answered.items()},
            failed={m: v * s for m, v in self._failed.items()},
            pairs={k: Counts(c[0] * s, c[1] * s2, c[2] * s) for k, c in self._pairs.items()},
            triples={k: Counts(c[0] * s, c[1] * s2, c[2] * s) for k, c in self._triples.items()},
            mass=mass,
            observations=self.observations,
            rejected=self.rejected,
            top_client_mass=top,
            top_client_share=top / mass if mass > 0 else 0.0,
            clients={client: raw * s for client, raw in largest},
            changes=dict(self.changes),
        )

    @classmethod
    def from_totals(
        cls, totals: Totals, decay: float, client_cap: float, change_threshold: float | None = None
    ) -> KeyStats:
        """Live statistics that continue from saved ones (a restart)."""
        stats = cls(totals.members, decay, client_cap, change_threshold)
        stats._answered = dict(totals.answered)
        stats._failed = dict(totals.failed)
        stats._pairs = {k: [c.n, c.n2, c.agree] for k, c in totals.pairs.items()}
        stats._triples = {k: [c.n, c.n2, c.agree] for k, c in totals.triples.items()}
        stats._mass = totals.mass
        stats._clients = dict(totals.clients)
        stats.observations = totals.observations
        stats.rejected = totals.rejected
        stats.changes = dict(totals.changes)
        return stats
