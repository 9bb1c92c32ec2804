"""The cost cap in the plans, in virtual time (plan_sim): a cascade stops escalating and
hedging stops at the cap and say so; calls started at once must fit together (else the
client's 400); every call that starts fits what was committed before it."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ensemble_extproc.errors import ApiError, ErrorCode
from ensemble_extproc.strategies import Status
from ensemble_extproc.upstream.budget import Budget
from plan_sim import Reply, context, simulate


def budget(cap: float, estimates: Mapping[str, float]) -> Budget:
    return Budget(cap, lambda call: estimates[call.model])


# A cascade cheapest first: cheap is unsure (confidence 0.5 < 0.8), mid is sure.
CASCADE = {
    "cheap": Reply("42", 10, confidence=0.5, usd=0.001),
    "mid": Reply("41", 10, confidence=0.9, usd=0.01),
    "dear": Reply("42", 10, confidence=0.95, usd=0.1),
}
ESTIMATES = {"cheap": 0.002, "mid": 0.02, "dear": 0.2}


def cascade_ctx(**cascade: object) -> object:
    return context(
        ["cheap", "mid", "dear"],
        cascade={"order": ["cheap", "mid", "dear"], "agreement": 2, **cascade},
    )


def test_without_a_cap_the_cascade_escalates_to_the_model_it_trusts() -> None:
    trace = simulate("cascade", cascade_ctx(), CASCADE)  # type: ignore[arg-type]
    assert trace.launched_models == ["cheap", "mid"]
    assert trace.selection is not None
    assert trace.selection.winner.model == "mid"


def test_the_cascade_stops_escalating_where_the_next_stage_would_pass_the_cap() -> None:
    """cheap's answer is not trusted; mid (estimated 0.02) would take the committed 0.001
    past a 0.015 cap: it is not started, and the cascade answers with what it has."""
    trace = simulate(
        "cascade",
        cascade_ctx(),  # type: ignore[arg-type]
        CASCADE,
        budget=budget(0.015, ESTIMATES),
    )
    assert trace.launched_models == ["cheap"]
    assert trace.refused == ["mid"]
    selection = trace.selection
    assert selection is not None
    assert selection.winner.model == "cheap"
    assert "stopped at the cost cap: mid not started" in selection.reason
    assert selection.details["cost_capped"] == ["mid"]
    assert selection.details["cascade_depth"] == 1
    [refused] = [c for c in trace.finished if c.status is Status.OVER_BUDGET]
    assert refused.model == "mid"
    assert not refused.sent
    assert "would pass the cost cap of 0.015 USD" in (refused.error or "")
    assert trace.spent <= 0.015


def test_a_stage_that_fits_is_started_and_the_one_after_is_not() -> None:
    """cheap and mid disagree and neither is trusted; dear does not fit."""
    replies = {**CASCADE, "mid": Reply("41", 10, confidence=0.5, usd=0.01)}
    trace = simulate(
        "cascade",
        cascade_ctx(),  # type: ignore[arg-type]
        replies,
        budget=budget(0.05, ESTIMATES),
    )
    assert trace.launched_models == ["cheap", "mid"]
    assert trace.refused == ["dear"]
    assert trace.selection is not None
    assert trace.selection.details["cascade_depth"] == 2
    assert "dear not started" in trace.selection.reason


def test_a_cascade_whose_first_stage_does_not_fit_is_refused_before_any_call() -> None:
    with pytest.raises(ApiError) as raised:
        simulate(
            "cascade",
            cascade_ctx(),  # type: ignore[arg-type]
            CASCADE,
            budget=budget(0.001, ESTIMATES),
        )
    assert raised.value.error_code is ErrorCode.MAX_COST_EXCEEDED
    assert raised.value.status == 400
    assert "cheap 0.002" in raised.value.message
    assert "cost cap of 0.001 USD" in raised.value.message


def test_escalation_to_the_whole_rest_starts_only_what_fits() -> None:
    replies = {**CASCADE, "mid": Reply("41", 10, confidence=0.5)}
    trace = simulate(
        "cascade",
        cascade_ctx(escalation="ensemble"),  # type: ignore[arg-type]
        replies,
        budget=budget(0.025, ESTIMATES),
    )
    assert trace.launched_models == ["cheap", "mid"]
    assert trace.refused == ["dear"]
    assert trace.selection is not None
    assert "dear not started" in trace.selection.reason


# Hedged first_success: a is slow, b would be the hedge after 50 ms.
HEDGE = {"a": Reply("Paris", 200, usd=0.01), "b": Reply("Paris", 20), "c": Reply("Paris", 20)}


def hedge_ctx() -> object:
    return context(["a", "b", "c"], first_success={"hedge_delay_ms": 50})


def test_hedging_starts_the_next_model_when_it_fits() -> None:
    trace = simulate(
        "first_success",
        hedge_ctx(),  # type: ignore[arg-type]
        HEDGE,
        budget=budget(1.0, {"a": 0.01, "b": 0.01, "c": 0.01}),
    )
    assert trace.launched_models == ["a", "b"]
    assert trace.selection is not None
    assert trace.selection.winner.model == "b"
    assert "cost_capped" not in trace.selection.details


def test_hedging_stops_at_the_cap_and_the_answer_says_so() -> None:
    """The hedge b (0.02) would pass the cap with a's 0.01 committed: b is not started, and
    neither is c (hedging stops), so a's slow answer is the one."""
    trace = simulate(
        "first_success",
        hedge_ctx(),  # type: ignore[arg-type]
        HEDGE,
        budget=budget(0.025, {"a": 0.01, "b": 0.02, "c": 0.001}),
    )
    assert trace.launched_models == ["a"]
    assert trace.refused == ["b"]
    selection = trace.selection
    assert selection is not None
    assert selection.winner.model == "a"
    assert "hedging stopped at the cost cap (b)" in selection.reason
    assert selection.details["cost_capped"] == ["b"]
    assert selection.details["launched"] == 1


def test_unhedged_first_success_must_fit_all_its_racers() -> None:
    ctx = context(["a", "b", "c"])
    with pytest.raises(ApiError) as raised:
        simulate("first_success", ctx, HEDGE, budget=budget(0.025, dict.fromkeys("abc", 0.01)))
    assert raised.value.error_code is ErrorCode.MAX_COST_EXCEEDED
    assert "0.03 USD" in raised.value.message


@pytest.mark.parametrize("strategy", ["voting", "weighted", "score_averaging"])
def test_a_fan_out_is_refused_when_its_members_together_pass_the_cap(strategy: str) -> None:
    replies = {m: Reply("42", 10) for m in "abc"}
    ctx = context(list("abc"), min_responses=2)
    with pytest.raises(ApiError) as raised:
        simulate(strategy, ctx, replies, budget=budget(0.25, dict.fromkeys("abc", 0.1)))
    assert raised.value.error_code is ErrorCode.MAX_COST_EXCEEDED
    # Just under: every member starts.
    trace = simulate(strategy, ctx, replies, budget=budget(0.3, dict.fromkeys("abc", 0.1)))
    assert sorted(trace.launched_models) == ["a", "b", "c"]


def test_a_judge_that_would_pass_the_cap_is_not_started_and_reranking_falls_back() -> None:
    replies = {"a": Reply("42", 10, usd=0.01), "b": Reply("42", 10, usd=0.01)}
    ctx = context(["a", "b"], min_responses=2, reranking={"judge_model": "judge"})
    trace = simulate(
        "reranking",
        ctx,
        replies,
        helpers={"judge": Reply("1", 10)},
        # a and b cost 0.01 each (estimated 0.015): the judge's 0.02 would make 0.04.
        budget=budget(0.035, {"a": 0.015, "b": 0.015, "judge": 0.02}),
    )
    assert trace.refused == ["judge"]
    assert trace.selection is not None
    assert trace.selection.details["fallback"] == "voting"
    assert "not started" in trace.selection.reason


@given(
    caps=st.floats(0.001, 1.0),
    estimates=st.lists(st.floats(0.0001, 0.5), min_size=3, max_size=3),
    costs=st.lists(st.one_of(st.none(), st.floats(0, 0.5)), min_size=3, max_size=3),
    confidences=st.lists(st.floats(0.1, 0.99), min_size=3, max_size=3),
    escalation=st.sampled_from(["next", "ensemble"]),
)
def test_every_call_started_fits_what_was_committed_before_it(
    caps: float,
    estimates: list[float],
    costs: list[float | None],
    confidences: list[float],
    escalation: str,
) -> None:
    """Over any estimates and actual costs: a cascade never starts a call that would take
    what is committed (known costs, estimates of the rest) past the cap; when the actual
    costs are within their estimates, the ensemble stays within the cap."""
    models = ["m0", "m1", "m2"]
    replies = {
        m: Reply(str(i), 10, confidence=confidences[i], usd=costs[i]) for i, m in enumerate(models)
    }
    ctx = context(models, cascade={"order": models, "escalation": escalation})
    cap = budget(caps, dict(zip(models, estimates, strict=True)))
    if not cap.fits(estimates[0], 0.0):
        # The first stage alone passes the cap: the client's 400, before any call.
        with pytest.raises(ApiError) as raised:
            simulate("cascade", ctx, replies, budget=cap)
        assert raised.value.error_code is ErrorCode.MAX_COST_EXCEEDED
        return
    trace = simulate("cascade", ctx, replies, budget=cap)
    assert trace.launched_models[0] == "m0"
    within = all(c is None or c <= e for c, e in zip(costs, estimates, strict=True))
    if within:
        assert trace.spent <= caps * (1 + 1e-9)
    for refused in trace.refused:
        assert refused not in trace.launched_models
