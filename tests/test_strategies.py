"""Table tests of the aggregation strategies (pure functions over candidates)."""

from __future__ import annotations

import pytest

from ensemble_extproc.strategies import STRATEGIES, Candidate, Status
from ensemble_extproc.strategies.voting import normalise

MODELS = ("a", "b", "c", "d")


def ok(model: str, content: str, order: int, finish: str | None = "stop") -> Candidate:
    message = {"role": "assistant", "content": content}
    return Candidate(model, Status.OK, message=message, finish_reason=finish, order=order)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris", "paris"),
        ("  Paris. ", "paris"),
        ("PARIS!!", "paris"),
        ("The  answer\n is 42.", "the answer is 42"),
        ("42?", "42"),
        ("Yes;", "yes"),
        ("\u5df4\u9ece\u3002", "\u5df4\u9ece"),
        ("3.14", "3.14"),
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


@pytest.mark.parametrize(
    ("candidates", "winner", "agreement"),
    [
        # Normalised majority beats the faster minority.
        ([ok("c", "Lyon", 0), ok("a", "Paris.", 1), ok("b", "paris", 2)], "a", 2 / 3),
        # Unanimous.
        ([ok("a", "4", 0), ok("b", "4", 1), ok("c", "4.", 2)], "a", 1.0),
        # Tie: the group whose first member is earliest in the model order wins,
        # whatever order the answers arrived in.
        ([ok("b", "yes", 0), ok("a", "no", 1)], "a", 1 / 2),
        ([ok("d", "x", 0), ok("c", "y", 1), ok("b", "x", 2), ok("a", "y", 3)], "a", 1 / 2),
        # The representative of the winning group is its earliest model, full text kept.
        ([ok("c", "Paris", 0), ok("b", "PARIS!", 1), ok("a", "Rome", 2)], "b", 2 / 3),
        # A single valid answer.
        ([ok("b", "only", 0)], "b", 1.0),
    ],
)
def test_voting(candidates: list[Candidate], winner: str, agreement: float) -> None:
    selection = STRATEGIES["voting"].select(candidates, MODELS)
    assert selection.winner.model == winner
    assert selection.agreement == pytest.approx(agreement)
    assert selection.winner.content == next(c.content for c in candidates if c.model == winner)


def test_voting_waits_for_every_answer() -> None:
    voting = STRATEGIES["voting"]
    two = [ok("a", "x", 0), ok("b", "x", 1)]
    assert voting.enough(two, pending=1) is False
    assert voting.enough(two, pending=0) is True


def test_voting_compares_tool_calls_by_name_and_arguments() -> None:
    def call(model: str, args: str, order: int) -> Candidate:
        tool = {"type": "function", "function": {"name": "weather", "arguments": args}}
        message = {"role": "assistant", "content": None, "tool_calls": [{"id": model, **tool}]}
        return Candidate(model, Status.OK, message=message, finish_reason="tool_calls", order=order)

    candidates = [
        call("a", '{"city":"Oslo"}', 0),
        call("b", '{"city":"Rome"}', 1),
        call("c", '{"city":"Rome"}', 2),
    ]
    selection = STRATEGIES["voting"].select(candidates, MODELS)
    assert selection.winner.model == "b"
    assert selection.agreement == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("candidates", "winner"),
    [
        ([ok("c", "slow but first", 0), ok("a", "x", 1)], "c"),
        ([ok("a", "x", 2), ok("b", "y", 1)], "b"),
    ],
)
def test_first_success_picks_the_earliest_finisher(
    candidates: list[Candidate], winner: str
) -> None:
    selection = STRATEGIES["first_success"].select(candidates, MODELS)
    assert selection.winner.model == winner


def test_first_success_is_done_at_the_first_valid_answer() -> None:
    first = STRATEGIES["first_success"]
    assert first.enough([], pending=3) is False
    assert first.enough([ok("a", "x", 0)], pending=2) is True
    assert first.natural_min_responses == 1


@pytest.mark.parametrize(
    ("candidate", "valid"),
    [
        (ok("a", "text", 0), True),
        (ok("a", "text", 0, finish="length"), True),
        (ok("a", "text", 0, finish=None), True),
        (ok("a", "   ", 0), False),
        (ok("a", "text", 0, finish="content_filter"), False),
        (Candidate("a", Status.ERROR, error="HTTP 500"), False),
        (Candidate("a", Status.TIMEOUT, error="late"), False),
    ],
)
def test_candidate_validity(candidate: Candidate, valid: bool) -> None:
    assert candidate.valid is valid
