"""The demo backends break a stream at a chosen point (``fault_after_pieces``, with
``stream_stop`` or ``stream_error``) and continue a partial answer in the style they
declare (``continuation``), over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from ensemble_extproc.config.demo import DemoModel
from ensemble_extproc.continuation import continuation_body
from ensemble_extproc.demo.server import DemoServers, start_demo_servers

STORY = "Paris is the capital of France. It sits on the Seine."
QUESTION = {"messages": [{"role": "user", "content": "Tell me about Paris"}]}


@pytest.fixture
async def servers() -> AsyncIterator[DemoServers]:
    models = [
        DemoModel("stop-3", 0, answers=(STORY,), fault="stream_stop", fault_after_pieces=3),
        DemoModel("error-2", 0, answers=(STORY,), fault="stream_error", fault_after_pieces=2),
        DemoModel("vllm", 0, answers=(STORY,), continuation="continue_final_message"),
        DemoModel("prefill", 0, answers=(STORY,), continuation="prefill"),
        DemoModel("prefix", 0, answers=(STORY,), continuation="prefix"),
        DemoModel("other", 0, answers=("Lyon is not the capital.",), continuation="prefill"),
        DemoModel("plain", 0, answers=(STORY,)),
    ]
    async with await start_demo_servers(models) as running:
        yield running


async def stream(
    session: aiohttp.ClientSession, servers: DemoServers, model: str, body: dict[str, Any]
) -> tuple[str, list[dict[str, Any]], bool]:
    """(the content, the other events, whether the stream ended with [DONE])."""
    url = f"{servers.urls[model]}/chat/completions"
    raw = b""
    async with session.post(url, json={**body, "stream": True}) as resp:
        assert resp.status == 200
        try:
            async for data in resp.content.iter_any():
                raw += data
        except aiohttp.ClientPayloadError:
            pass  # stream_stop closes the connection mid-body
    payloads = [e.removeprefix("data: ") for e in raw.decode().split("\n\n") if e]
    done = payloads[-1] == "[DONE]"
    events = [json.loads(p) for p in payloads if p != "[DONE]"]
    content = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")
    )
    return content, [e for e in events if "error" in e], done


async def test_stream_stop_breaks_after_the_chosen_piece(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    content, errors, done = await stream(session, servers, "stop-3", QUESTION)
    assert content == "Paris is the "
    assert errors == []
    assert not done


async def test_stream_error_sends_an_error_event_where_it_breaks(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    content, errors, done = await stream(session, servers, "error-2", QUESTION)
    assert content == "Paris is "
    assert [e["error"]["type"] for e in errors] == ["server_error"]
    assert done


@pytest.mark.parametrize("model", ["vllm", "prefill", "prefix"])
async def test_a_replica_continues_its_own_answer(
    servers: DemoServers, session: aiohttp.ClientSession, model: str
) -> None:
    style = {"vllm": "continue_final_message"}.get(model, model)
    body = continuation_body(QUESTION, "Paris is the ", 3, style)  # type: ignore[arg-type]
    content, _, done = await stream(session, servers, model, body)
    assert content == "capital of France. It sits on the Seine."
    assert done


async def test_another_model_continues_with_its_own_answer(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    body = continuation_body(QUESTION, "Paris is", 2, "prefill")
    content, _, _ = await stream(session, servers, "other", body)
    assert content == " Lyon is not the capital."


async def test_a_model_that_cannot_continue_answers_anew(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    body = continuation_body(QUESTION, "Paris is the ", 3, "prefill")
    content, _, _ = await stream(session, servers, "plain", body)
    assert content == STORY


async def test_vllms_refusal_is_a_400(servers: DemoServers, session: aiohttp.ClientSession) -> None:
    """vLLM refuses continue_final_message with add_generation_prompt left at true."""
    body = {**continuation_body(QUESTION, "Paris", 1, "prefill"), "continue_final_message": True}
    url = f"{servers.urls['vllm']}/chat/completions"
    async with session.post(url, json=body) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert "add_generation_prompt" in error["message"]
