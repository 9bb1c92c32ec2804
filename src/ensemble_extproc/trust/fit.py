"""Accuracies from agreement: the one-coin model fitted to decayed agreement rates.

The model (one-coin Dawid-Skene, with an open answer space): on every question, member i
is right with probability p_i, independently of the others; when wrong, it names a
wrong answer, and two wrong answers to the same question agree with probability c
(c = 1/k when wrong answers spread evenly over k plausible ones). Then, for independent
members, the probability that a pair, and a triple, agree is

    A_ij  = p_i p_j + c (1 - p_i)(1 - p_j)
    T_ijk = p_i p_j p_k + c^2 (1 - p_i)(1 - p_j)(1 - p_k)

(the triple formula takes wrong answers to be spread evenly, so that three of them
agree with probability c^2). With three or more members the p_i follow from the pair
rates alone when c is known (e.g. with c = 0, p_i = sqrt(A_ij A_ik / A_jk)); the triple
rates make c identifiable too, even when every member has the same accuracy.

``fit`` finds p (and c) by weighted least squares over the observed rates, each weighted
by its inverse variance A (1 - A) / n_eff, plus the priors (configured accuracies) as
pseudo-observations worth ``prior_strength`` labelled questions; Gauss-Newton with
Levenberg damping, warm-started from the previous fit. A sandwich covariance (the rates
share questions, see ``_covariance``) gives each p_i a standard error, hence its 95 %
interval and its *evidence*: the number of labelled questions that would give the same
interval, minus the prior's own.

Correlated members break the model: clones agree on every answer, right or wrong. A pair
whose observed agreement exceeds the fitted expectation by at least ``min_excess`` and by
``flag_z`` standard errors stands out; clusters of such members are *flagged* (chosen by
``_Search``, whole clusters at a time), and their pairs (and the triples containing one)
are left out of the fit. Members then keep their own accuracy, estimated from the pairs
they form with independent members.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..answers.grouping import components
from .linalg import SingularError, inverse, solve_vector
from .model import MemberEstimate, PairEstimate, Source, TrustSettings, TrustView, interval
from .stats import Counts, Pair, Totals

_P_MIN, _P_MAX = 1e-3, 1.0 - 1e-3
VAR_FLOOR = 1e-3
_MAX_ITERATIONS = 40
_TOLERANCE = 1e-6
# A pair or triple with less effective evidence than this says nothing yet.
_MIN_EFFECTIVE = 2.0


@dataclass(frozen=True, slots=True)
class Prior:
    accuracy: float
    source: Source


@dataclass(frozen=True, slots=True)
class Fit:
    view: TrustView
    # Where the next fit starts (warm start): accuracies, and c.
    accuracies: Mapping[str, float]
    wrong_agreement: float


@dataclass(slots=True)
class Problem:
    """One least-squares problem: the rates that take part, and the priors."""

    members: tuple[str, ...]
    pairs: list[tuple[int, int, Counts]]
    triples: list[tuple[int, int, int, Counts]]
    priors: list[float]
    prior_strength: float
    learn_c: bool
    c_prior: float
    c_strength: float


class Rates:
    """A key's agreement rates with enough evidence, indexed by member: the problems of
    every choice of flagged pairs."""

    def __init__(
        self, totals: Totals, priors: Mapping[str, float], settings: TrustSettings
    ) -> None:
        self.members = totals.members
        self.learn_c = settings.k is None
        self.c_prior = settings.wrong_agreement_prior if settings.k is None else 1.0 / settings.k
        self._settings = settings
        self._priors = [priors[m] for m in self.members]
        index = {m: i for i, m in enumerate(self.members)}
        self.pairs = {
            name: (index[name[0]], index[name[1]], counts)
            for name, counts in sorted(totals.pairs.items())
            if set(name) <= index.keys() and counts.effective >= _MIN_EFFECTIVE
        }
        self._triples = [
            (name, (index[name[0]], index[name[1]], index[name[2]], counts))
            for name, counts in sorted(totals.triples.items())
            if set(name) <= index.keys() and counts.effective >= _MIN_EFFECTIVE
        ]

    def problem(self, flagged: frozenset[Pair]) -> Problem:
        """Without the flagged pairs, and the triples that contain one."""
        return Problem(
            members=self.members,
            pairs=[row for name, row in self.pairs.items() if name not in flagged],
            triples=[
                row for (a, b, c), row in self._triples if not ({(a, b), (a, c), (b, c)} & flagged)
            ],
            priors=self._priors,
            prior_strength=self._settings.prior_strength,
            learn_c=self.learn_c,
            c_prior=self.c_prior,
            c_strength=self._settings.wrong_agreement_prior_strength,
        )


def fit(
    totals: Totals,
    priors: Mapping[str, Prior],
    settings: TrustSettings,
    *,
    key: str = "",
    start: Fit | None = None,
) -> Fit:
    """The estimate of one key from its statistics (pure: same input, same output)."""
    members = totals.members
    rates = Rates(totals, {m: priors[m].accuracy for m in members}, settings)
    theta = [
        _clip(start.accuracies.get(m, priors[m].accuracy) if start else priors[m].accuracy)
        for m in members
    ]
    theta.append(start.wrong_agreement if start and rates.learn_c else rates.c_prior)
    previous = frozenset((p.a, p.b) for p in start.view.flagged) if start else frozenset()
    origin = [priors[m].accuracy for m in members] + [rates.c_prior]
    search = _Search(rates, settings, frozenset(previous & rates.pairs.keys()), origin)
    flagged, theta = search.run(theta)
    estimates = [
        _pair_estimate(name, counts, i, j, theta, name in flagged)
        for name, (i, j, counts) in rates.pairs.items()
    ]
    index = {m: i for i, m in enumerate(members)}
    same = {index[m]: index[group[0]] for group in components(flagged) for m in group}
    covariance = _covariance(rates.problem(flagged), theta, same)
    was_learned = (
        frozenset(m for m, e in start.view.members.items() if e.learned) if start else frozenset()
    )
    view = _view(
        key, totals, priors, settings, theta, covariance, estimates, rates.learn_c, was_learned
    )
    return Fit(view, dict(zip(members, theta[:-1], strict=True)), theta[-1])


# Candidate clusters are all subsets of the members involved when there are at most this
# many; beyond, pairs and triples only (the number of subsets grows as 2^n).
_EXHAUSTIVE_MEMBERS = 6
# A cluster stays flagged while removing it would cost at least this share of the penalty.
_HYSTERESIS = 0.5


class _Search:
    """Which members move together: the set of flagged clusters with the lowest penalised
    cost.

    Greedy over clusters, not pairs: three clones are one cluster of three. Taking pairs
    one at a time can pick the wrong explanation (three clones that always agree look
    like three perfect models, and then the two independent members look correlated);
    comparing whole clusters by the fit they leave, with a penalty of flag_z^2 per
    cluster, picks the clones. Each new pair of a cluster must also stand out on its own
    (excess >= min_excess and z >= flag_z against that fit).

    The search runs when a pair stands out against the current fit, or when the fit as a
    whole is poor (its cost exceeds the number of rates by more than one penalty): a
    clone pair left in the fit can drag it to an optimum where no single pair stands out
    but nothing fits well (e.g. c = 1, the clones perfect and everyone else at 0.5).
    """

    def __init__(
        self,
        rates: Rates,
        settings: TrustSettings,
        flagged: frozenset[Pair],
        origin: Sequence[float],
    ) -> None:
        self._problem = rates.problem
        self._origin = origin
        self._settings = settings
        self._pairs = rates.pairs
        self._penalty = settings.flag_z**2
        self._flagged = flagged
        self._fits: dict[frozenset[Pair], tuple[list[float], float]] = {}

    def _fit(
        self, flagged: frozenset[Pair], start: Sequence[float], fresh: bool = False
    ) -> tuple[list[float], float]:
        """The fit without ``flagged``, from ``start``; with ``fresh``, also from the
        priors, keeping the better one (the optimum of one flag set can be a poor start
        for another: e.g. c = 1 with perfect clones)."""
        if flagged not in self._fits:
            problem = self._problem(flagged)
            fits = []
            for origin in (start, self._origin) if fresh else (start,):
                theta = _solve(problem, origin)
                fits.append((theta, _cost(standardised_rows(problem, theta)[0])))
            self._fits[flagged] = min(fits, key=lambda f: f[1])
        return self._fits[flagged]

    def _rates(self, flagged: frozenset[Pair]) -> int:
        problem = self._problem(flagged)
        return len(problem.pairs) + len(problem.triples)

    def _stands_out(self, name: Pair, theta: Sequence[float]) -> bool:
        i, j, counts = self._pairs[name]
        pair = _pair_estimate(name, counts, i, j, theta, False)
        return pair.excess >= self._settings.min_excess and pair.z >= self._settings.flag_z

    def run(self, start: Sequence[float]) -> tuple[frozenset[Pair], list[float]]:
        flagged = self._flagged
        theta, cost = self._fit(flagged, start)
        for _ in range(2 * len(self._pairs) + 2):
            changed = self._release(flagged, theta, cost)
            if changed is None:
                changed = self._add(flagged, theta, cost)
            if changed is None:
                break
            flagged = changed
            theta, cost = self._fit(flagged, theta)
        return flagged, theta

    def _release(
        self, flagged: frozenset[Pair], theta: Sequence[float], cost: float
    ) -> frozenset[Pair] | None:
        """Flags without the cluster that explains least, if it no longer pays."""
        weakest: tuple[float, frozenset[Pair]] | None = None
        for cluster in _components(flagged):
            if all(self._stands_out(pair, theta) for pair in cluster):
                continue  # every pair still stands out against the fit without them
            without = flagged - cluster
            _, other = self._fit(without, theta, fresh=True)
            gain = other - cost
            if gain < _HYSTERESIS * self._penalty and (weakest is None or gain < weakest[0]):
                weakest = (gain, without)
        return weakest[1] if weakest is not None else None

    def _add(
        self, flagged: frozenset[Pair], theta: Sequence[float], cost: float
    ) -> frozenset[Pair] | None:
        """Flags with the best new cluster, if one pays for its penalty."""
        misfit = cost > self._rates(flagged) + self._penalty
        if not misfit and not any(
            self._stands_out(name, theta) for name in self._pairs if name not in flagged
        ):
            return None
        best: tuple[float, frozenset[Pair]] | None = None
        for cluster in self._candidates(flagged):
            new = cluster - flagged
            if not new:
                continue
            candidate = flagged | cluster
            fitted, other = self._fit(candidate, theta, fresh=True)
            gain = cost - other
            if gain < self._penalty or not all(self._stands_out(p, fitted) for p in new):
                continue
            if best is None or gain > best[0]:
                best = (gain, candidate)
        return best[1] if best is not None else None

    def _candidates(self, flagged: frozenset[Pair]) -> list[frozenset[Pair]]:
        members = sorted({m for name in self._pairs for m in name})
        largest = len(members) if len(members) <= _EXHAUSTIVE_MEMBERS else 3
        out = []
        for size in range(2, largest + 1):
            for subset in itertools.combinations(members, size):
                cluster = frozenset(itertools.combinations(subset, 2)) & self._pairs.keys()
                if len(cluster) == size * (size - 1) // 2:
                    out.append(frozenset(cluster))
        return out


def _components(flagged: frozenset[Pair]) -> list[frozenset[Pair]]:
    """The flagged pairs, split by the clusters (connected components) they form."""
    out: list[frozenset[Pair]] = []
    for group in components(flagged):
        inside = set(group)
        out.append(frozenset(p for p in flagged if p[0] in inside))
    return out


def _pair_estimate(
    name: Pair, counts: Counts, i: int, j: int, theta: Sequence[float], flagged: bool
) -> PairEstimate:
    expected = set_agreement((i, j), theta)
    effective = counts.effective
    se = math.sqrt(max(expected * (1.0 - expected), VAR_FLOOR) / effective)
    observed = counts.rate
    return PairEstimate(
        name[0], name[1], observed, expected, effective, (observed - expected) / se, flagged
    )


def _clip(p: float) -> float:
    return min(_P_MAX, max(_P_MIN, p))


def standardised_rows(
    problem: Problem, theta: Sequence[float]
) -> tuple[list[float], list[list[float]]]:
    """Standardised residuals and their Jacobian (rows: rates, then priors)."""
    size = len(theta)
    c = theta[-1]
    residuals: list[float] = []
    jacobian: list[list[float]] = []
    for i, j, counts in problem.pairs:
        pi, pj = theta[i], theta[j]
        predicted = set_agreement((i, j), theta)
        sd = math.sqrt(max(predicted * (1.0 - predicted), VAR_FLOOR) / counts.effective)
        row = [0.0] * size
        row[i] = (pj - c * (1.0 - pj)) / sd
        row[j] = (pi - c * (1.0 - pi)) / sd
        if problem.learn_c:
            row[-1] = (1.0 - pi) * (1.0 - pj) / sd
        residuals.append((counts.rate - predicted) / sd)
        jacobian.append(row)
    for i, j, k, counts in problem.triples:
        pi, pj, pk = theta[i], theta[j], theta[k]
        predicted = set_agreement((i, j, k), theta)
        sd = math.sqrt(max(predicted * (1.0 - predicted), VAR_FLOOR) / counts.effective)
        qi, qj, qk = 1.0 - pi, 1.0 - pj, 1.0 - pk
        c2 = c * c
        row = [0.0] * size
        row[i] = (pj * pk - c2 * qj * qk) / sd
        row[j] = (pi * pk - c2 * qi * qk) / sd
        row[k] = (pi * pj - c2 * qi * qj) / sd
        if problem.learn_c:
            row[-1] = 2.0 * c * qi * qj * qk / sd
        residuals.append((counts.rate - predicted) / sd)
        jacobian.append(row)
    for i, prior in enumerate(problem.priors):
        sd = math.sqrt(prior * (1.0 - prior) / problem.prior_strength)
        row = [0.0] * size
        row[i] = 1.0 / sd
        residuals.append((prior - theta[i]) / sd)
        jacobian.append(row)
    if problem.learn_c:
        c0 = problem.c_prior
        sd = math.sqrt(max(c0 * (1.0 - c0), VAR_FLOOR) / problem.c_strength)
        row = [0.0] * size
        row[-1] = 1.0 / sd
        residuals.append((c0 - c) / sd)
        jacobian.append(row)
    else:
        # c is fixed: an identity row keeps the normal matrix invertible; its residual is 0.
        row = [0.0] * size
        row[-1] = 1.0
        residuals.append(0.0)
        jacobian.append(row)
    return residuals, jacobian


def normal_equations(
    residuals: Sequence[float], jacobian: Sequence[Sequence[float]], size: int
) -> tuple[list[list[float]], list[float]]:
    """J^T J and J^T r."""
    jtj = [[0.0] * size for _ in range(size)]
    jtr = [0.0] * size
    for r, row in zip(residuals, jacobian, strict=True):
        nonzero = [(k, v) for k, v in enumerate(row) if v]
        for a, va in nonzero:
            jtr[a] += va * r
            line = jtj[a]
            for b, vb in nonzero:
                line[b] += va * vb
    return jtj, jtr


def _cost(residuals: Sequence[float]) -> float:
    return sum(r * r for r in residuals)


def _bounded(problem: Problem, theta: Sequence[float]) -> list[float]:
    out = [_clip(p) for p in theta[:-1]]
    out.append(min(1.0, max(0.0, theta[-1])) if problem.learn_c else theta[-1])
    return out


def _solve(problem: Problem, start: Sequence[float]) -> list[float]:
    """Levenberg-Marquardt from ``start``, within the bounds."""
    theta = _bounded(problem, start)
    size = len(theta)
    residuals, jacobian = standardised_rows(problem, theta)
    cost = _cost(residuals)
    damping = 1e-4
    for _ in range(_MAX_ITERATIONS):
        jtj, jtr = normal_equations(residuals, jacobian, size)
        for d in range(size):
            jtj[d][d] *= 1.0 + damping
        try:
            step = solve_vector(jtj, jtr)
        except SingularError:
            break
        candidate = _bounded(problem, [t + s for t, s in zip(theta, step, strict=True)])
        moved = max(abs(a - b) for a, b in zip(candidate, theta, strict=True))
        if moved < _TOLERANCE:
            break  # converged, or pinned at a bound
        new_residuals, new_jacobian = standardised_rows(problem, candidate)
        new_cost = _cost(new_residuals)
        if new_cost <= cost:
            settled = cost - new_cost <= 1e-10 * (1.0 + cost)
            theta, residuals, jacobian, cost = candidate, new_residuals, new_jacobian, new_cost
            damping = max(damping / 10.0, 1e-9)
            if settled:
                break
        else:
            damping *= 10.0
            if damping > 1e6:
                break
    return theta


def set_agreement(members: Sequence[int], theta: Sequence[float]) -> float:
    """P(all of ``members`` agree) for independent members: all right, or all wrong alike
    (c^(m-1) for m wrong answers spread evenly)."""
    right, wrong = 1.0, 1.0
    for i in members:
        right *= theta[i]
        wrong *= 1.0 - theta[i]
    return right + theta[-1] ** (len(members) - 1) * wrong


def _covariance(
    problem: Problem, theta: Sequence[float], same: Mapping[int, int]
) -> list[list[float]] | None:
    """Sandwich covariance H^-1 (J^T B J) H^-1 of the fitted parameters.

    The fit weighs each rate as if the rates were independent, but a pair and a triple
    (or two pairs) sharing a member are counted on the same questions: B holds their
    correlation, from the model (two sets that share a member both agree exactly when
    their union does), so that intervals are not overconfident. Members of a flagged
    group (``same``: member -> the group's first member) count as one member there: the
    pairs that two clones form with a third member are the same data twice.
    """
    residuals, jacobian = standardised_rows(problem, theta)
    size = len(theta)
    hessian, _ = normal_equations(residuals, jacobian, size)
    try:
        bread = inverse(hessian)
    except SingularError:
        return None
    groups = [frozenset((i, j)) for i, j, _ in problem.pairs]
    groups += [frozenset((i, j, k)) for i, j, k, _ in problem.triples]
    sizes = [c.effective for *_, c in problem.pairs] + [c.effective for *_, c in problem.triples]
    agreements = [set_agreement(tuple(g), theta) for g in groups]
    sds = [
        math.sqrt(max(p * (1.0 - p), VAR_FLOOR) / n) for p, n in zip(agreements, sizes, strict=True)
    ]
    count = len(groups)
    # Prior rows are independent of everything: their part of the meat is J^T J.
    meat, _ = normal_equations([0.0] * (len(jacobian) - count), jacobian[count:], size)
    # J^T B J over the rate rows: B is the rates' correlation matrix.
    for x in range(count):
        acc = [0.0] * size
        for y in range(count):
            if not groups[x] & groups[y]:
                continue  # no member in common: independent
            union = set_agreement(tuple({same.get(i, i) for i in groups[x] | groups[y]}), theta)
            covariance = (union - agreements[x] * agreements[y]) / math.sqrt(sizes[x] * sizes[y])
            correlation = covariance / (sds[x] * sds[y])
            for a, value in enumerate(jacobian[y]):
                if value:
                    acc[a] += correlation * value
        row = jacobian[x]
        for a in range(size):
            if row[a]:
                for b in range(size):
                    meat[a][b] += row[a] * acc[b]
    middle = [
        [sum(meat[a][k] * bread[k][b] for k in range(size)) for b in range(size)]
        for a in range(size)
    ]
    return [
        [sum(bread[a][k] * middle[k][b] for k in range(size)) for b in range(size)]
        for a in range(size)
    ]


# A learned accuracy stays learned until its evidence falls below this share of
# min_evidence (after a detected change most old evidence is forgotten, and the configured
# accuracy is known to be stale).
_KEEP_LEARNED = 0.25


def _needed(was_learned: bool, settings: TrustSettings) -> float:
    return settings.min_evidence * (_KEEP_LEARNED if was_learned else 1.0)


def _view(
    key: str,
    totals: Totals,
    priors: Mapping[str, Prior],
    settings: TrustSettings,
    theta: Sequence[float],
    covariance: Sequence[Sequence[float]] | None,
    pairs: Sequence[PairEstimate],
    learn_c: bool,
    was_learned: frozenset[str],
) -> TrustView:
    # A single client cannot switch a model to learned weights on its own.
    diverse = totals.top_client_share <= max(0.5, settings.max_client_share) + 1e-12
    members = {}
    for i, model in enumerate(totals.members):
        p = theta[i]
        variance = covariance[i][i] if covariance is not None else math.inf
        se = math.sqrt(variance) if variance > 0 else math.inf
        equivalent = p * (1.0 - p) / variance if variance > 0 else 0.0
        evidence = max(0.0, equivalent - settings.prior_strength)
        low, high = interval(p, se)
        members[model] = MemberEstimate(
            model=model,
            accuracy=p,
            low=low,
            high=high,
            evidence=evidence,
            prior=priors[model].accuracy,
            prior_source=priors[model].source,
            learned=diverse and evidence >= _needed(model in was_learned, settings),
            answered=totals.answered.get(model, 0.0),
            failed=totals.failed.get(model, 0.0),
            changes=totals.changes.get(model, 0),
        )
    c = theta[-1]
    c_variance = covariance[-1][-1] if covariance is not None and learn_c else 0.0
    c_low, c_high = interval(c, math.sqrt(c_variance)) if learn_c else (c, c)
    c0 = settings.wrong_agreement_prior
    c_prior_information = settings.wrong_agreement_prior_strength / max(c0 * (1 - c0), VAR_FLOOR)
    c_learned = learn_c and c_variance > 0 and 1.0 / c_variance >= 2.0 * c_prior_information
    mass = totals.mass
    flagged = [p for p in pairs if p.flagged]
    return TrustView(
        key=key,
        members=members,
        pairs=tuple(pairs),
        wrong_agreement=c,
        wrong_agreement_low=c_low,
        wrong_agreement_high=c_high,
        wrong_agreement_learned=c_learned,
        observations=totals.observations,
        mass=mass,
        top_client_share=totals.top_client_share,
        client_share_bound=min(1.0, settings.client_cap / mass) if mass > 0 else 1.0,
        rejected=totals.rejected,
        # Members linked by flagged pairs.
        groups=components((p.a, p.b) for p in flagged),
    )
