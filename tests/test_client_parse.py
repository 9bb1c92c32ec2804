"""Endpoint answers that are not usable completions become failed candidates with a reason."""

from __future__ import annotations

import json
import math

import pytest

from ensemble_extproc.strategies import Status
from ensemble_extproc.upstream.client import candidate_from_response


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
        (500, b'{"error": {"message": "overloaded"}}', False, "HTTP 500: overloaded"),
        (429, b"slow down", False, "HTTP 429: slow down"),
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
