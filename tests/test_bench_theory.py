"""bench.theory: exact plurality accuracy of independent voters, checked by hand and by sampling."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest
from bench.theory import binomial_majority, log_odds_weight, plurality_accuracy


@pytest.mark.parametrize("p", [0.0, 0.3, 0.55, 0.9, 1.0])
@pytest.mark.parametrize("distractors", [1, 3, 5])
def test_one_voter_is_its_own_accuracy(p: float, distractors: int) -> None:
    assert plurality_accuracy([p], distractors) == pytest.approx(p)
    assert plurality_accuracy([p], distractors, weights=[2.5]) == pytest.approx(p)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.6, 0.75, 0.99])
@pytest.mark.parametrize("n", [1, 3, 5, 7])
def test_odd_voters_with_one_distractor_is_condorcet(p: float, n: int) -> None:
    # Two possible answers and an odd number of voters: never a tie, plurality = majority.
    assert plurality_accuracy([p] * n, n_distractors=1) == pytest.approx(binomial_majority(p, n))


def test_three_voters_three_distractors_by_hand() -> None:
    p = 0.6
    q = 1 - p
    # Two or three right; or only the first voter right while the other two disagree
    # (a three-way tie at one vote each goes to the earliest voter's answer).
    expected = p**3 + 3 * p**2 * q + p * q**2 * (2 / 3)
    assert plurality_accuracy([p, p, p]) == pytest.approx(expected)


def test_two_voters_the_first_decides_every_tie() -> None:
    assert plurality_accuracy([0.7, 0.2]) == pytest.approx(0.7)
    assert plurality_accuracy([0.2, 0.7], n_distractors=1) == pytest.approx(0.2)


def test_tie_break_follows_voter_order() -> None:
    # Weights 2, 1, 1: when voter 0 is wrong and voters 1 and 2 agree on the right answer,
    # the totals tie at 2 and voter 0's answer (earlier) wins.
    p = 0.5
    weights = [2.0, 1.0, 1.0]
    # Right wins iff voter 0 is right (2 beats or ties anything, and comes first).
    assert plurality_accuracy([p, p, p], 3, weights) == pytest.approx(p)
    # Listed last, the heavy voter loses the 2-2 tie when voters 0 and 1 agree on a wrong
    # answer, and wins nothing when wrong unless both others are right (2-2, voter 0 first).
    q = 1 - p
    expected = p * (1 - q**2 / 3) + q * p**2
    assert plurality_accuracy([p, p, p], 3, [1.0, 1.0, 2.0]) == pytest.approx(expected)


@pytest.mark.parametrize("position", [0, 2, 4])
def test_a_dictator_weight_decides_alone(position: int) -> None:
    accuracies = [0.55, 0.6, 0.65, 0.7, 0.75]
    weights = [1.0] * 5
    weights[position] = 10.0  # more than all the others together
    assert plurality_accuracy(accuracies, 3, weights) == pytest.approx(accuracies[position])


def test_equal_weights_are_plain_voting_and_good_voters_help() -> None:
    accuracies = [0.55, 0.6, 0.65, 0.7, 0.75]
    plain = plurality_accuracy(accuracies)
    assert plurality_accuracy(accuracies, weights=[3.0] * 5) == pytest.approx(plain)
    assert plain > max(accuracies)  # the point of an ensemble of independent voters
    weighted = plurality_accuracy(accuracies, weights=[log_odds_weight(p) for p in accuracies])
    assert weighted > plain


def simulate(
    accuracies: Sequence[float],
    n_distractors: int,
    weights: Sequence[float],
    trials: int,
    seed: int,
) -> float:
    rng = random.Random(seed)
    wins = 0
    for _ in range(trials):
        totals: dict[int, float] = {}
        for p, weight in zip(accuracies, weights, strict=True):
            answer = 0 if rng.random() < p else rng.randint(1, n_distractors)
            totals[answer] = totals.get(answer, 0.0) + weight
        best = max(totals.values())
        winner = next(a for a, w in totals.items() if math.isclose(w, best, abs_tol=1e-9))
        wins += winner == 0
    return wins / trials


@pytest.mark.parametrize(
    ("accuracies", "distractors", "weights"),
    [
        ([0.55, 0.6, 0.65, 0.7, 0.75], 3, [1.0] * 5),
        (
            [0.55, 0.6, 0.65, 0.7, 0.75],
            3,
            [log_odds_weight(p) for p in (0.55, 0.6, 0.65, 0.7, 0.75)],
        ),
        ([0.4, 0.5, 0.45, 0.35], 2, [1.0, 1.0, 2.0, 1.0]),
        ([0.3, 0.3, 0.3, 0.3, 0.3, 0.3], 4, [1.0] * 6),
    ],
)
def test_monte_carlo_agrees(
    accuracies: list[float], distractors: int, weights: list[float]
) -> None:
    trials = 40_000
    exact = plurality_accuracy(accuracies, distractors, weights)
    sampled = simulate(accuracies, distractors, weights, trials, seed=20240601)
    sigma = math.sqrt(exact * (1 - exact) / trials)
    assert abs(sampled - exact) < 4 * sigma + 1e-9


def test_binomial_majority_values() -> None:
    assert binomial_majority(0.6, 1) == pytest.approx(0.6)
    assert binomial_majority(0.6, 3) == pytest.approx(0.648)
    assert binomial_majority(0.6, 2) == pytest.approx(0.36)  # a tie is a loss
    assert binomial_majority(0.5, 5) == pytest.approx(0.5)
    assert binomial_majority(0.7, 51) > 0.99  # Condorcet's jury theorem
    assert binomial_majority(0.4, 51) < 0.1


def test_log_odds_weight() -> None:
    assert log_odds_weight(0.5) == 0.0
    assert log_odds_weight(0.75) == pytest.approx(math.log(3))
    assert log_odds_weight(0.25) == pytest.approx(-math.log(3))
    for p in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="strictly between"):
            log_odds_weight(p)


def test_bad_arguments() -> None:
    assert plurality_accuracy([]) == 0.0
    with pytest.raises(ValueError, match="weights"):
        plurality_accuracy([0.5, 0.5], weights=[1.0])
    with pytest.raises(ValueError, match="within"):
        plurality_accuracy([1.5])
    with pytest.raises(ValueError, match="n_distractors"):
        plurality_accuracy([0.5], n_distractors=0)
    with pytest.raises(ValueError, match="outcomes"):
        plurality_accuracy([0.5] * 20)
    with pytest.raises(ValueError, match="at least 1"):
        binomial_majority(0.5, 0)
    with pytest.raises(ValueError, match="within"):
        binomial_majority(1.1, 3)
