"""The strategies with learned trust: clones share a vote (voting, weighted), are one voice
(cascade), learned accuracies and k weigh votes (weighted), and the response says so.

Table tests on scripted candidates in virtual time (plan_sim), with weight plans made
from hand-made views of what a key learned (trust_sim.trust_view)."""

from __future__ import annotations

import math

import pytest

from ensemble_extproc.strategies import STRATEGIES
from ensemble_extproc.trust.weights import plan_weights
from plan_sim import Reply, context, simulate
from trust_sim import trust_view

CLONE_MODELS = ("strong", "good", "c1", "c2", "c3")
CLONES = trust_view(
    {"strong": 0.8, "good": 0.7, "c1": 0.6, "c2": 0.6, "c3": 0.6},
    [("c1", "c2", 1.0), ("c1", "c3", 1.0), ("c2", "c3", 1.0)],
)
# Two independent members say A, three clones of one model say B.
CLONES_OUTVOTE = {
    "strong": Reply("A"),
    "good": Reply("The answer is A."),
    "c1": Reply("B"),
    "c2": Reply("B"),
    "c3": Reply("(B)"),
}

STRONG_AND_WEAK = ("p90", "w1", "w2", "w3", "w4")
LEARNED = trust_view({"p90": 0.9, "w1": 0.6, "w2": 0.6, "w3": 0.6, "w4": 0.6}, c=1 / 3)
# The strong member alone against two weak ones that agree.
STRONG_ALONE = {
    "p90": Reply("A"),
    "w1": Reply("B"),
    "w2": Reply("B"),
    "w3": Reply("C"),
    "w4": Reply("D"),
}


def winner(strategy: str, replies: dict[str, Reply], **ctx: object) -> str:
    trace = simulate(strategy, context(**ctx), replies)  # type: ignore[arg-type]
    assert trace.selection is not None
    return trace.selection.winner.content


# ---------------------------------------------------------------------- voting


def test_three_clones_no_longer_outvote_two_independent_members() -> None:
    assert winner("voting", CLONES_OUTVOTE, models=CLONE_MODELS) == "B"  # trust off
    plan = plan_weights(CLONES, CLONE_MODELS, {})
    trace = simulate("voting", context(CLONE_MODELS, weight_plan=plan), CLONES_OUTVOTE)
    assert trace.selection is not None
    assert trace.selection.winner.content == "A"
    assert trace.selection.reason.startswith("voting: 2 of 3 votes for 'A'")
    weights = trace.selection.details["weights"]
    assert weights["rule"] == "votes"
    assert weights["source"] == "learned"
    assert weights["groups"] == [["c1", "c2", "c3"]]
    assert weights["members"]["c1"] == {"weight": 0.333333, "multiplier": 0.3333}
    assert weights["members"]["strong"] == {"weight": 1.0, "multiplier": 1.0}
    # The groups handed to learned trust, strongest first.
    assert trace.selection.groups == (("strong", "good"), ("c1", "c2", "c3"))


def test_correlation_off_or_nothing_flagged_is_plain_voting() -> None:
    for plan in (
        plan_weights(CLONES, CLONE_MODELS, {}, correlation=False),
        plan_weights(trust_view(dict.fromkeys(CLONE_MODELS, 0.6)), CLONE_MODELS, {}),
    ):
        trace = simulate("voting", context(CLONE_MODELS, weight_plan=plan), CLONES_OUTVOTE)
        assert trace.selection is not None
        assert trace.selection.winner.content == "B"
        assert trace.selection.details["weights"]["source"] == "equal"


def test_trust_off_reports_no_weights() -> None:
    trace = simulate("voting", context(CLONE_MODELS), CLONES_OUTVOTE)
    assert trace.selection is not None
    assert "weights" not in trace.selection.details


# -------------------------------------------------------------------- weighted


def test_learned_accuracies_and_k_let_a_strong_member_outweigh_two_weak_ones() -> None:
    # Votes first (trust off, nothing configured): the two agreeing weak members win.
    assert winner("weighted", STRONG_ALONE, models=STRONG_AND_WEAK) == "B"
    plan = plan_weights(LEARNED, STRONG_AND_WEAK, {})
    trace = simulate("weighted", context(STRONG_AND_WEAK, weight_plan=plan), STRONG_ALONE)
    assert trace.selection is not None
    # c = 1/3 in [0.283, 0.383]: k = 1 / 0.283 = 3.53, the largest the data support.
    # ln(3.53 * 0.9 / 0.1) = 3.46 against 2 ln(3.53 * 0.6 / 0.4) = 3.33.
    assert trace.selection.winner.content == "A"
    k = 1 / (1 / 3 - 0.05)
    weights = trace.selection.details["weights"]
    assert weights["rule"] == "log-odds"
    assert weights["source"] == "learned"
    assert weights["alternatives"] == {"value": round(k, 4), "source": "learned"}
    assert weights["members"]["p90"]["weight"] == pytest.approx(math.log(9 * k), abs=1e-6)
    assert weights["members"]["p90"]["accuracy"] == 0.9
    assert weights["members"]["p90"]["interval"] == [0.87, 0.93]
    assert weights["members"]["w1"]["weight"] == pytest.approx(math.log(1.5 * k), abs=1e-6)


def test_a_configured_k_wins_over_the_learned_one() -> None:
    plan = plan_weights(LEARNED, STRONG_AND_WEAK, {})
    ctx = context(STRONG_AND_WEAK, weight_plan=plan, weighted={"alternatives": 1})
    trace = simulate("weighted", ctx, STRONG_ALONE)
    assert trace.selection is not None
    # ln 9 = 2.20 against 2 ln 1.5 = 0.81: still A, with k = 1 as configured.
    assert trace.selection.winner.content == "A"
    assert trace.selection.details["weights"]["alternatives"] == {
        "value": 1.0,
        "source": "configured",
    }


def test_before_k_is_learned_votes_come_first_and_learned_log_odds_break_ties() -> None:
    unsure = trust_view(
        {"p90": 0.9, "w1": 0.6, "w2": 0.6, "w3": 0.6, "w4": 0.6}, c=1 / 3, c_learned=False
    )
    models = ("w1", "w2", "w3", "w4", "p90")  # the strong member last
    plan = plan_weights(unsure, models, {})
    assert winner("weighted", STRONG_ALONE, models=models, weight_plan=plan) == "B"
    every_one_differs = {m: Reply(str(i)) for i, m in enumerate(models)}
    assert winner("weighted", every_one_differs, models=models) == "0"  # model order
    trace = simulate("weighted", context(models, weight_plan=plan), every_one_differs)
    assert trace.selection is not None
    assert trace.selection.winner.model == "p90"  # ln 9 breaks the five-way tie
    weights = trace.selection.details["weights"]
    assert weights["rule"] == "votes, then log-odds"
    assert "alternatives" not in weights
    assert weights["members"]["p90"]["tiebreak"] == pytest.approx(math.log(9), abs=1e-6)


def test_trust_alternatives_is_the_k_of_learned_weights_when_c_is_not_learned() -> None:
    fixed = trust_view(
        {"p90": 0.9, "w1": 0.6, "w2": 0.6, "w3": 0.6, "w4": 0.6}, c=1 / 3, c_learned=False
    )
    plan = plan_weights(fixed, STRONG_AND_WEAK, {}, fixed_alternatives=3)
    trace = simulate("weighted", context(STRONG_AND_WEAK, weight_plan=plan), STRONG_ALONE)
    assert trace.selection is not None
    assert trace.selection.winner.content == "A"
    assert trace.selection.details["weights"]["alternatives"] == {
        "value": 3.0,
        "source": "configured",
    }


def test_configured_weights_ignore_what_was_learned_but_clones_still_share() -> None:
    configured = {"strong": 0.8, "good": 0.7, "c1": 0.6, "c2": 0.6, "c3": 0.6}
    plan = plan_weights(CLONES, CLONE_MODELS, configured, learned=False)
    assert plan.alternatives(None) is None  # k is not learned either
    ctx = context(
        CLONE_MODELS, accuracies=configured, weight_plan=plan, weighted={"alternatives": 1}
    )
    trace = simulate("weighted", ctx, CLONES_OUTVOTE)
    assert trace.selection is not None
    # ln 4 + ln 2.33 = 2.23 against 3 x ln 1.5 / 3 = 0.41 (1.22 without the discount).
    assert trace.selection.winner.content == "A"
    weights = trace.selection.details["weights"]
    assert weights["source"] == "configured"
    assert weights["members"]["c1"]["weight"] == pytest.approx(math.log(1.5) / 3, abs=1e-6)


# --------------------------------------------------------------------- cascade


CASCADE_MODELS = ("c1", "c2", "c3", "good", "strong")
# Unsure clones agreeing on a wrong answer, then two independent members on another.
UNSURE_CLONES = {
    "c1": Reply("B", confidence=0.6),
    "c2": Reply("B", confidence=0.6),
    "c3": Reply("B", confidence=0.6),
    "good": Reply("A", confidence=0.6),
    "strong": Reply("A", confidence=0.6),
}


def test_two_agreeing_clones_are_one_voice_in_the_cascade() -> None:
    trace = simulate("cascade", context(CASCADE_MODELS), UNSURE_CLONES)
    assert trace.launched_models == ["c1", "c2"]  # trust off: two clones "agree"
    assert trace.selection is not None
    assert trace.selection.winner.content == "B"

    plan = plan_weights(CLONES, CASCADE_MODELS, {})
    trace = simulate("cascade", context(CASCADE_MODELS, weight_plan=plan), UNSURE_CLONES)
    assert trace.launched_models == list(CASCADE_MODELS)
    assert trace.selection is not None
    assert trace.selection.winner.content == "A"
    assert "2 answers agree on 'A'" in trace.selection.reason
    details = trace.selection.details
    assert details["cascade_depth"] == 5
    assert details["weights"]["rule"] == "voices"
    assert details["weights"]["groups"] == [["c1", "c2", "c3"]]


def test_clones_plus_one_independent_member_are_two_voices() -> None:
    replies = {**UNSURE_CLONES, "good": Reply("B", confidence=0.6)}
    plan = plan_weights(CLONES, CASCADE_MODELS, {})
    trace = simulate("cascade", context(CASCADE_MODELS, weight_plan=plan), replies)
    assert trace.launched_models == ["c1", "c2", "c3", "good"]
    assert trace.selection is not None
    assert "4 answers agree on 'B' (2 independent voices)" in trace.selection.reason


def test_the_cascades_final_majority_shares_the_clones_vote() -> None:
    replies = {
        "c1": Reply("B", confidence=0.6),
        "c2": Reply("B", confidence=0.6),
        "good": Reply("A", confidence=0.6),
        "strong": Reply("C", confidence=0.6),
        "c3": Reply("A", confidence=0.6),  # no clone here: only c1 and c2 move together
    }
    two = trust_view(
        {"strong": 0.8, "good": 0.7, "c1": 0.6, "c2": 0.6, "c3": 0.6}, [("c1", "c2", 1.0)]
    )
    models = ("c1", "c2", "good", "strong", "c3")
    # Trust off: B and A have two votes each, and B's first voter comes first.
    assert winner("cascade", replies, models=models, cascade={"agreement": 3}) == "B"
    ctx = context(models, weight_plan=plan_weights(two, models, {}), cascade={"agreement": 3})
    trace = simulate("cascade", ctx, replies)
    assert trace.selection is not None
    assert "all models asked" in trace.selection.reason
    # B: one vote (two halves), A: two votes.
    assert trace.selection.winner.content == "A"


# ------------------------------------------------------- learning samples (complete)


def test_which_strategies_may_stop_early() -> None:
    five = context(CLONE_MODELS, min_responses=2)
    everyone = context(CLONE_MODELS, min_responses=5)
    alone = context(("strong",), min_responses=1)
    expected = {
        "voting": (True, False, False),
        "weighted": (True, False, False),
        "cascade": (True, True, False),
        "first_success": (True, True, False),
        "reranking": (False, False, False),
        "fusion": (False, False, False),
        "score_averaging": (False, False, False),
    }
    for name, (some, all_needed, single) in expected.items():
        strategy = STRATEGIES[name]
        assert strategy.may_stop_early(five) is some, name
        assert strategy.may_stop_early(everyone) is all_needed, name
        assert strategy.may_stop_early(alone) is single, name


EARLY = {
    "strong": Reply("A", 10),
    "good": Reply("A", 11),
    "c1": Reply("A", 12),
    "c2": Reply("B", 80),
    "c3": Reply("C", 90),
}


@pytest.mark.parametrize("strategy", ["voting", "weighted"])
def test_a_learning_sample_waits_for_everyone_and_answers_the_same(strategy: str) -> None:
    early = simulate(strategy, context(CLONE_MODELS, min_responses=2), EARLY)
    assert early.cancelled == ["c2", "c3"]
    ctx = context(CLONE_MODELS, min_responses=2, complete=True)
    sample = simulate(strategy, ctx, EARLY)
    assert sample.cancelled == []
    assert sample.selection is not None
    assert early.selection is not None
    assert sample.selection.winner.model == early.selection.winner.model
    assert sample.selection.details["learning_sample"] is True
    assert sample.selection.details["stopped_early"] is False
    assert "learning_sample" not in early.selection.details


def test_a_cascade_sample_asks_the_rest_and_keeps_its_answer() -> None:
    models = ("c1", "c2", "good", "strong")
    replies = {
        "c1": Reply("B", confidence=0.6),
        "c2": Reply("B", confidence=0.6),
        "good": Reply("A", confidence=0.95),
        "strong": Reply("A", confidence=0.95),
    }
    plain = simulate("cascade", context(models), replies)
    assert plain.launched_models == ["c1", "c2"]
    sample = simulate("cascade", context(models, complete=True), replies)
    assert sample.launched_models == ["c1", "c2", "good", "strong"]
    assert sample.cancelled == []
    assert sample.selection is not None
    assert plain.selection is not None
    assert sample.selection.winner.model == plain.selection.winner.model == "c1"
    assert sample.selection.details["cascade_depth"] == 2
    assert sample.selection.details["asked_for_learning"] == ["good", "strong"]


def test_a_first_success_sample_lets_the_others_finish() -> None:
    models = ("strong", "good", "c1")
    replies = {"strong": Reply("A", 30), "good": Reply("B", 10), "c1": Reply("C", 50)}
    plain = simulate("first_success", context(models), replies)
    assert sorted(plain.cancelled) == ["c1", "strong"]
    ctx = context(models, complete=True, first_success={"hedge_delay_ms": 5})
    sample = simulate("first_success", ctx, replies)
    assert sample.cancelled == []
    assert sample.launched_models == ["strong", "good", "c1"]
    assert sample.selection is not None
    assert sample.selection.winner.model == "good"
    assert len(sample.finished) == 3
