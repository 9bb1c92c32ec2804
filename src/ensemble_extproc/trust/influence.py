"""How far one client can move what was learned (pure).

The per-client cap (``max_client_share``) bounds a client's evidence in a key to
``client_cap`` = max_client_share / (1 - decay), i.e. that share of a key's full evidence.
A client holding mass m of a rate's mass n moves that agreement rate by
(m / n) * (a - rate), where a in [0, 1] is how often its own observations agree there.

An accuracy is a smooth function of the rates (the least-squares fit), so to first order
it moves by dp = H^-1 J^T diag(1/sd) dy (implicit differentiation of the normal equations
at the optimum). The client's observations move all rates at once, linearly in how often
it sends each pattern of answers (who agrees with whom, who gives none); so the worst
case is one pattern sent every time, and ``client_influence`` tries every pattern (for up
to 6 members; beyond, it adds up every rate moved the worst way, an upper bound):

    bound_i = max over patterns P of | sum over rates r of (dp_i / dy_r) share_r (P_r - y_r) |

with share_r = min(1, caps / n_r), ``caps`` the cap times the number of replicas whose
statistics are merged (a client may be at its cap on each). tests/test_trust_poisoning.py
checks that crafted bursts stay within it, and come close. The bound holds for the flags
as they are; a client can also make a pair look correlated, by at most its share of that
pair's agreement (see docs/trust.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

from .fit import VAR_FLOOR, Fit, Rates, normal_equations, set_agreement, standardised_rows
from .linalg import SingularError, inverse
from .model import TrustSettings
from .stats import Counts, Totals


def client_influence(
    result: Fit,
    totals: Totals,
    priors: Mapping[str, float],
    settings: TrustSettings,
    replicas: int = 1,
) -> dict[str, float]:
    """Per member: the most one capped client can move its fitted accuracy (first order)."""
    problem = Rates(totals, priors, settings).problem(
        frozenset((p.a, p.b) for p in result.view.flagged)
    )
    theta = [result.accuracies[m] for m in totals.members] + [result.wrong_agreement]
    residuals, jacobian = standardised_rows(problem, theta)
    size = len(theta)
    hessian, _ = normal_equations(residuals, jacobian, size)
    try:
        inv = inverse(hessian)
    except SingularError:
        return dict.fromkeys(totals.members, 1.0)
    caps = settings.client_cap * max(1, replicas)
    rates: list[tuple[Counts, tuple[int, ...]]] = [(c, (i, j)) for i, j, c in problem.pairs]
    rates += [(c, (i, j, k)) for i, j, k, c in problem.triples]
    # Per rate r: how far the client can move it (its share of the rate's evidence times
    # the distance to 0 or 1 is reached by agreeing, or not), and dp/dy_r per member.
    shares, observed, sensitivity = [], [], []
    for row, (counts, members) in zip(jacobian, rates, strict=False):
        predicted = set_agreement(members, theta)
        sd = math.sqrt(max(predicted * (1.0 - predicted), VAR_FLOOR) / counts.effective)
        shares.append(min(1.0, caps / counts.n) if counts.n > 0 else 1.0)
        observed.append(counts.rate)
        sensitivity.append(
            [sum(inv[a][b] * row[b] for b in range(size)) / sd for a in range(size - 1)]
        )
    groups = [members for _, members in rates]
    n = len(totals.members)
    bound = [0.0] * n
    if n <= _EXACT_MEMBERS:
        # The shift is linear in how often the client sends each pattern of answers, so
        # its worst case is one pattern sent every time: try them all.
        for pattern in _patterns(n):
            moves = [
                share * ((1.0 if _agree(pattern, g) else 0.0) - y)
                if all(pattern[i] >= 0 for i in g)
                else 0.0
                for share, y, g in zip(shares, observed, groups, strict=True)
            ]
            for a in range(n):
                shift = abs(sum(s[a] * m for s, m in zip(sensitivity, moves, strict=True)))
                bound[a] = max(bound[a], shift)
    else:
        # Too many patterns: every rate moved the worst way at once (an upper bound).
        for share, y, s in zip(shares, observed, sensitivity, strict=True):
            for a in range(n):
                bound[a] += abs(s[a]) * share * max(y, 1.0 - y)
    return {m: min(1.0, bound[i]) for i, m in enumerate(totals.members)}


# Up to this many members every pattern of a crafted observation is tried (Bell(n + 1):
# 877 patterns for 6 members).
_EXACT_MEMBERS = 6


def _agree(pattern: Sequence[int], group: Sequence[int]) -> bool:
    first = pattern[group[0]]
    return all(pattern[i] == first for i in group)


def _patterns(n: int) -> Iterator[tuple[int, ...]]:
    """Every way n members can answer one question, up to renaming the answers: each
    member gets an answer label (restricted growth: a new label is the next unused one) or
    -1 for "no answer" (it failed, or was not asked)."""

    def extend(prefix: tuple[int, ...], labels: int) -> Iterator[tuple[int, ...]]:
        if len(prefix) == n:
            yield prefix
            return
        for label in range(-1, labels + 1):
            yield from extend((*prefix, label), max(labels, label + 1))

    yield from extend((), 0)
