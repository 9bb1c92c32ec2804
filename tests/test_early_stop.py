"""Early stop never changes the answer: property tests over weights, answers and arrivals.

Each example scripts 2-6 models with an answer (or a failure) and a latency, and drives
the real voting / weighted plan in virtual time (plan_sim), where it may stop early and
cancel the calls still running. Weights are configured, or come from learned trust:
learned accuracies (or not yet), a learned k (or not yet), and members flagged as moving
together, whose votes are shares of one (multipliers). The reference waits for everyone:
the majority over every valid answer. The answer with early stop must be the answer
without it: the early winner must belong to the reference's winning group (same extracted
answer; which member of it is returned may differ, as a cancelled model may come earlier
in model order).
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ensemble_extproc.strategies import weighted
from ensemble_extproc.strategies.base import Context
from ensemble_extproc.strategies.tally import tally
from ensemble_extproc.strategies.voting import Ballot, correlated_votes, majority
from ensemble_extproc.trust.weights import WeightPlan, plan_weights
from plan_sim import Reply, candidate, context, simulate
from trust_sim import trust_view

# Answers that agree, nearly agree (free text that fuzzy grouping may merge or split) and
# disagree; None is a failed call.
ANSWERS = [
    "42",
    "The answer is 42.",
    "forty-two",
    "43",
    "B",
    "(b)",
    "C",
    "colour of the sky is blue",
    "color of the sky is blue",
    "the colour of the sky is blue!",
    "colour of the sky is grey",
    "rhythms",
    "rhythm",
    "rythm",
    "Paris",
    "The capital of France is Paris.",
    "Lyon",
    None,
]


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(2, 6))
    models = [f"m{i}" for i in range(n)]
    replies = {
        m: Reply(
            draw(st.sampled_from(ANSWERS)),
            draw(st.integers(1, 60)),
            draw(st.one_of(st.none(), st.floats(0.05, 1.0))),
        )
        for m in models
    }
    strategy = draw(st.sampled_from(["voting", "weighted"]))
    settings: dict[str, Any] = {
        "similarity_threshold": draw(st.sampled_from([0.5, 0.8, 0.9, 1.0])),
    }
    accuracies: dict[str, float] = {}
    weights: dict[str, float] = {}
    if strategy == "weighted":
        # k = 1 with accuracies below 0.5 gives negative weights, 0.5 a zero weight.
        settings["weighted"] = {
            "alternatives": draw(st.sampled_from(["auto", 1, 2, 3])),
            "use_confidence": draw(st.booleans()),
        }
        for m in models:
            if draw(st.booleans()):
                accuracies[m] = draw(st.sampled_from([0.1, 0.2, 0.25, 0.5, 0.6, 0.75, 0.9, 0.99]))
            else:
                weights[m] = draw(st.sampled_from([0.5, 1.0, 2.0, 3.5]))
    return {
        "strategy": strategy,
        "models": models,
        "replies": replies,
        "min_responses": draw(st.integers(1, n)),
        "accuracies": accuracies,
        "weights": weights,
        "settings": settings,
        "plan": draw(st.none() | learned_plans(models, accuracies)),
        # A learning sample: every member asked to the end, the same answer.
        "complete": draw(st.booleans()),
    }


@st.composite
def learned_plans(draw: st.DrawFn, models: list[str], configured: dict[str, float]) -> WeightPlan:
    """What learned trust hands a strategy: accuracies learned or not, k learned or not,
    pairs flagged with any excess agreement (shares of a vote down to a fifth)."""
    accuracies = {m: draw(st.sampled_from([0.15, 0.3, 0.5, 0.6, 0.75, 0.9, 0.99])) for m in models}
    pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]
    flagged = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=4)) if pairs else []
    view = trust_view(
        accuracies,
        [(a, b, draw(st.sampled_from([0.2, 0.5, 1.0]))) for a, b in flagged],
        learned=draw(st.booleans()),
        c=draw(st.sampled_from([0.05, 0.25, 1 / 3, 0.5, 1.0])),
        c_learned=draw(st.booleans()),
    )
    return plan_weights(view, models, configured, learned=draw(st.booleans()))


def _ballot(strategy: str, ctx: Context) -> Ballot:
    return weighted.ballot(ctx) if strategy == "weighted" else correlated_votes(ctx)


@settings(max_examples=800, deadline=None)
@given(scenarios())
@example(  # a negative weight still running (issue 13)
    {
        "strategy": "weighted",
        "models": ["m0", "m1", "m2"],
        "replies": {"m0": Reply("1", 10), "m1": Reply("1", 50), "m2": Reply("2", 60)},
        "min_responses": 1,
        "accuracies": {"m0": 0.7, "m1": 0.2, "m2": 0.6},
        "weights": {},
        "settings": {"weighted": {"alternatives": 1}},
        "plan": None,
    }
)
@example(  # a merged free-text leader that a later answer splits (issue 13)
    {
        "strategy": "voting",
        "models": ["m0", "m1", "m2", "m3", "m4"],
        "replies": {
            "m0": Reply("rhythms", 10),
            "m1": Reply("rhythm", 11),
            "m2": Reply("rhythm", 12),
            "m3": Reply("Lyon", 13),
            "m4": Reply("rythm", 90),
        },
        "min_responses": 3,
        "accuracies": {},
        "weights": {},
        "settings": {"similarity_threshold": 0.5},
        "plan": None,
    }
)
@example(  # three clones lead 3 answers to 1, but together they are one vote (issue 15)
    {
        "strategy": "voting",
        "models": ["m0", "m1", "m2", "m3", "m4"],
        "replies": {
            "m0": Reply("7", 10),
            "m1": Reply("7", 11),
            "m2": Reply("7", 12),
            "m3": Reply("8", 13),
            "m4": Reply("8", 90),
        },
        "min_responses": 3,
        "accuracies": {},
        "weights": {},
        "settings": {},
        "plan": plan_weights(
            trust_view(
                dict.fromkeys(["m0", "m1", "m2", "m3", "m4"], 0.6),
                [("m0", "m1", 1.0), ("m0", "m2", 1.0), ("m1", "m2", 1.0)],
            ),
            ["m0", "m1", "m2", "m3", "m4"],
            {},
        ),
    }
)
def test_early_stop_never_changes_the_answer(scenario: dict[str, Any]) -> None:
    ctx = context(
        scenario["models"],
        min_responses=scenario["min_responses"],
        weights=scenario["weights"],
        accuracies=scenario["accuracies"],
        weight_plan=scenario["plan"],
        complete=scenario.get("complete", False),
        **scenario["settings"],
    )
    replies: dict[str, Reply] = scenario["replies"]
    trace = simulate(scenario["strategy"], ctx, replies)

    everyone = [candidate(m, replies[m]) for m in ctx.models if replies[m].text is not None]
    valid = [c for c in everyone if c.valid]
    if len(valid) < ctx.min_responses:
        assert trace.selection is None
        return
    ballot = _ballot(scenario["strategy"], ctx)
    reference = majority(ctx, valid, ballot, scenario["strategy"])
    assert trace.selection is not None
    groups = tally(
        valid, ctx.models, ctx.settings.similarity_threshold, ballot.weight_of, ballot.tiebreak_of
    )
    winners = {c.model for c in groups[0].members}
    assert reference.winner.model in winners
    assert trace.selection.winner.model in winners, (trace.cancelled, reference.reason)
    if ctx.complete:
        assert trace.cancelled == []
    if not trace.cancelled:
        assert trace.selection.winner.model == reference.winner.model


def test_the_property_test_sees_early_stops() -> None:
    """The property above would be vacuous if plans never stopped early: they do."""
    ctx = context(["m0", "m1", "m2", "m3"], min_responses=2)
    replies = {
        "m0": Reply("42", 10),
        "m1": Reply("forty-two", 20),
        "m2": Reply("The answer is 42.", 30),
        "m3": Reply("43", 90),
    }
    trace = simulate("voting", ctx, replies)
    assert trace.cancelled == ["m3"]
    assert trace.selection is not None
    assert math.isclose(trace.selection.agreement or 0.0, 1.0)


def test_a_merged_free_text_leader_waits_for_the_rest() -> None:
    # "rhythms" ~ "rhythm" (one letter): 3 votes against 1 with one call left would be
    # safe for an exact answer, but "rythm" (similar to "rhythm" only) splits the group.
    ctx = context(["m0", "m1", "m2", "m3", "m4"], min_responses=3, similarity_threshold=0.5)
    replies = {
        "m0": Reply("rhythms", 10),
        "m1": Reply("rhythm", 11),
        "m2": Reply("rhythms", 12),
        "m3": Reply("Lyon", 13),
        "m4": Reply("rythm", 90),
    }
    trace = simulate("voting", ctx, replies)
    assert trace.cancelled == []
    assert trace.selection is not None
    assert trace.selection.winner.content == "rhythms"  # 2 exact votes after the split


def test_clones_still_running_count_as_one_vote_so_the_plan_stops_sooner() -> None:
    """Two agreeing independent answers against two clones still running: 2 against 2
    votes waits, 2 against one shared vote is decided (and the property above holds)."""
    models = ["m0", "m1", "m2", "m3"]
    replies = {
        "m0": Reply("42", 10),
        "m1": Reply("42", 20),
        "m2": Reply("43", 90),
        "m3": Reply("43", 95),
    }
    assert simulate("voting", context(models, min_responses=2), replies).cancelled == []
    clones = trust_view(dict.fromkeys(models, 0.6), [("m2", "m3", 1.0)])
    ctx = context(models, min_responses=2, weight_plan=plan_weights(clones, models, {}))
    trace = simulate("voting", ctx, replies)
    assert trace.cancelled == ["m2", "m3"]
    assert trace.selection is not None
    assert trace.selection.winner.content == "42"
