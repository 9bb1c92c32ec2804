"""Table tests of every strategy's plan on hand-made, scripted candidates (virtual time)."""

from __future__ import annotations

import pytest

from ensemble_extproc.strategies import STRATEGIES, Candidate, Status, StrategySettings
from ensemble_extproc.strategies.judging import parse_verdict
from plan_sim import Reply, context, simulate

ABC = ("a", "b", "c")
ABCDE = ("a", "b", "c", "d", "e")


def r(text: str | None, ms: float = 10, confidence: float | None = None) -> Reply:
    return Reply(text, ms, confidence)


# ---------------------------------------------------------------------------- voting


@pytest.mark.parametrize(
    ("replies", "winner", "agreement"),
    [
        # Formats that must extract to the same answer form one group.
        ({"a": r("The answer is 42."), "b": r("\\boxed{42}"), "c": r("41")}, "a", 2 / 3),
        ({"a": r("43"), "b": r("**42**"), "c": r("42.0")}, "b", 2 / 3),
        ({"a": r("(B)"), "b": r("Answer: B"), "c": r("C")}, "a", 2 / 3),
        ({"a": r("$1,000"), "b": r("1000"), "c": r("999")}, "a", 2 / 3),
        # Tie: the group whose first member comes first in the model order, whatever
        # the arrival order.
        ({"a": r("yes", 30), "b": r("no", 10), "c": r(None)}, "a", 1 / 2),
        ({"a": r("x", 30), "b": r("y", 10), "c": r("z", 20)}, "a", 1 / 3),
        # One valid answer (quorum of 1).
        ({"a": r(None), "b": r(None), "c": r("only")}, "c", 1.0),
    ],
)
def test_voting(replies: dict[str, Reply], winner: str, agreement: float) -> None:
    trace = simulate("voting", context(ABC), replies)
    assert trace.selection is not None
    assert trace.selection.winner.model == winner
    assert trace.selection.agreement == pytest.approx(agreement)
    # The full original text of the representative is returned.
    assert trace.selection.winner.content == replies[winner].text


def test_voting_all_failed_is_no_answer() -> None:
    trace = simulate("voting", context(ABC), {m: r(None) for m in ABC})
    assert trace.selection is None


def test_voting_quorum_out_of_reach_stops_at_once() -> None:
    replies = {"a": r(None, 5), "b": r(None, 6), "c": r("late", 1000)}
    trace = simulate("voting", context(ABC, min_responses=2), replies)
    assert trace.selection is None
    assert trace.cancelled == ["c"]


def test_voting_stops_early_when_the_leader_cannot_be_overtaken() -> None:
    replies = {
        "a": r("7", 10),
        "b": r("7", 20),
        "c": r("7", 30),
        "d": r("8", 500),
        "e": r("9", 600),
    }
    trace = simulate("voting", context(ABCDE, min_responses=2), replies)
    assert trace.selection is not None
    assert trace.selection.winner.content == "7"
    assert sorted(trace.cancelled) == ["d", "e"]
    assert trace.selection.details["stopped_early"] is True


def test_voting_does_not_stop_while_a_tie_is_possible() -> None:
    replies = {"a": r("7", 10), "b": r("7", 20), "c": r("8", 30), "d": r("8", 500)}
    trace = simulate("voting", context(("a", "b", "c", "d")), replies)
    assert trace.cancelled == []  # 2 vs 1 with one call left: it could still tie


def test_voting_early_stop_honours_min_responses() -> None:
    replies = {"a": r("7", 10), "b": r("7", 20), "c": r("7", 30), "d": r("7", 40), "e": r("8", 50)}
    trace = simulate("voting", context(ABCDE, min_responses=5), replies)
    assert trace.cancelled == []
    assert trace.selection is not None
    assert trace.selection.agreement == pytest.approx(4 / 5)


def test_voting_merges_near_identical_free_text() -> None:
    replies = {
        "a": r("The capital of France is Paris"),
        "b": r("the capital of france is paris."),
        "c": r("Lyon is the capital"),
    }
    trace = simulate("voting", context(ABC), replies)
    assert trace.selection is not None
    assert trace.selection.agreement == pytest.approx(2 / 3)
    strict = simulate(
        "voting",
        context(ABC, similarity_threshold=1.0),
        {
            "a": r("The capital of France is Paris"),
            "b": r("The capital of France is Paris!"),
            "c": r("Lyon"),
        },
    )
    assert strict.selection is not None
    assert strict.selection.agreement == pytest.approx(2 / 3)  # punctuation is normalised


# -------------------------------------------------------------------------- weighted


def test_weighted_log_odds_lets_one_strong_model_outvote_two_weak_ones() -> None:
    # alternatives 1, log-odds: 0.95 -> 2.94; 0.6 -> 0.41 each: 2.94 vs 0.81.
    replies = {"a": r("1"), "b": r("2"), "c": r("2")}
    ctx = context(ABC, accuracies={"a": 0.95, "b": 0.6, "c": 0.6}, weighted={"alternatives": 1})
    trace = simulate("weighted", ctx, replies)
    assert trace.selection is not None
    assert trace.selection.winner.model == "a"
    # Plain voting would follow the two weak models.
    assert simulate("voting", ctx, replies).selection.winner.content == "2"  # type: ignore[union-attr]


def test_weighted_default_counts_votes_first_and_breaks_ties_by_accuracy() -> None:
    accuracies = {"a": 0.6, "b": 0.6, "c": 0.95, "d": 0.6}
    ctx = context(("a", "b", "c", "d"), accuracies=accuracies)
    # Two votes beat one, however strong: the default never overrules a majority.
    majority = {"a": r("1"), "b": r("1"), "c": r("2"), "d": r("3")}
    trace = simulate("weighted", ctx, majority)
    assert trace.selection is not None
    assert trace.selection.winner.content == "1"
    # Equal votes: the answer of the more accurate voters wins, not the first in order
    # (voting would pick a's "1").
    tie = {"a": r("1"), "b": r("2"), "c": r("2"), "d": r("1")}
    trace = simulate("weighted", ctx, tie)
    assert trace.selection is not None
    assert trace.selection.winner.model == "b"
    assert simulate("voting", ctx, tie).selection.winner.model == "a"  # type: ignore[union-attr]
    assert trace.selection.details["groups"][0]["tiebreak"] > 0


def test_weighted_uses_configured_weights_and_confidence() -> None:
    replies = {"a": r("1", confidence=0.2), "b": r("2", confidence=0.9)}
    ctx = context(("a", "b"), weights={"a": 2.0, "b": 1.0})
    assert simulate("weighted", ctx, replies).selection.winner.model == "a"  # type: ignore[union-attr]
    ctx = context(("a", "b"), weights={"a": 2.0, "b": 1.0}, weighted={"use_confidence": True})
    # 2.0 x 0.2 = 0.4 < 1.0 x 0.9
    assert simulate("weighted", ctx, replies).selection.winner.model == "b"  # type: ignore[union-attr]


def test_weighted_stops_early_by_weight() -> None:
    replies = {"a": r("1", 10), "b": r("2", 500), "c": r("3", 600)}
    ctx = context(ABC, accuracies={"a": 0.99, "b": 0.6, "c": 0.6}, weighted={"alternatives": 1})
    trace = simulate("weighted", ctx, replies)
    assert sorted(trace.cancelled) == ["b", "c"]


def test_a_negative_weight_running_keeps_the_vote_open() -> None:
    # alternatives 1: accuracy 0.2 weighs log(0.25) = -1.39: its vote counts against its
    # answer. a (0.85) answers first; b (-1.39) will vote with a, c (0.41) against.
    accuracies = {"a": 0.7, "b": 0.2, "c": 0.6}
    ctx = context(ABC, accuracies=accuracies, weighted={"alternatives": 1}, min_responses=1)
    replies = {"a": r("1", 10), "b": r("1", 500), "c": r("2", 600)}
    trace = simulate("weighted", ctx, replies)
    # Ignoring b's negative weight, a's 0.85 > c's 0.41 would have stopped early with "1";
    # in full, "1" has 0.85 - 1.39 = -0.54 and "2" wins with 0.41.
    assert trace.cancelled == []
    assert trace.selection is not None
    assert trace.selection.winner.content == "2"
    # Far enough ahead, a negative weight still running does not hold the vote open:
    # 2 x 2.2 - 1.39 (d) > 0.41 (c).
    accuracies = {"a": 0.9, "b": 0.9, "c": 0.6, "d": 0.2}
    ctx = context(("a", "b", "c", "d"), accuracies=accuracies, weighted={"alternatives": 1})
    replies = {"a": r("1", 10), "b": r("1", 20), "c": r("2", 300), "d": r("1", 500)}
    assert sorted(simulate("weighted", ctx, replies).cancelled) == ["c", "d"]


# --------------------------------------------------------------------- first_success


def test_first_success_takes_the_fastest_valid_and_cancels_the_rest() -> None:
    replies = {"a": r("slow", 100), "b": r(None, 5), "c": r("fast", 10)}
    trace = simulate("first_success", context(ABC), replies)
    assert trace.selection is not None
    assert trace.selection.winner.model == "c"
    assert trace.cancelled == ["a"]


def test_first_success_skips_empty_and_filtered_answers() -> None:
    replies = {
        "a": r("  ", 5),
        "b": Reply("x", 6, finish_reason="content_filter"),
        "c": r("ok", 50),
    }
    trace = simulate("first_success", context(ABC), replies)
    assert trace.selection is not None
    assert trace.selection.winner.model == "c"


def test_hedging_costs_one_call_when_the_first_model_is_fast() -> None:
    replies = {"a": r("fast", 10), "b": r("b", 10), "c": r("c", 10)}
    trace = simulate("first_success", context(ABC, first_success={"hedge_delay_ms": 50}), replies)
    assert trace.launched_models == ["a"]
    assert trace.selection is not None


def test_hedging_starts_the_next_model_after_the_delay_or_a_failure() -> None:
    replies = {"a": r("slow", 500), "b": r(None, 5), "c": r("c", 20)}
    trace = simulate("first_success", context(ABC, first_success={"hedge_delay_ms": 50}), replies)
    # a starts at 0; at 50 ms b starts; b fails at 55 ms, so c starts at once and wins.
    assert trace.launched_models == ["a", "b", "c"]
    assert trace.selection is not None
    assert trace.selection.winner.model == "c"
    assert trace.cancelled == ["a"]


def test_first_success_all_failed() -> None:
    trace = simulate("first_success", context(ABC), {m: r(None) for m in ABC})
    assert trace.selection is None


# ------------------------------------------------------------------- score_averaging


def test_score_averaging_asks_for_logprobs_and_pools_by_answer() -> None:
    replies = {
        "a": r("42", confidence=0.9),
        "b": r("The answer is 42", confidence=0.5),
        "c": r("41", confidence=0.8),
    }
    trace = simulate("score_averaging", context(ABC), replies)
    assert all(call.extra == {"logprobs": True} for call in trace.launched)
    assert trace.selection is not None
    # 42: (0.9 + 0.5) / 2 = 0.7 < 41: 0.8
    assert trace.selection.winner.model == "c"


def test_score_averaging_numeric_mean_and_median() -> None:
    replies = {
        "a": r("10", confidence=0.9),
        "b": r("20", confidence=0.5),
        "c": r("60", confidence=0.8),
    }
    mean = simulate("score_averaging", context(ABC, score_averaging={"numeric": "mean"}), replies)
    median = simulate(
        "score_averaging", context(ABC, score_averaging={"numeric": "median"}), replies
    )
    assert mean.selection is not None
    assert median.selection is not None
    assert mean.selection.message == {"role": "assistant", "content": "30"}
    assert median.selection.message == {"role": "assistant", "content": "20"}


def test_score_averaging_without_logprobs_falls_back_to_voting() -> None:
    replies = {"a": r("1"), "b": r("2"), "c": r("2")}
    trace = simulate("score_averaging", context(ABC), replies)
    assert trace.selection is not None
    assert trace.selection.winner.content == "2"
    assert trace.selection.details["fallback"] == "voting"
    assert "no logprobs" in trace.selection.reason


# ------------------------------------------------------------------------- reranking


@pytest.mark.parametrize(
    ("verdict", "winner"),
    [("2", "b"), ("Candidate 3", "c"), ('{"best": 1}', "a"), ("The best is Candidate 2.", "b")],
)
def test_reranking_follows_the_judge(verdict: str, winner: str) -> None:
    replies = {"a": r("1"), "b": r("2"), "c": r("3")}
    ctx = context(ABC, reranking={"judge_model": "j"})
    trace = simulate("reranking", ctx, replies, helpers={"j": r(verdict)})
    assert trace.selection is not None
    assert trace.selection.winner.model == winner
    judge_call = trace.launched[-1]
    assert judge_call.model == "j"
    prompt = judge_call.messages[0]["content"]  # type: ignore[index]
    assert "What is 6 x 7?" in prompt
    assert "### Candidate 3\n3" in prompt


@pytest.mark.parametrize("verdict", [None, "I cannot decide", "Candidate 1 or Candidate 2", "7"])
def test_reranking_falls_back_to_voting(verdict: str | None) -> None:
    replies = {"a": r("1"), "b": r("2"), "c": r("2")}
    trace = simulate(
        "reranking",
        context(ABC, reranking={"judge_model": "j"}),
        replies,
        helpers={"j": r(verdict)},
    )
    assert trace.selection is not None
    assert trace.selection.winner.content == "2"
    assert trace.selection.details["fallback"] == "voting"
    assert "fell back to voting" in trace.selection.reason


@pytest.mark.parametrize(
    ("text", "count", "expected"),
    [
        ("2", 3, 2),
        (" Candidate #3 ", 3, 3),
        ('```json\n{"choice": 1}\n```', 3, 1),
        ('{"best": "2"}', 3, 2),
        ("candidate 4", 3, None),
        ("0", 3, None),
        ("", 3, None),
        ("Candidates 1 and 2 are both fine", 3, None),
        ("I pick 2 of the 3", 3, None),
    ],
)
def test_parse_verdict(text: str, count: int, expected: int | None) -> None:
    assert parse_verdict(text, count) == expected


# ---------------------------------------------------------------------------- fusion


def test_fusion_returns_the_aggregators_answer() -> None:
    replies = {"a": r("1"), "b": r("2"), "c": r("2")}
    trace = simulate(
        "fusion",
        context(ABC, fusion={"aggregator_model": "g"}),
        replies,
        helpers={"g": r("It is 2.")},
    )
    assert trace.selection is not None
    assert trace.selection.winner.model == "g"
    assert trace.selection.winner.content == "It is 2."
    assert trace.launched[-1].extra["tools"] is None  # helper calls do not inherit tools


def test_fusion_falls_back_to_voting_when_the_aggregator_fails() -> None:
    replies = {"a": r("1"), "b": r("2"), "c": r("2")}
    trace = simulate(
        "fusion", context(ABC, fusion={"aggregator_model": "g"}), replies, helpers={"g": r(None)}
    )
    assert trace.selection is not None
    assert trace.selection.winner.content == "2"
    assert trace.selection.details["fallback"] == "voting"


# --------------------------------------------------------------------------- cascade


def test_cascade_accepts_a_confident_cheap_answer() -> None:
    replies = {"a": r("1", confidence=0.95), "b": r("2"), "c": r("3")}
    trace = simulate("cascade", context(ABC), replies)
    assert trace.launched_models == ["a"]
    assert trace.selection is not None
    assert trace.selection.details["cascade_depth"] == 1


def test_cascade_accepts_agreement_of_the_first_two() -> None:
    replies = {"a": r("7", confidence=0.5), "b": r("The answer is 7", confidence=0.6), "c": r("3")}
    trace = simulate("cascade", context(ABC), replies)
    assert trace.launched_models == ["a", "b"]
    assert trace.selection is not None
    assert trace.selection.winner.model == "a"


def test_cascade_follows_the_configured_order_and_escalates_to_the_end() -> None:
    replies = {
        "a": r("1", confidence=0.5),
        "b": r("2", confidence=0.5),
        "c": r("3", confidence=0.5),
    }
    trace = simulate("cascade", context(ABC, cascade={"order": ["c", "b"]}), replies)
    assert trace.launched_models == ["c", "b", "a"]
    assert trace.selection is not None
    assert trace.selection.details["cascade_depth"] == 3
    assert "all models asked" in trace.selection.reason


def test_cascade_escalates_to_the_full_ensemble() -> None:
    replies = {"a": r("1", confidence=0.5), "b": r("2"), "c": r("2"), "d": r("2")}
    trace = simulate(
        "cascade", context(("a", "b", "c", "d"), cascade={"escalation": "ensemble"}), replies
    )
    assert trace.launched_models == ["a", "b", "c", "d"]
    assert trace.selection is not None
    assert trace.selection.winner.content == "2"


def test_cascade_all_failed() -> None:
    trace = simulate("cascade", context(ABC), {m: r(None) for m in ABC})
    assert trace.selection is None
    assert trace.launched_models == ["a", "b", "c"]


# ------------------------------------------------------------------------- registry


def test_registry_and_required_settings() -> None:
    assert set(STRATEGIES) == {
        "voting",
        "weighted",
        "first_success",
        "score_averaging",
        "reranking",
        "fusion",
        "cascade",
    }
    empty = StrategySettings()
    missing = {name: s.missing_setting(empty) for name, s in STRATEGIES.items()}
    assert missing["reranking"] == "ensemble.reranking.judge_model"
    assert missing["fusion"] == "ensemble.fusion.aggregator_model"
    assert [m for n, m in missing.items() if n not in ("reranking", "fusion")] == [None] * 5


@pytest.mark.parametrize(
    ("candidate", "valid"),
    [
        (Candidate("a", Status.OK, {"content": "x"}, "stop"), True),
        (Candidate("a", Status.OK, {"content": "x"}, "length"), True),
        (Candidate("a", Status.OK, {"content": "x"}, None), True),
        (
            Candidate("a", Status.OK, {"content": None, "tool_calls": [{"id": "1"}]}, "tool_calls"),
            True,
        ),
        (Candidate("a", Status.OK, {"content": "  "}, "stop"), False),
        (Candidate("a", Status.OK, {"content": "x"}, "content_filter"), False),
        (Candidate("a", Status.ERROR, error="HTTP 500"), False),
        (Candidate("a", Status.TIMEOUT, error="late"), False),
    ],
)
def test_candidate_validity(candidate: Candidate, valid: bool) -> None:
    assert candidate.valid is valid


def test_fusion_keeps_the_tools_when_candidates_call_them() -> None:
    call = {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    ctx = context(("a",), fusion={"aggregator_model": "g"})
    plan = STRATEGIES["fusion"].plan(ctx)
    from ensemble_extproc.strategies.base import Launch, Progress, Role, Wait

    step = next(plan)
    assert isinstance(step, Launch)
    member = Candidate(
        "a",
        Status.OK,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        "tool_calls",
        order=0,
    )
    step = plan.send(Progress(()))
    assert isinstance(step, Wait)
    step = plan.send(Progress((member,)))
    assert isinstance(step, Launch)
    [aggregator_call] = step.calls
    assert aggregator_call.role is Role.AGGREGATOR
    assert "tools" not in aggregator_call.extra
    assert aggregator_call.extra["stream"] is None
    assert "tool call: f({})" in aggregator_call.messages[-1]["content"]  # type: ignore[index]
