"""How far one client can move what was learned (pure).

The per-client cap (``max_client_share``) bounds a client's evidence in a key to
``client_cap`` = max_client_share / (1 - decay), i.e. that share of a key's full evidence.
A client holding mass m of a rate's mass n can move that agreement rate by at most
(m / n) * max(rate, 1 - rate): the rate is a weighted mean of 0s and 1s, and the client's
part of it can be all 0s or all 1s.

An accuracy is a smooth function of the rates (the least-squares fit), so to first order
it moves by dp = H^-1 J^T diag(1/sd) dy (implicit differentiation of the normal
equations at the optimum). ``client_influence`` adds up the worst case of every rate:

    bound_i = sum over rates r of |d p_i / d y_r| * share_r * max(y_r, 1 - y_r)

with share_r = min(1, caps / n_r), ``caps`` the cap times the number of replicas whose
statistics are merged (a client may be at its cap on each of them). The bound holds for
the flags as they are; a client can also make a pair look correlated, by at most the same
share of its agreement (see docs/trust.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

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
    bound = [0.0] * size
    rates: list[tuple[Counts, tuple[int, ...]]] = [(c, (i, j)) for i, j, c in problem.pairs]
    rates += [(c, (i, j, k)) for i, j, k, c in problem.triples]
    for row, (counts, members) in zip(jacobian, rates, strict=False):
        predicted = set_agreement(members, theta)
        sd = math.sqrt(max(predicted * (1.0 - predicted), VAR_FLOOR) / counts.effective)
        share = min(1.0, caps / counts.n) if counts.n > 0 else 1.0
        shift = share * max(counts.rate, 1.0 - counts.rate)
        for a in range(size - 1):
            sensitivity = sum(inv[a][b] * row[b] for b in range(size)) / sd
            bound[a] += abs(sensitivity) * shift
    return {m: min(1.0, bound[i]) for i, m in enumerate(totals.members)}
