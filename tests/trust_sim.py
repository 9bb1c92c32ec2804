"""Simulated members for the trust tests (no servers): answers of known accuracy."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping, Sequence

from ensemble_extproc.answers.grouping import components
from ensemble_extproc.trust.fit import set_agreement
from ensemble_extproc.trust.model import (
    MemberEstimate,
    Observation,
    PairEstimate,
    Source,
    TrustView,
)
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


# ------------------------------------------------------------- hand-made views


def _estimate(model: str, accuracy: float, learned: bool = True) -> MemberEstimate:
    return MemberEstimate(
        model=model,
        accuracy=accuracy,
        low=accuracy - 0.03,
        high=accuracy + 0.03,
        evidence=500.0 if learned else 0.0,
        prior=0.7,
        prior_source=Source.DEFAULT,
        learned=learned,
        answered=1000.0,
        failed=0.0,
    )


def _pair(a: str, b: str, kappa: float) -> PairEstimate:
    expected = 0.4
    return PairEstimate(a, b, expected + kappa * (1 - expected), expected, 900.0, 20.0, True)


def trust_view(
    members: Mapping[str, float],
    flagged: Sequence[tuple[str, str, float]] = (),
    learned: bool = True,
    c: float = 1 / 3,
    c_learned: bool = True,
) -> TrustView:
    """What a key learned, made by hand: ``members`` and their accuracies (learned or
    not), ``flagged`` pairs with their kappa, and c (learned or not)."""
    return TrustView(
        key="profile:p",
        members={m: _estimate(m, p, learned) for m, p in members.items()},
        pairs=tuple(_pair(a, b, k) for a, b, k in flagged),
        wrong_agreement=c,
        wrong_agreement_low=c - 0.05,
        wrong_agreement_high=c + 0.05,
        wrong_agreement_learned=c_learned,
        observations=2000,
        mass=700.0,
        top_client_share=0.02,
        client_share_bound=0.2,
        groups=components((a, b) for a, b, _ in flagged),
    )
