"""Resuming a broken stream, the pure parts: the continuation request in each style and
how a server reads it, which model resumes, the echo a server may send back, the whole
answer, and the usage a broken call is counted."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ensemble_extproc.continuation import (
    STYLES,
    ContinuationRefused,
    continuation_body,
    requested_continuation,
)
from ensemble_extproc.strategies import Candidate, Failure, Status, Usage
from ensemble_extproc.strategies.base import Continuation
from ensemble_extproc.upstream.resume import (
    EchoFilter,
    counted_usage,
    joined,
    next_resumer,
    resumable,
)

BODY: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "user", "content": "Tell me about Paris"}],
    "max_tokens": 100,
}
PARTIAL = "Paris is the capital"


def test_continue_final_message_is_vllms_request() -> None:
    body = continuation_body(BODY, PARTIAL, 4, "continue_final_message")
    assert body["messages"][-1] == {"role": "assistant", "content": PARTIAL}
    assert body["continue_final_message"] is True
    assert body["add_generation_prompt"] is False
    # The answer's limit is shared: what the broken call used is taken off.
    assert body["max_tokens"] == 96
    assert BODY["messages"] == [{"role": "user", "content": "Tell me about Paris"}]  # not mutated


def test_prefill_and_prefix() -> None:
    prefill = continuation_body(BODY, PARTIAL, 4, "prefill")
    assert prefill["messages"][-1] == {"role": "assistant", "content": PARTIAL}
    assert "continue_final_message" not in prefill
    prefix = continuation_body(BODY, PARTIAL, 4, "prefix")
    assert prefix["messages"][-1] == {"role": "assistant", "content": PARTIAL, "prefix": True}


def test_a_limit_already_used_up_still_asks_for_one_token() -> None:
    body = continuation_body({**BODY, "max_completion_tokens": 3}, PARTIAL, 10, "prefill")
    assert body["max_tokens"] == 90
    assert body["max_completion_tokens"] == 1


@pytest.mark.parametrize("style", STYLES)
def test_a_server_reads_back_the_text_it_is_asked_to_continue(style: Any) -> None:
    body = continuation_body(BODY, PARTIAL, 4, style)
    assert requested_continuation(body, style) == PARTIAL
    # A plain request is a request for a new answer.
    assert requested_continuation(BODY, style) is None


def test_a_server_that_declares_no_style_answers_anew() -> None:
    body = continuation_body(BODY, PARTIAL, 4, "prefill")
    assert requested_continuation(body, None) is None
    # prefix needs its flag.
    assert requested_continuation(body, "prefix") is None


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ({"continue_final_message": True}, "cannot both be true"),
        ({"continue_final_message": True, "add_generation_prompt": True}, "cannot both be true"),
    ],
)
def test_vllms_own_refusals(extra: dict[str, Any], problem: str) -> None:
    body = {**continuation_body(BODY, PARTIAL, 4, "prefill"), **extra}
    with pytest.raises(ContinuationRefused, match=problem):
        requested_continuation(body, "continue_final_message")
    no_final = {**BODY, "continue_final_message": True, "add_generation_prompt": False}
    with pytest.raises(ContinuationRefused, match="final assistant message"):
        requested_continuation(no_final, "continue_final_message")


STYLE = {"a": "continue_final_message", "b": None, "c": "prefill", "d": "prefix"}


@pytest.mark.parametrize(
    ("failed", "expected"),
    [
        ({"a"}, "c"),  # b cannot continue: skipped
        ({"a", "c"}, "d"),
        ({"c"}, "a"),  # the broken call was c: a (cancelled, say) is still available
        ({"a", "c", "d"}, None),
    ],
)
def test_the_next_model_is_the_first_in_order_that_can_and_has_not_failed(
    failed: set[str], expected: str | None
) -> None:
    assert next_resumer(list(STYLE), failed, STYLE.get) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (Candidate("a", Status.ERROR, failure=Failure.CONNECTION), True),
        (Candidate("a", Status.TIMEOUT), True),
        (Candidate("a", Status.SKIPPED, sent=False), True),
        (Candidate("a", Status.ERROR, failure=Failure.TOO_LARGE), False),
        (Candidate("a", Status.CANCELLED), False),
        (Candidate("a", Status.OK, {"content": ""}, "stop"), False),
        (Candidate("a", Status.OK, {"content": "x"}, "content_filter"), False),
    ],
)
def test_which_failures_are_resumed(candidate: Candidate, expected: bool) -> None:
    assert resumable(candidate) is expected


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (["the rest."], "the rest."),  # the continuation alone (most servers)
        (["Paris is ", "the capital", " of France."], " of France."),  # prefix, then the rest
        (["Paris is the capital of France."], " of France."),
        (["Par", "is"], "Paris"),  # the start of the prefix, but not all of it: kept at the end
        (["Lyon"], "Lyon"),
    ],
)
def test_the_echo_filter_drops_a_repeat_of_the_prefix(pieces: list[str], expected: str) -> None:
    echo = EchoFilter(PARTIAL)
    out = "".join(echo.feed(piece) for piece in pieces) + echo.flush()
    assert out == expected


def fed(prefix: str, sent: str, cuts: int) -> str:
    step = max(1, len(sent) // cuts)
    echo = EchoFilter(prefix)
    out = "".join(echo.feed(sent[i : i + step]) for i in range(0, len(sent), step))
    return out + echo.flush()


@given(st.text(max_size=30), st.text(max_size=30), st.integers(1, 5))
def test_the_echo_filter_never_loses_a_continuation(prefix: str, rest: str, cuts: int) -> None:
    """However the server's text is cut into chunks: sent with a repeat of the prefix, the
    client gets exactly the continuation; sent alone, all of it (unless it itself starts
    with the whole prefix, which reads as a repeat)."""
    assert fed(prefix, prefix + rest, cuts) == rest
    if not (prefix and rest.startswith(prefix)):
        assert fed(prefix, rest, cuts) == rest


def test_a_continuation_joined_is_the_whole_answer() -> None:
    continuation = Candidate(
        "b", Status.OK, {"role": "assistant", "content": " of France."}, "stop"
    )
    whole = joined(continuation, Continuation(PARTIAL, 4))
    assert whole.content == "Paris is the capital of France."
    assert whole.answer != continuation.answer  # extracted again, from the whole


def test_broken_calls_are_counted_from_their_chunks_and_the_next_prompt() -> None:
    """a relayed 6 chunks and broke; b was never sent (circuit open); c relayed 4 and
    broke; d finished and reported 20 prompt tokens (the question's 10, and the 10
    chunks it continued)."""
    a = Candidate("a", Status.ERROR, failure=Failure.CONNECTION)
    b = Candidate("b", Status.SKIPPED, sent=False)
    c = Candidate("c", Status.TIMEOUT)
    d = Candidate("d", Status.OK, {"content": "x"}, "stop", Usage(20, 7, 27))
    counted = counted_usage([(a, 6), (b, 0), (c, 4)], d)
    assert [x.usage for x in counted] == [Usage(10, 6, 16), None, Usage(16, 4, 20)]
    assert [x.usage_counted for x in counted] == [True, False, True]
    # No call reported usage at the end: nothing to count from.
    assert counted_usage([(a, 6)], None) == [a]
