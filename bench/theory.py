"""What theory predicts for an ensemble of independent voters.

Model: voter i is right with probability p_i; otherwise it names one of ``n_distractors``
wrong answers, each with probability (1 - p_i) / n_distractors, independently of the
other voters. This is exactly how the demo quiz models behave.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

__all__ = ["MAX_OUTCOMES", "binomial_majority", "log_odds_weight", "plurality_accuracy"]

# Exact enumeration visits (n_distractors + 1) ** voters outcomes: 4 ** 10 is about a
# million, which still takes seconds; beyond that, refuse rather than hang.
MAX_OUTCOMES = 2_000_000
_TIE_TOLERANCE = 1e-9


def plurality_accuracy(
    accuracies: Sequence[float],
    n_distractors: int = 3,
    weights: Sequence[float] | None = None,
    tiebreaks: Sequence[float] | None = None,
) -> float:
    """Probability that (weighted) plurality voting returns the right answer.

    Exact, by enumerating every outcome. The right answer wins when its vote total is
    strictly the largest, or tied for the largest and the tie-break picks it. Tie-break
    (that of the voting strategies): among the tied answers, the largest sum of
    ``tiebreaks`` of its voters (when given: the weighted strategy's default log-odds),
    then the one whose earliest voter comes first in the given (request) order. Only
    answers that received a vote take part, so a negative weight cannot make an unnamed
    answer win. Totals closer than 1e-9 (relative) count as tied.
    """
    voters = len(accuracies)
    if weights is None:
        weights = [1.0] * voters
    if len(weights) != voters:
        raise ValueError(f"{len(weights)} weights for {voters} voters")
    if tiebreaks is None:
        tiebreaks = [0.0] * voters
    if len(tiebreaks) != voters:
        raise ValueError(f"{len(tiebreaks)} tiebreaks for {voters} voters")
    for p in accuracies:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"accuracies must be within [0, 1], got {p}")
    if n_distractors < 1:
        raise ValueError(f"n_distractors must be at least 1, got {n_distractors}")
    if voters == 0:
        return 0.0  # nobody votes, nothing is answered
    if (n_distractors + 1) ** voters > MAX_OUTCOMES:
        raise ValueError(
            f"{voters} voters and {n_distractors} distractors make "
            f"{(n_distractors + 1) ** voters} outcomes, more than {MAX_OUTCOMES}"
        )
    # Per voter: the probability of each answer, 0 = the right one.
    answer_probabilities = [[p] + [(1.0 - p) / n_distractors] * n_distractors for p in accuracies]
    total = 0.0
    for outcome in itertools.product(range(n_distractors + 1), repeat=voters):
        probability = 1.0
        for voter, answer in enumerate(outcome):
            probability *= answer_probabilities[voter][answer]
        if probability > 0.0 and _right_wins(outcome, weights, tiebreaks):
            total += probability
    return total


def _right_wins(
    outcome: Sequence[int], weights: Sequence[float], tiebreaks: Sequence[float]
) -> bool:
    totals: dict[int, float] = {}  # answer -> weight; insertion order = earliest voter
    seconds: dict[int, float] = {}
    for voter, answer in enumerate(outcome):
        totals[answer] = totals.get(answer, 0.0) + weights[voter]
        seconds[answer] = seconds.get(answer, 0.0) + tiebreaks[voter]
    if 0 not in totals:
        return False
    best = max(totals.values())
    tied = [
        answer
        for answer, weight in totals.items()  # earliest first
        if math.isclose(weight, best, rel_tol=_TIE_TOLERANCE, abs_tol=_TIE_TOLERANCE)
    ]
    best_second = max(seconds[answer] for answer in tied)
    for answer in tied:  # the first of the tied answers with the best tie-break wins
        if math.isclose(
            seconds[answer], best_second, rel_tol=_TIE_TOLERANCE, abs_tol=_TIE_TOLERANCE
        ):
            return answer == 0
    raise AssertionError("unreachable: some answer carries the largest total")


def binomial_majority(p: float, n: int) -> float:
    """Condorcet: probability that more than half of n independent voters are right.

    The classic two-answer formula, sum over k > n/2 of C(n, k) p^k (1-p)^(n-k). For even
    n a tie counts as a loss. With several wrong answers, plurality voting does better,
    since the wrong votes split (see plurality_accuracy).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be within [0, 1], got {p}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return sum(math.comb(n, k) * p**k * (1.0 - p) ** (n - k) for k in range(n // 2 + 1, n + 1))


def log_odds_weight(p: float) -> float:
    """ln(p / (1 - p)): the vote weight of a voter with accuracy p.

    Optimal (Nitzan-Paroush) for two answers; with k equally likely wrong answers the
    optimal weight is ln(k p / (1 - p)), i.e. this plus ln k.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be strictly between 0 and 1, got {p}")
    return math.log(p / (1.0 - p))
