"""Change detection: a sudden model update is noticed quickly, steady traffic never."""

from __future__ import annotations

import random

import pytest

from ensemble_extproc.trust.book import TrustBook, priors_from
from ensemble_extproc.trust.change import ChangeDetector
from ensemble_extproc.trust.model import Observation, TrustSettings
from trust_sim import answers

TRUTH = {"strong": 0.9, "w1": 0.6, "w2": 0.6, "w3": 0.6, "w4": 0.6}


def agreement(answer: dict[str, int], member: str) -> float:
    return (sum(a == answer[member] for a in answer.values()) - 1) / (len(answer) - 1)


def test_no_false_alarm_in_steady_traffic() -> None:
    """400,000 member-questions of steady traffic: the default threshold stays silent."""
    threshold = TrustSettings().change_threshold
    assert threshold is not None
    alarms = 0
    for seed in range(32):
        rng = random.Random(seed)
        detectors = {m: ChangeDetector(500, threshold) for m in TRUTH}
        for _ in range(2500):
            answer = answers(TRUTH, rng)
            alarms += sum(detectors[m].update(agreement(answer, m)) for m in TRUTH)
    assert alarms == 0


def test_a_lower_threshold_does_raise_false_alarms() -> None:
    """The same traffic with threshold 10: the detector is not silent by construction."""
    alarms = 0
    for seed in range(8):
        rng = random.Random(seed)
        detectors = {m: ChangeDetector(500, 10.0) for m in TRUTH}
        for _ in range(2500):
            answer = answers(TRUTH, rng)
            alarms += sum(detectors[m].update(agreement(answer, m)) for m in TRUTH)
    assert alarms > 0


@pytest.mark.parametrize("seed", range(10))
def test_a_drop_from_0_9_to_0_5_is_noticed_within_200_questions(seed: int) -> None:
    rng = random.Random(seed)
    threshold = TrustSettings().change_threshold
    assert threshold is not None
    detector = ChangeDetector(500, threshold)
    for _ in range(1000):
        assert not detector.update(agreement(answers(TRUTH, rng), "strong"))
    dropped = {**TRUTH, "strong": 0.5}
    delay = next(
        (q for q in range(1000) if detector.update(agreement(answers(dropped, rng), "strong"))),
        None,
    )
    assert delay is not None
    assert delay <= 200


def test_after_a_detected_drop_the_learned_accuracy_follows_faster_than_decay() -> None:
    """The book with detection against the same book without: 400 questions after the
    drop, the detecting one is near 0.5, the other still far above."""

    def run(change_threshold: float | None) -> float:
        settings_ = TrustSettings(enabled=True, change_threshold=change_threshold)
        book = TrustBook(settings_, priors_from(dict.fromkeys(TRUTH), settings_))
        rng = random.Random(3)
        for q in range(1800):
            truth = TRUTH if q < 1400 else {**TRUTH, "strong": 0.5}
            book.observe("k", list(TRUTH), Observation(answers(truth, rng), client=f"c{q % 97}"))
        view = book.view("k")
        assert view is not None
        return view.members["strong"].accuracy

    assert run(TrustSettings().change_threshold) < 0.6
    assert run(None) > 0.7
