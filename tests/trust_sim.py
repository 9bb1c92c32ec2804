"""Simulated members for the trust tests (no servers): answers of known accuracy."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping, Sequence

from ensemble_extproc.trust.fit import set_agreement
from ensemble_extproc.trust.model import Observation
from ensemble_extproc.trust.stats import Counts, Totals


def answers(
    accuracies: Mapping[str, float],
    rng: random.Random,
    distractors: int = 3,
    clones: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """One question: 0 is right, 1..distractors wrong; a clone copies its source."""
    out = {
        name: 0 if rng.random() < p else rng.randint(1, distractors)
        for name, p in accuracies.items()
    }
    for clone, source in (clones or {}).items():
        out[clone] = out[source]
    return out


def stream(
    accuracies: Mapping[str, float],
    seed: int,
    count: int,
    clones: Mapping[str, str] | None = None,
    clients: int = 100,
    distractors: int = 3,
) -> Iterator[Observation]:
    rng = random.Random(seed)
    for _ in range(count):
        yield Observation(
            answers(accuracies, rng, distractors, clones), client=f"c{rng.randrange(clients)}"
        )


def exact_totals(
    accuracies: Sequence[float], c: float, n: float = 1e6, names: Sequence[str] | None = None
) -> Totals:
    """Statistics as infinitely many questions of independent members would give them."""
    members = tuple(names or [f"m{i}" for i in range(len(accuracies))])
    theta = [*accuracies, c]

    def counts(group: tuple[int, ...]) -> Counts:
        return Counts(n, n, n * set_agreement(group, theta))

    index = range(len(members))
    return Totals(
        members=members,
        answered=dict.fromkeys(members, n),
        failed={},
        pairs={
            (members[i], members[j]): counts((i, j)) for i, j in itertools.combinations(index, 2)
        },
        triples={
            (members[i], members[j], members[k]): counts((i, j, k))
            for i, j, k in itertools.combinations(index, 3)
        },
        mass=n,
        observations=int(n),
    )
