"""Endpoint answers that are not usable completions become failed candidates with a reason."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ensemble_extproc.strategies import Failure, Status
from ensemble_extproc.upstream.client import candidate_from_response, candidate_from_stream
from ensemble_extproc.upstream.sse import Accumulator, loads


def completion(**choice: object) -> bytes:
    base = {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    return json.dumps(
        {
            "choices": [{**base, **choice}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
    ).encode()


@pytest.mark.parametrize(
    ("status", "raw", "valid", "reason"),
    [
        (200, completion(), True, None),
        (200, b"{not json", False, "answer is not JSON"),
        (200, b'{"choices": []}', False, "answer is a completion without choices"),
        (200, b'{"object": "chat.completion"}', False, "answer is a completion without choices"),
        (200, b'{"choices": [{"index": 0}]}', False, "choice has no message"),
        (200, completion(message={"role": "assistant", "content": ""}), False, "empty answer"),
        (200, completion(finish_reason="content_filter"), False, "finish_reason 'content_filter'"),
        # Error bodies are summarised: the status, the error's code (else type), and only
        # for a mistake in the request its message (see tests/test_secrets.py).
        (500, b'{"error": {"message": "overloaded"}}', False, "HTTP 500 Internal Server Error"),
        (429, b"slow down", False, "HTTP 429 Too Many Requests"),
        (
            401,
            b'{"error": {"message": "bad key sk-1", "type": "auth", "code": "invalid_api_key"}}',
            False,
            "HTTP 401 Unauthorized (invalid_api_key)",
        ),
        (
            400,
            b'{"error": {"message": "max_tokens is too large", "type": "invalid_request_error"}}',
            False,
            "HTTP 400 Bad Request (invalid_request_error): max_tokens is too large",
        ),
        (599, b"", False, "HTTP 599"),
    ],
)
def test_answers_that_cannot_be_used(status: int, raw: bytes, valid: bool, reason: str) -> None:
    candidate = candidate_from_response("m", status, raw, 12.0)
    assert candidate.valid is valid
    if not valid:
        assert candidate.invalid_reason == reason
    else:
        assert candidate.status is Status.OK
        assert candidate.usage is not None
        assert candidate.usage.total_tokens == 4


def test_mean_logprob_is_read_from_the_choice() -> None:
    logprobs = {
        "content": [
            {"token": "a", "logprob": math.log(0.5)},
            {"token": "b", "logprob": math.log(0.5)},
        ]
    }
    candidate = candidate_from_response("m", 200, completion(logprobs=logprobs), 1.0)
    assert candidate.mean_logprob == pytest.approx(math.log(0.5))
    broken = {"content": [{"token": "a", "logprob": "high"}]}
    assert candidate_from_response("m", 200, completion(logprobs=broken), 1.0).mean_logprob is None


def _outcome(*statuses: int | None) -> object:
    from ensemble_extproc.spec import EnsembleSpec
    from ensemble_extproc.strategies import Candidate, Failure
    from ensemble_extproc.upstream.orchestrator import Outcome

    candidates = tuple(
        Candidate(
            f"m{i}", Status.ERROR, error=f"HTTP {s}: bad", http_status=s, failure=Failure.HTTP
        )
        if s is not None
        else Candidate(f"m{i}", Status.TIMEOUT, error="late")
        for i, s in enumerate(statuses)
    )
    spec = EnsembleSpec(tuple(c.model for c in candidates), "voting", 1)
    return Outcome(spec, candidates, None, False, len(candidates), 0)


@pytest.mark.parametrize(
    ("statuses", "status", "code"),
    [
        ((400, 400), 400, "rejected_by_models"),
        ((422, 422, 422), 400, "rejected_by_models"),
        ((400, 422), 502, "ensemble_quorum_not_met"),
        ((400, None), 502, "ensemble_quorum_not_met"),
        ((429, 429), 502, "ensemble_quorum_not_met"),
        ((500, 500), 502, "ensemble_quorum_not_met"),
    ],
)
def test_a_request_every_model_rejects_is_the_clients_error(
    statuses: tuple[int | None, ...], status: int, code: str
) -> None:
    from ensemble_extproc.upstream.response import failure

    error = failure(_outcome(*statuses))  # type: ignore[arg-type]
    assert (error.status, error.code) == (status, code)


@pytest.mark.parametrize(
    ("status", "raw", "failure"),
    [
        (200, completion(), None),
        (200, b"{not json", Failure.BAD_ANSWER),
        (200, b'{"choices": [{"index": 0}]}', Failure.BAD_ANSWER),
        (503, b"busy", Failure.HTTP),
    ],
)
def test_the_failure_kind_is_recorded(status: int, raw: bytes, failure: Failure | None) -> None:
    assert candidate_from_response("m", status, raw, 1.0).failure is failure


@pytest.mark.parametrize(
    "tokens",
    [
        [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -0.3}],
        [{"token": "a", "logprob": -0.1}, {"token": "b"}],  # one token without its logprob
        [{"token": "a", "logprob": True}],  # a boolean is not a number
        [{"token": "a", "logprob": -0.1}, 7],
        [],
    ],
)
def test_a_streamed_answer_has_the_confidence_of_the_same_answer_whole(
    tokens: list[object],
) -> None:
    """Streamed, the tokens' logprobs come a chunk at a time: the same rule reads them (a
    stream used to average the tokens that had a number and count true as 1.0)."""
    whole = candidate_from_response("m", 200, completion(logprobs={"content": tokens}), 1.0)
    acc = Accumulator()
    acc.add({"choices": [{"delta": {"role": "assistant", "content": "hi"}}]})
    for token in tokens:
        acc.add({"choices": [{"delta": {}, "logprobs": {"content": [token]}}]})
    streamed = candidate_from_stream("m", acc, 1.0)
    assert streamed.valid
    assert whole.valid
    assert streamed.mean_logprob == whole.mean_logprob


# ------------------------------------------------ endpoint JSON: read as json reads it

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def _read(reader: Callable[[bytes], Any], raw: bytes) -> str:
    """What a reader makes of ``raw``, comparable (repr: NaN is not equal to itself)."""
    try:
        return repr(reader(raw))
    except ValueError:
        return "ValueError"


@settings(max_examples=300, deadline=None)
@given(JSON_VALUES)
@example(float("nan"))  # NaN, Infinity: Python's writer and reader have them, JSON not
@example(float("inf"))
@example("\ud800")  # a lone surrogate, escaped
@example(10**40)
def test_an_endpoint_answer_is_read_as_json_reads_it(value: object) -> None:
    raw = json.dumps(value).encode()
    assert _read(loads, raw) == _read(json.loads, raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40) | st.text(max_size=40).map(lambda t: t.encode("utf-16")))
@example(b"1e400")
@example(b'{"a": 1, "a": 2}')
def test_any_bytes_are_read_or_refused_as_json_reads_them(raw: bytes) -> None:
    assert _read(loads, raw) == _read(json.loads, raw)
