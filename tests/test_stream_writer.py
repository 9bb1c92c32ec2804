"""Unit tests of streaming: ``sse.Accumulator`` (an endpoint's chunks into one message) and
``StreamWriter`` (the relay race of first_success and fusion, and the end of a stream).

Over HTTP, tests/test_upstream_http.py streams through a live upstream; here the writer
writes to a recording transport, so each step of the race can be checked in order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import example, given
from hypothesis import strategies as st

from ensemble_extproc import headers as h
from ensemble_extproc.spec import EnsembleSpec
from ensemble_extproc.strategies import Candidate, Selection, Status, Usage
from ensemble_extproc.upstream.orchestrator import Outcome, Relay
from ensemble_extproc.upstream.sse import DONE, Accumulator, message_choices
from ensemble_extproc.upstream.stream_writer import StreamWriter

SPEC = EnsembleSpec(("a", "b"), "first_success", 1)
A, B = Relay("a", 0), Relay("b", 1)


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    """An endpoint's chunk, under its own id and model."""
    choice = {"index": 3, "delta": delta, "finish_reason": finish}
    return {"id": "theirs", "object": "chat.completion.chunk", "model": "x", "choices": [choice]}


ROLE = chunk({"role": "assistant", "content": ""})


class Sent:
    """What a StreamWriter sent: the response's headers and its data events."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        transport = mock.Mock()
        transport.write = mock.AsyncMock(side_effect=self.raw.append)
        transport.write_headers = mock.AsyncMock()
        transport.write_eof = mock.AsyncMock()
        self.request = make_mocked_request("POST", "/v1/chat/completions", writer=transport)

    def events(self) -> list[Any]:
        data = b"".join(self.raw).decode()
        out: list[Any] = []
        for block in data.split("\n\n"):
            if block.startswith("data: "):
                payload = block.removeprefix("data: ")
                out.append(payload if payload == "[DONE]" else json.loads(payload))
        return out

    def contents(self) -> list[str]:
        return [
            e["choices"][0]["delta"].get("content", "")
            for e in self.events()
            if isinstance(e, dict) and e.get("choices")
        ]


def writer(sent: Sent, include_usage: bool = False) -> tuple[StreamWriter, list[Relay]]:
    commits: list[Relay] = []
    stream = StreamWriter(sent.request, SPEC, include_usage)
    stream.on_commit = commits.append
    return stream, commits


def outcome(winner: str | None, *, usage: Usage | None = None) -> Outcome:
    candidates = tuple(
        Candidate(
            model,
            Status.OK,
            {"role": "assistant", "content": f"from {model}"},
            "stop",
            usage=usage,
        )
        for model in SPEC.models
    )
    by_model = {c.model: c for c in candidates}
    selection = Selection(by_model[winner], reason="first") if winner else None
    return Outcome(SPEC, candidates, selection, False, 2, 1)


# --------------------------------------------------------------------- the relay race


async def test_the_first_call_with_output_is_committed_and_the_others_are_refused() -> None:
    sent = Sent()
    stream, commits = writer(sent)
    # Role chunks carry no output: nothing is decided, nothing is sent yet.
    assert await stream.offer(A, ROLE)
    assert await stream.offer(B, ROLE)
    assert stream.response is None
    assert commits == []
    # b's first words win the race: its held role chunk goes out first, then the words.
    assert await stream.offer(B, chunk({"content": "Paris"}))
    assert stream.committed == B
    assert commits == [B]
    assert stream.response is not None
    assert stream.response.headers[h.RESP_SELECTED_MODEL] == "b"
    # The loser's output is refused (its call is then cancelled by the orchestrator).
    assert not await stream.offer(A, chunk({"content": "Lyon"}))
    assert await stream.offer(B, chunk({"content": " it is."}))
    assert sent.contents() == ["", "Paris", " it is."]
    events = sent.events()
    # Every chunk is ours: our id, model and index, whatever the endpoint sent.
    assert {e["id"] for e in events} == {stream.head.id}
    assert {e["model"] for e in events} == {"ensemble/first_success"}
    assert {e["choices"][0]["index"] for e in events} == {0}


async def test_two_calls_offering_output_at_once_commit_exactly_one() -> None:
    sent = Sent()
    stream, commits = writer(sent)
    results = await asyncio.gather(
        stream.offer(A, chunk({"content": "one"})), stream.offer(B, chunk({"content": "two"}))
    )
    assert sorted(results) == [False, True]
    assert len(commits) == 1
    winner_text = {A: "one", B: "two"}[commits[0]]
    assert sent.contents() == [winner_text]


async def test_a_tool_call_is_output_too() -> None:
    sent = Sent()
    stream, commits = writer(sent)
    call = {"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}
    assert await stream.offer(A, chunk({"tool_calls": [call]}))
    assert commits == [A]


async def test_usage_only_chunks_are_not_relayed_and_the_finish_chunk_is_held() -> None:
    sent = Sent()
    stream, _ = writer(sent, include_usage=True)
    await stream.offer(A, chunk({"content": "Paris"}))
    await stream.offer(A, {"choices": [], "usage": {"prompt_tokens": 1}})
    await stream.offer(A, chunk({}, finish="stop"))
    # The finish chunk waits to carry the ensemble object.
    assert sent.contents() == ["Paris"]
    usage = Usage(3, 2, 5)
    await stream.finish(outcome("a", usage=usage))
    *_, final, totals, done = sent.events()
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["ensemble"]["selected_model"] == "a"
    # The usage chunk counts every call of the ensemble, not the relayed one's own.
    assert totals["choices"] == []
    assert totals["usage"] == {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10}
    assert done == "[DONE]"


async def test_a_committed_stream_whose_call_failed_ends_with_an_error_event() -> None:
    sent = Sent()
    stream, _ = writer(sent)
    await stream.offer(A, chunk({"content": "Par"}))
    # The strategy selected another answer: what was sent cannot be taken back.
    await stream.finish(outcome("b"))
    last = sent.events()[-1]
    assert last["error"]["code"] == "stream_failed"
    assert "a" in last["error"]["message"]
    assert last["ensemble"]["selected_model"] == "b"
    assert b"".join(sent.raw).endswith(b"\n\n")
    assert DONE not in b"".join(sent.raw)


async def test_a_decided_answer_is_streamed_as_chunks_after_keepalives() -> None:
    sent = Sent()
    stream, _ = writer(sent)
    await stream.keepalive()
    assert b"".join(sent.raw).startswith(b": keep-alive")
    await stream.finish(outcome("b"))
    assert "".join(sent.contents()) == "from b"
    assert sent.events()[-1] == "[DONE]"


async def test_no_answer_after_keepalives_is_an_error_event_without_done() -> None:
    sent = Sent()
    stream, _ = writer(sent)
    await stream.keepalive()
    await stream.finish(outcome(None))
    [error] = sent.events()
    assert error["error"]["code"] == "ensemble_quorum_not_met"
    assert DONE not in b"".join(sent.raw)


# ---------------------------------------------------------------------- Accumulator


def accumulate(*chunks: Mapping[str, Any]) -> Accumulator:
    acc = Accumulator()
    for item in chunks:
        acc.add(item)
    return acc


def test_the_accumulator_joins_content_and_keeps_finish_usage_and_logprobs() -> None:
    logprobs = {"content": [{"token": "Pa", "logprob": -0.1}, {"token": "ris", "logprob": -0.3}]}
    acc = accumulate(
        ROLE,
        {"choices": [{"delta": {"content": "Pa"}, "logprobs": logprobs}]},
        chunk({"content": "ris"}),
        chunk({}, finish="stop"),
        {"choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}},
    )
    assert acc.message() == {"role": "assistant", "content": "Paris"}
    assert acc.finish_reason == "stop"
    assert acc.usage == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}
    assert acc.logprobs == [-0.1, -0.3]
    assert acc.error is None


def test_the_accumulator_assembles_tool_calls_by_index() -> None:
    def call(index: Any, **fields: Any) -> dict[str, Any]:
        return chunk({"tool_calls": [{"index": index, **fields}]})

    acc = accumulate(
        call(1, id="c2", function={"name": "g", "arguments": ""}),
        call(0, id="c1", function={"name": "get_", "arguments": '{"ci'}),
        call(0, function={"name": "weather", "arguments": 'ty": "Paris"}'}),
        call(1, function={"arguments": "{}"}),
        call("odd", function={"name": "h"}),  # an index that is not an integer: slot 0
    )
    message = acc.message()
    assert message["content"] is None
    assert message["tool_calls"] == [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "get_weatherh", "arguments": '{"city": "Paris"}'},
        },
        {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]


@pytest.mark.parametrize(
    "odd",
    [
        {},
        {"choices": "x"},
        {"choices": []},
        {"choices": [None]},
        {"choices": [{"delta": "x"}]},
        {"choices": [{"delta": {"content": 5, "tool_calls": ["x", None]}}]},
        {"choices": [{"delta": {}, "finish_reason": 3}]},
        {"choices": [{"delta": {}, "logprobs": {"content": [{"logprob": "x"}, 7]}}]},
        {"usage": "x"},
    ],
)
def test_the_accumulator_ignores_what_is_not_a_chunk(odd: dict[str, Any]) -> None:
    acc = accumulate(chunk({"content": "ok"}), odd)
    assert acc.message() == {"role": "assistant", "content": "ok"}
    assert acc.finish_reason is None
    assert acc.usage is None
    assert acc.logprobs == []


def test_the_accumulator_keeps_an_error_event() -> None:
    acc = accumulate(chunk({"content": "Pa"}), {"error": {"message": "boom", "code": "x"}})
    assert acc.error == {"message": "boom", "code": "x"}


@pytest.mark.parametrize(
    ("item", "output"),
    [
        (chunk({"content": "x"}), True),
        (chunk({"tool_calls": [{"index": 0}]}), True),
        (chunk({"content": ""}), False),
        (ROLE, False),
        (chunk({}, finish="stop"), False),
        ({"choices": []}, False),
        ({"choices": [{"delta": None}]}, False),
    ],
)
def test_has_output(item: dict[str, Any], output: bool) -> None:
    assert Accumulator.has_output(item) is output


@given(
    content=st.text(max_size=300),
    calls=st.lists(
        st.fixed_dictionaries(
            {
                "id": st.text(min_size=1, max_size=5),
                "type": st.just("function"),
                "function": st.fixed_dictionaries(
                    {"name": st.text(min_size=1, max_size=8), "arguments": st.text(max_size=30)}
                ),
            }
        ),
        max_size=3,
    ),
)
# Found by this test: a leading space (and a lone one) was dropped when the answer was cut
# into chunks.
@example(content=" ", calls=[])
@example(content="  Paris, of course.  ", calls=[])
def test_a_message_streamed_as_chunks_accumulates_back_to_itself(
    content: str, calls: list[dict[str, Any]]
) -> None:
    """What the writer streams for a decided answer is what a client reassembles."""
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = calls
    acc = accumulate(*({"choices": [c]} for c in message_choices(message, "stop")))
    assert acc.message() == message
    assert acc.finish_reason == "stop"
