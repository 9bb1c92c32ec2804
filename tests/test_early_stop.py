"""Early stop never changes the answer: property tests over weights, answers and arrivals.

Each example scripts 2-6 models with an answer (or a failure) and a latency, and drives
the real voting / weighted plan in virtual time (plan_sim), where it may stop early and
cancel the calls still running. The reference waits for everyone: the majority over every
valid answer. The answer with early stop must be the answer without it: the early winner
must belong to the reference's winning group (same extracted answer; which member of it is
returned may differ, as a cancelled model may come earlier in model order).
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ensemble_extproc.strategies import weighted
from ensemble_extproc.strategies.base import Context
from ensemble_extproc.strategies.tally import tally
from ensemble_extproc.strategies.voting import VOTES, Ballot, majority
from plan_sim import Reply, candidate, context, simulate

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
    }


def _ballot(strategy: str, ctx: Context) -> Ballot:
    return weighted.ballot(ctx) if strategy == "weighted" else VOTES


@settings(max_examples=500, deadline=None)
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
    }
)
def test_early_stop_never_changes_the_answer(scenario: dict[str, Any]) -> None:
    ctx = context(
        scenario["models"],
        min_responses=scenario["min_responses"],
        weights=scenario["weights"],
        accuracies=scenario["accuracies"],
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
