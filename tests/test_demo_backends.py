"""Demo model backends, exercised over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import io
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from ensemble_extproc.config.demo import DEFAULT_ANSWER, DemoModel, DemoToolCall, parse_demo_models
from ensemble_extproc.demo.server import (
    DEMO_MODEL_HEADER,
    DemoServers,
    serve_demo_forever,
    start_demo_servers,
)
from ensemble_extproc.errors import ConfigError

ANSWERS = (
    "Alpha one two three four five.",
    "Beta says hello to {prompt} from {model}.",
    "Gamma is a demo answer.",
)
HELLO = {"messages": [{"role": "user", "content": "hello there"}]}


@pytest.fixture
async def servers() -> AsyncIterator[DemoServers]:
    models = [
        DemoModel("demo-a", 0, answers=ANSWERS),
        DemoModel("demo-slow", 0, latency_ms=2000),
        DemoModel("demo-words", 0, answers=("one two  three\nfour five six",)),
    ]
    async with await start_demo_servers(models) as running:
        yield running


async def post_chat(
    session: aiohttp.ClientSession, base: str, body: object
) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{base}/chat/completions", json=body) as resp:
        return resp.status, await resp.json()


async def get_json(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(url) as resp:
        assert resp.status == 200
        assert resp.headers[DEMO_MODEL_HEADER]
        data: dict[str, Any] = await resp.json()
        return data


async def stream_chat(session: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> list[str]:
    """Return the raw `data:` payloads of an SSE answer, in order."""
    async with session.post(f"{base}/chat/completions", json={**body, "stream": True}) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = await resp.text()
    events = [event for event in text.split("\n\n") if event]
    assert all(event.startswith("data: ") for event in events)
    return [event.removeprefix("data: ") for event in events]


def expected_answer(model: str, prompt: str, answers: tuple[str, ...] = ANSWERS) -> str:
    digest = hashlib.sha256(prompt.encode()).digest()
    template = answers[int.from_bytes(digest[:8], "big") % len(answers)]
    return template.replace("{model}", model).replace("{prompt}", prompt)


# ------------------------------------------------------------------ answers


async def test_answer_is_a_valid_chat_completion(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    body = {
        "model": "whatever-the-client-asked",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello there"},
        ],
    }
    async with session.post(f"{servers.urls['demo-a']}/chat/completions", json=body) as resp:
        assert resp.status == 200
        assert resp.headers[DEMO_MODEL_HEADER] == "demo-a"
        data = await resp.json()
    assert re.fullmatch(r"chatcmpl-demo-[0-9a-f]{32}", data["id"])
    assert data["object"] == "chat.completion"
    assert isinstance(data["created"], int)
    assert abs(data["created"] - time.time()) < 60
    assert data["model"] == "demo-a"
    assert data["system_fingerprint"] == "demo"
    [choice] = data["choices"]
    content = expected_answer("demo-a", "hello there")
    assert choice == {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": "stop",
        "logprobs": None,
    }
    words = len(content.split())
    assert data["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": words,
        "total_tokens": 4 + words,
    }


async def test_same_prompt_same_answer_and_placeholders(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    base = servers.urls["demo-a"]
    seen: set[str] = set()
    for prompt in [f"question {i} {{model}}" for i in range(12)]:
        body = {"messages": [{"role": "user", "content": prompt}]}
        first = (await post_chat(session, base, body))[1]["choices"][0]["message"]["content"]
        second = (await post_chat(session, base, body))[1]["choices"][0]["message"]["content"]
        assert first == second == expected_answer("demo-a", prompt)
        seen.add(first)
    # Several templates are actually used, and a prompt's own "{model}" is kept verbatim.
    assert len(seen) > 1
    assert any("to question" in answer and "{model} from demo-a" in answer for answer in seen)


async def test_last_user_message_with_content_parts(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    parts = [
        {"type": "text", "text": "look at"},
        {"type": "image_url", "image_url": {"url": "data:,"}},
        {"type": "text", "text": "this"},
    ]
    body = {
        "messages": [
            {"role": "user", "content": "an earlier question"},
            {"role": "assistant", "content": None},
            {"role": "user", "content": parts},
        ]
    }
    status, data = await post_chat(session, servers.urls["demo-a"], body)
    assert status == 200
    assert data["choices"][0]["message"]["content"] == expected_answer("demo-a", "look at\nthis")
    assert data["usage"]["prompt_tokens"] == 3 + 3


async def test_default_answer_names_the_demo_model(session: aiohttp.ClientSession) -> None:
    async with await start_demo_servers([DemoModel("demo-default", 0)]) as running:
        _, data = await post_chat(session, running.urls["demo-default"], HELLO)
    content = data["choices"][0]["message"]["content"]
    assert content == DEFAULT_ANSWER.replace("{model}", "demo-default")
    assert "demo" in content


async def test_lone_surrogate_prompt_is_answered(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    raw = b'{"messages": [{"role": "user", "content": "bad \\ud800 text"}]}'
    async with session.post(f"{servers.urls['demo-a']}/chat/completions", data=raw) as resp:
        assert resp.status == 200


# ---------------------------------------------------------------- failures


async def failure_statuses(
    session: aiohttp.ClientSession, model: DemoModel, count: int = 24
) -> list[int]:
    async with await start_demo_servers([model]) as running:
        return [
            (await post_chat(session, running.urls[model.name], HELLO))[0] for _ in range(count)
        ]


async def test_seeded_failures_are_reproducible(session: aiohttp.ClientSession) -> None:
    first = await failure_statuses(session, DemoModel("demo-f", 0, failure_rate=0.5, seed=7))
    again = await failure_statuses(session, DemoModel("demo-f", 0, failure_rate=0.5, seed=7))
    other = await failure_statuses(session, DemoModel("demo-f", 0, failure_rate=0.5, seed=8))
    assert first == again
    assert first != other
    assert set(first) == {200, 500}


@pytest.mark.parametrize(
    ("rate", "status", "expected"),
    [(0.0, 500, {200}), (1.0, 503, {503}), (1.0, 429, {429})],
)
async def test_failure_rate_bounds(
    session: aiohttp.ClientSession, rate: float, status: int, expected: set[int]
) -> None:
    model = DemoModel("demo-f", 0, failure_rate=rate, failure_status=status)
    assert set(await failure_statuses(session, model, count=10)) == expected


@pytest.mark.parametrize(("status", "err_type"), [(500, "server_error"), (429, "rate_limit_error")])
async def test_failure_is_an_openai_error(
    session: aiohttp.ClientSession, status: int, err_type: str
) -> None:
    model = DemoModel("demo-f", 0, failure_rate=1.0, failure_status=status)
    async with await start_demo_servers([model]) as running:
        got, data = await post_chat(session, running.urls["demo-f"], HELLO)
    assert got == status
    assert set(data["error"]) == {"message", "type", "param", "code"}
    assert data["error"]["type"] == err_type
    assert "demo model demo-f" in data["error"]["message"]


# ----------------------------------------------------------- latency, limits


async def test_latency_is_honoured(session: aiohttp.ClientSession) -> None:
    async with await start_demo_servers([DemoModel("demo-lat", 0, latency_ms=150)]) as running:
        started = time.monotonic()
        status, _ = await post_chat(session, running.urls["demo-lat"], HELLO)
        elapsed = time.monotonic() - started
    assert status == 200
    assert elapsed >= 0.15


@pytest.mark.parametrize(
    ("limits", "content", "finish"),
    [
        ({"max_tokens": 3}, "one two  three", "length"),
        ({"max_completion_tokens": 2}, "one two", "length"),
        ({"max_tokens": 5, "max_completion_tokens": 4}, "one two  three\nfour", "length"),
        ({"max_tokens": 6}, "one two  three\nfour five six", "stop"),
        ({"max_tokens": None}, "one two  three\nfour five six", "stop"),
    ],
)
async def test_max_tokens_truncates_words(
    servers: DemoServers,
    session: aiohttp.ClientSession,
    limits: dict[str, Any],
    content: str,
    finish: str,
) -> None:
    status, data = await post_chat(session, servers.urls["demo-words"], {**HELLO, **limits})
    assert status == 200
    assert data["choices"][0]["message"]["content"] == content
    assert data["choices"][0]["finish_reason"] == finish
    assert data["usage"]["completion_tokens"] == len(content.split())


# ---------------------------------------------------------------- streaming


@pytest.mark.parametrize("model", ["demo-a", "demo-words"])
@pytest.mark.parametrize("limits", [{}, {"max_tokens": 2}])
async def test_stream_matches_non_streaming_answer(
    servers: DemoServers, session: aiohttp.ClientSession, model: str, limits: dict[str, Any]
) -> None:
    body = {**HELLO, **limits}
    _, plain = await post_chat(session, servers.urls[model], body)
    events = await stream_chat(session, servers.urls[model], body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {(c["id"], c["created"], c["model"], c["object"]) for c in chunks} == {
        (chunks[0]["id"], chunks[0]["created"], model, "chat.completion.chunk")
    }
    assert all("usage" not in chunk for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": plain["choices"][0]["finish_reason"],
    }
    words = chunks[1:-1]
    assert all(c["choices"][0]["finish_reason"] is None for c in words)
    streamed = "".join(c["choices"][0]["delta"]["content"] for c in words)
    assert streamed == plain["choices"][0]["message"]["content"]
    assert len(words) == plain["usage"]["completion_tokens"]


async def test_stream_usage_chunk_only_when_asked(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    body = {**HELLO, "stream_options": {"include_usage": True}}
    events = await stream_chat(session, servers.urls["demo-words"], body)
    assert events[-1] == "[DONE]"
    usage_chunk = json.loads(events[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 2, "completion_tokens": 6, "total_tokens": 8}
    assert all(json.loads(event)["usage"] is None for event in events[:-2])
    assert json.loads(events[-3])["choices"][0]["finish_reason"] == "stop"

    without = await stream_chat(
        session, servers.urls["demo-words"], {**HELLO, "stream_options": {"include_usage": False}}
    )
    assert all(json.loads(event)["choices"] for event in without[:-1])


@pytest.mark.parametrize("model", ["demo-a", "demo-words"])
@pytest.mark.parametrize("limits", [{}, {"max_tokens": 2}])
async def test_stream_logprobs_equal_the_non_streamed_ones(
    servers: DemoServers, session: aiohttp.ClientSession, model: str, limits: dict[str, Any]
) -> None:
    body = {**HELLO, "logprobs": True, **limits}
    _, plain = await post_chat(session, servers.urls[model], body)
    events = await stream_chat(session, servers.urls[model], body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert chunks[0]["choices"][0]["logprobs"] is None  # the role chunk
    assert chunks[-1]["choices"][0]["logprobs"] is None  # the finish_reason chunk
    streamed = []
    for chunk in chunks[1:-1]:
        choice = chunk["choices"][0]
        [entry] = choice["logprobs"]["content"]
        assert entry["token"] == choice["delta"]["content"]
        streamed.append(entry)
    expected = plain["choices"][0]["logprobs"]["content"]
    assert streamed == expected
    assert len(expected) == plain["usage"]["completion_tokens"]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)


async def test_token_delay_paces_the_stream_after_the_latency(
    session: aiohttp.ClientSession,
) -> None:
    latency, delay = 0.1, 0.06
    words = "one two three four five six"
    model = DemoModel(
        "demo-paced", 0, latency_ms=latency * 1000, token_delay_ms=delay * 1000, answers=(words,)
    )
    async with await start_demo_servers([model]) as running:
        url = f"{running.urls['demo-paced']}/chat/completions"
        started = time.monotonic()
        arrivals: list[tuple[float, str]] = []
        async with session.post(url, json={**HELLO, "stream": True}) as resp:
            async for line in resp.content:
                if line.startswith(b"data: "):
                    arrivals.append((time.monotonic() - started, line[6:].decode().strip()))
        started = time.monotonic()
        status, plain = await post_chat(session, running.urls["demo-paced"], HELLO)
        plain_elapsed = time.monotonic() - started
    assert arrivals[-1][1] == "[DONE]"
    content_times = [
        at
        for at, payload in arrivals[:-1]
        if json.loads(payload)["choices"][0]["delta"].get("content")
    ]
    gaps = len(words.split()) - 1
    assert len(content_times) == gaps + 1
    # Generous lower bounds only: a busy machine can only make things later.
    assert arrivals[0][0] >= latency * 0.95  # time to first chunk
    assert content_times[-1] >= (latency + gaps * delay) * 0.95
    assert content_times[-1] - content_times[0] >= gaps * delay * 0.5
    # A non-streamed answer takes about as long as the whole stream.
    assert status == 200
    assert plain["choices"][0]["message"]["content"] == words
    assert plain_elapsed >= (latency + gaps * delay) * 0.95


# ---------------------------------------------------------------- tool calls

WEATHER = DemoToolCall(
    "get_weather", {"city": "Zürich", "days": 3, "units": {"temp": "C"}, "alerts": [True, None]}
)
WEATHER_JSON = '{"city":"Zürich","days":3,"units":{"temp":"C"},"alerts":[true,null]}'
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
ASK_TOOLS = {**HELLO, "tools": TOOLS}


@pytest.fixture
async def tool_servers() -> AsyncIterator[DemoServers]:
    models = [
        DemoModel("demo-tool", 0, answers=("no tool needed",), tool_call=WEATHER),
        DemoModel("demo-plain", 0, answers=("plain text",)),
    ]
    async with await start_demo_servers(models) as running:
        yield running


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"tool_choice": "auto"},
        {"tool_choice": "required"},
        # Names another tool: a demo model still calls its own.
        {"tool_choice": {"type": "function", "function": {"name": "other"}}},
    ],
)
async def test_tool_call_answer(
    tool_servers: DemoServers, session: aiohttp.ClientSession, extra: dict[str, Any]
) -> None:
    status, data = await post_chat(session, tool_servers.urls["demo-tool"], {**ASK_TOOLS, **extra})
    assert status == 200
    completion = ChatCompletion.model_validate(data)
    [choice] = completion.choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.role == "assistant"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert re.fullmatch(r"call_[0-9a-f]{24}", call.id)
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert call.function.arguments == WEATHER_JSON  # compact, keys in the configured order
    assert json.loads(call.function.arguments) == WEATHER.arguments
    assert data["choices"][0]["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": WEATHER_JSON},
            }
        ],
    }
    assert data["usage"]["completion_tokens"] > 0


async def test_tool_call_stream_reassembles_the_arguments(
    tool_servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    body = {**ASK_TOOLS, "stream_options": {"include_usage": True}}
    events = await stream_chat(session, tool_servers.urls["demo-tool"], body)
    assert events[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(event) for event in events[:-1]]
    raw = [json.loads(event) for event in events[:-1]]
    call_id = raw[0]["choices"][0]["delta"]["tool_calls"][0]["id"]
    assert re.fullmatch(r"call_[0-9a-f]{24}", call_id)
    assert raw[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "index": 0,
                "id": call_id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ],
    }
    pieces = raw[1:-2]
    assert len(pieces) > 3  # the arguments arrive in several pieces
    arguments = ""
    for chunk in pieces:
        choice = chunk["choices"][0]
        assert choice["finish_reason"] is None
        [call] = choice["delta"]["tool_calls"]
        piece = call["function"]["arguments"]
        assert choice["delta"] == {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        assert piece
        arguments += piece
    assert arguments == WEATHER_JSON
    assert raw[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
    }
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == len(pieces)


@pytest.mark.parametrize(
    ("extra", "model"),
    [
        ({}, "demo-tool"),  # no tools offered
        ({"tools": []}, "demo-tool"),
        ({"tools": None}, "demo-tool"),
        ({"tools": TOOLS, "tool_choice": "none"}, "demo-tool"),
        ({"tools": TOOLS}, "demo-plain"),  # no tool_call configured
    ],
)
async def test_plain_text_answer_without_a_tool_call(
    tool_servers: DemoServers, session: aiohttp.ClientSession, extra: dict[str, Any], model: str
) -> None:
    status, data = await post_chat(session, tool_servers.urls[model], {**HELLO, **extra})
    assert status == 200
    [choice] = ChatCompletion.model_validate(data).choices
    assert choice.finish_reason == "stop"
    assert choice.message.tool_calls is None
    assert choice.message.content in {"no tool needed", "plain text"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tools": "get_weather"}, "tools"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": [TOOLS[0], "get_weather"]}, "tools[1]"),
        ({"tools": TOOLS, "tool_choice": "always"}, "tool_choice"),
        ({"tools": TOOLS, "tool_choice": 1}, "tool_choice"),
    ],
)
async def test_malformed_tools_are_a_400(
    tool_servers: DemoServers, session: aiohttp.ClientSession, extra: dict[str, Any], param: str
) -> None:
    status, data = await post_chat(session, tool_servers.urls["demo-tool"], {**HELLO, **extra})
    assert status == 400
    assert data["error"]["type"] == "invalid_request_error"
    assert data["error"]["param"] == param


def test_demo_tool_call_copies_and_validates_its_arguments() -> None:
    arguments: dict[str, object] = {"b": [1, 2], "a": {"x": 1.5}}
    call = DemoToolCall("lookup", arguments)
    arguments["b"] = "changed"
    assert call.arguments == {"b": [1, 2], "a": {"x": 1.5}}
    assert call.arguments_json == '{"b":[1,2],"a":{"x":1.5}}'
    assert DemoToolCall("f").arguments_json == "{}"
    assert hash(DemoModel("demo-t", 0, tool_call=call)) == hash(
        DemoModel("demo-t", 0, tool_call=call)
    )
    with pytest.raises(ConfigError, match="invalid function name"):
        DemoToolCall("not a name")
    with pytest.raises(ConfigError, match=r"DemoToolCall\.arguments\.x"):
        DemoToolCall("f", {"x": float("inf")})
    with pytest.raises(ConfigError, match=r"DemoModel\.tool_call"):
        DemoModel("demo-t", 0, tool_call={"name": "f"})  # type: ignore[arg-type]


# ------------------------------------------------------------------ bad input


BAD_REQUESTS: list[tuple[str, bytes, str | None]] = [
    ("invalid json", b'{"messages": [', None),
    ("not utf-8", b"\xff\xfe\xfa", None),
    ("too deep", b"[" * 100_000 + b"]" * 100_000, None),
    ("array body", b"[1, 2]", None),
    ("string body", b'"hi"', None),
    ("missing messages", b"{}", "messages"),
    ("null messages", b'{"messages": null}', "messages"),
    ("messages not a list", b'{"messages": "hi"}', "messages"),
    ("empty messages", b'{"messages": []}', "messages"),
    ("message not an object", b'{"messages": ["hi"]}', "messages[0]"),
    ("missing role", b'{"messages": [{"content": "hi"}]}', "messages[0].role"),
    ("content number", b'{"messages": [{"role": "user", "content": 3}]}', "messages[0].content"),
    (
        "bad content part",
        b'{"messages": [{"role": "user", "content": [{"text": "x"}]}]}',
        "messages[0].content[0].type",
    ),
    (
        "text part without text",
        b'{"messages": [{"role": "user", "content": [{"type": "text"}]}]}',
        "messages[0].content[0].text",
    ),
    ("max_tokens zero", b'{"messages": [{"role": "user"}], "max_tokens": 0}', "max_tokens"),
    ("max_tokens string", b'{"messages": [{"role": "user"}], "max_tokens": "9"}', "max_tokens"),
    (
        "max_completion_tokens bool",
        b'{"messages": [{"role": "user"}], "max_completion_tokens": true}',
        "max_completion_tokens",
    ),
    ("stream string", b'{"messages": [{"role": "user"}], "stream": "yes"}', "stream"),
    (
        "stream_options list",
        b'{"messages": [{"role": "user"}], "stream": true, "stream_options": []}',
        "stream_options",
    ),
    (
        "include_usage string",
        b'{"messages": [{"role": "user"}], "stream_options": {"include_usage": "y"}}',
        "stream_options.include_usage",
    ),
]


@pytest.mark.parametrize(
    ("raw", "param"),
    [pytest.param(raw, param, id=name) for name, raw, param in BAD_REQUESTS],
)
async def test_bad_input_is_a_400_openai_error(
    servers: DemoServers, session: aiohttp.ClientSession, raw: bytes, param: str | None
) -> None:
    url = f"{servers.urls['demo-a']}/chat/completions"
    async with session.post(url, data=raw, headers={"Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert resp.content_type == "application/json"
        data = await resp.json()
    assert set(data) == {"error"}
    assert set(data["error"]) == {"message", "type", "param", "code"}
    assert data["error"]["type"] == "invalid_request_error"
    assert data["error"]["param"] == param
    assert data["error"]["message"]


async def test_oversized_body_and_unknown_routes_are_openai_errors(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    base = servers.urls["demo-a"]
    # Just over aiohttp's 1 MiB default limit; BytesIO because aiohttp warns on big bytes.
    huge = io.BytesIO(b'{"messages": [{"role": "user", "content": "' + b"x" * 2**20 + b'"}]}')
    async with session.post(f"{base}/chat/completions", data=huge) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"]["type"] == "invalid_request_error"
    async with session.get(f"{base}/nope") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["type"] == "invalid_request_error"
    async with session.get(f"{base}/chat/completions") as resp:
        assert resp.status == 405
        assert "POST" in resp.headers["Allow"]
        assert "demo model demo-a" in (await resp.json())["error"]["message"]


# ------------------------------------------------------------ labels, stats


async def test_models_and_healthz_are_labelled_demo(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    base = servers.urls["demo-a"]
    assert await get_json(session, f"{base}/models") == {
        "object": "list",
        "data": [
            {"id": "demo-a", "object": "model", "created": 0, "owned_by": "ensemble-extproc-demo"}
        ],
    }
    root = base.removesuffix("/v1")
    assert await get_json(session, f"{root}/healthz") == {
        "status": "ok",
        "model": "demo-a",
        "demo": True,
    }


async def test_stats_count_every_outcome(session: aiohttp.ClientSession) -> None:
    model = DemoModel("demo-s", 0, failure_rate=0.5, seed=3)
    async with await start_demo_servers([model]) as running:
        base = running.urls["demo-s"]
        statuses = [(await post_chat(session, base, HELLO))[0] for _ in range(10)]
        await post_chat(session, base, {})
        stats = await get_json(session, f"{base.removesuffix('/v1')}/demo/stats")
    assert stats == {
        "requests": 11,
        "completed": statuses.count(200),
        "failed": 11 - statuses.count(200),
        "cancelled": 0,
        "in_flight": 0,
        "faults": 0,
    }


async def test_client_disconnect_during_latency_is_counted_cancelled(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    base = servers.urls["demo-slow"]
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await session.post(
            f"{base}/chat/completions", json=HELLO, timeout=aiohttp.ClientTimeout(total=0.1)
        )
    stats_url = f"{base.removesuffix('/v1')}/demo/stats"
    stats = await get_json(session, stats_url)
    while stats["cancelled"] == 0 and time.monotonic() - started < 1.0:
        await asyncio.sleep(0.02)
        stats = await get_json(session, stats_url)
    # Seen long before the 2 s latency ends: the disconnect cancelled the handler
    # (aiohttp only does that with handler_cancellation=True; otherwise the request
    # would stay in flight until its answer failed to send).
    assert time.monotonic() - started < 1.5
    assert stats == {
        "requests": 1,
        "completed": 0,
        "failed": 0,
        "cancelled": 1,
        "in_flight": 0,
        "faults": 0,
    }


# ------------------------------------------------------------------- servers


async def test_servers_report_real_ports_and_close(session: aiohttp.ClientSession) -> None:
    running = await start_demo_servers([DemoModel("demo-x", 0), DemoModel("demo-y", 0)])
    try:
        assert set(running.urls) == {"demo-x", "demo-y"}
        for name, port in running.ports.items():
            assert port > 0
            assert running.urls[name] == f"http://127.0.0.1:{port}/v1"
            assert (await get_json(session, f"http://127.0.0.1:{port}/healthz"))["model"] == name
    finally:
        await running.close()
    await running.close()  # idempotent
    with pytest.raises(aiohttp.ClientConnectionError):
        await session.get(f"http://127.0.0.1:{running.ports['demo-x']}/healthz")


async def test_start_rejects_duplicates_and_cleans_up_on_bind_failure() -> None:
    with pytest.raises(ValueError, match="unique"):
        await start_demo_servers([DemoModel("demo-x", 0), DemoModel("demo-x", 0)])
    async with await start_demo_servers([DemoModel("demo-x", 0)]) as running:
        taken = running.ports["demo-x"]
        with pytest.raises(OSError, match=r"(?i)in use"):
            await start_demo_servers([DemoModel("demo-ok", 0), DemoModel("demo-clash", taken)])


async def test_serve_forever_logs_each_model_and_closes_on_cancel(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ensemble_extproc.demo")
    task = asyncio.create_task(serve_demo_forever([DemoModel("demo-a", 0, latency_ms=10)]))
    pattern = re.compile(r"demo model demo-a \(latency 10 ms\) on (http://127\.0\.0\.1:\d+/v1)")
    for _ in range(200):
        match = next(filter(None, map(pattern.fullmatch, caplog.messages)), None)
        if match:
            break
        await asyncio.sleep(0.01)
    assert match is not None, caplog.messages
    url = match.group(1)
    assert (await get_json(session, f"{url}/models"))["data"][0]["id"] == "demo-a"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(aiohttp.ClientConnectionError):
        await session.get(f"{url}/models")


# ------------------------------------------------------------ configuration


def test_parse_demo_models_full_and_defaults() -> None:
    raw = [
        {"name": "demo-a", "port": 8101, "latency_ms": 10, "answers": ["hi {model}"]},
        {"name": "demo-b", "port": 0, "failure_rate": 1, "failure_status": 429, "seed": 4},
        {"name": "demo-c", "port": 0},
    ]
    a, b, c = parse_demo_models(raw)
    assert a == DemoModel("demo-a", 8101, latency_ms=10.0, answers=("hi {model}",))
    assert b == DemoModel("demo-b", 0, failure_rate=1.0, failure_status=429, seed=4)
    assert c == DemoModel("demo-c", 0)
    assert c.answers == (DEFAULT_ANSWER,)
    assert (c.token_delay_ms, c.tool_call, c.fault) == (0, None, None)
    assert (c.fault_retry_after_s, c.fault_drip_ms) == (1, 200)
    assert parse_demo_models([]) == ()


def test_parse_demo_models_token_delay_and_tool_call() -> None:
    raw = [
        {
            "name": "demo-t",
            "port": 0,
            "token_delay_ms": 25,
            "tool_call": {"name": "get_weather", "arguments": {"z": 1, "a": ["x", {"k": None}]}},
        },
        {"name": "demo-u", "port": 0, "tool_call": {"name": "ping"}, "token_delay_ms": 0},
        {"name": "demo-v", "port": 0, "tool_call": None},
    ]
    t, u, v = parse_demo_models(raw)
    assert t.token_delay_ms == 25.0
    assert t.tool_call == DemoToolCall("get_weather", {"z": 1, "a": ["x", {"k": None}]})
    assert t.tool_call.arguments_json == '{"z":1,"a":["x",{"k":null}]}'  # YAML order kept
    assert u.tool_call == DemoToolCall("ping", {})
    assert v == DemoModel("demo-v", 0)


OK = {"name": "demo-a", "port": 0}

CONFIG_ERRORS: list[tuple[object, str, str]] = [
    (None, "demo.models", "must be a list"),
    ({"name": "demo-a"}, "demo.models", "must be a list"),
    (["demo-a"], "demo.models[0]", "must be a mapping"),
    ([{1: "x", **OK}], "demo.models[0]", "keys must be strings"),
    ([OK, {**OK, "name": "demo-b", "latency": 5}], "demo.models[1].latency", "latency_ms"),
    ([{**OK, "colour": "red"}], "demo.models[0].colour", "allowed keys here: name, port"),
    ([{"port": 0}], "demo.models[0].name", "is required"),
    ([{"name": "demo-a"}], "demo.models[0].port", "is required"),
    ([{**OK, "name": 5}], "demo.models[0].name", "must be a string"),
    ([{**OK, "name": ""}], "demo.models[0].name", "invalid model name"),
    ([{**OK, "name": "bad name"}], "demo.models[0].name", "invalid model name"),
    ([{**OK, "name": "{prompt}"}], "demo.models[0].name", "invalid model name"),
    ([{**OK, "port": "8101"}], "demo.models[0].port", "must be an integer"),
    ([{**OK, "port": True}], "demo.models[0].port", "must be an integer"),
    ([{**OK, "port": 70000}], "demo.models[0].port", "between 0 and 65535"),
    ([{**OK, "port": -1}], "demo.models[0].port", "between 0 and 65535"),
    (
        [OK, {**OK, "name": "demo-b", "latency_ms": -1}],
        "demo.models[1].latency_ms",
        "between 0 and 600000",
    ),
    ([{**OK, "latency_ms": "10ms"}], "demo.models[0].latency_ms", "must be a number"),
    ([{**OK, "latency_ms": float("nan")}], "demo.models[0].latency_ms", "finite"),
    ([{**OK, "latency_ms": 1e9}], "demo.models[0].latency_ms", "between 0 and 600000"),
    ([{**OK, "answers": []}], "demo.models[0].answers", "must not be empty"),
    ([{**OK, "answers": "hi"}], "demo.models[0].answers", "must be a list of strings"),
    ([{**OK, "answers": ["ok", 3]}], "demo.models[0].answers[1]", "must be a string"),
    ([{**OK, "answers": ["ok", "  "]}], "demo.models[0].answers[1]", "empty or blank"),
    ([{**OK, "failure_rate": 1.5}], "demo.models[0].failure_rate", "between 0 and 1"),
    ([{**OK, "failure_rate": -0.1}], "demo.models[0].failure_rate", "between 0 and 1"),
    ([{**OK, "failure_rate": None}], "demo.models[0].failure_rate", "got null"),
    ([{**OK, "failure_status": 200}], "demo.models[0].failure_status", "between 400 and 599"),
    ([{**OK, "failure_status": 500.0}], "demo.models[0].failure_status", "must be an integer"),
    ([{**OK, "seed": "x"}], "demo.models[0].seed", "must be an integer"),
    ([{**OK, "token_delay_ms": -5}], "demo.models[0].token_delay_ms", "between 0 and 600000"),
    ([{**OK, "token_delay_ms": "5ms"}], "demo.models[0].token_delay_ms", "must be a number"),
    ([{**OK, "token_delay_ms": 1e9}], "demo.models[0].token_delay_ms", "between 0 and 600000"),
    ([{**OK, "tool_call": "get_weather"}], "demo.models[0].tool_call", "must be a mapping"),
    ([{**OK, "tool_call": {"arguments": {}}}], "demo.models[0].tool_call.name", "is required"),
    ([{**OK, "tool_call": {"name": 3}}], "demo.models[0].tool_call.name", "must be a string"),
    (
        [{**OK, "tool_call": {"name": "get weather"}}],
        "demo.models[0].tool_call.name",
        "invalid function name",
    ),
    (
        [{**OK, "tool_call": {"name": "f", "args": {}}}],
        "demo.models[0].tool_call.args",
        "allowed keys here: name, arguments",
    ),
    (
        [{**OK, "tool_call": {"name": "f", "arguments": "{}"}}],
        "demo.models[0].tool_call.arguments",
        "must be a mapping",
    ),
    (
        [{**OK, "tool_call": {"name": "f", "arguments": {"a": {1: "x"}}}}],
        "demo.models[0].tool_call.arguments.a",
        "keys must be strings",
    ),
    (
        [{**OK, "tool_call": {"name": "f", "arguments": {"a": [1, float("nan")]}}}],
        "demo.models[0].tool_call.arguments.a[1]",
        "finite",
    ),
    (
        [{**OK, "tool_call": {"name": "f", "arguments": {"when": datetime.date(2024, 1, 1)}}}],
        "demo.models[0].tool_call.arguments.when",
        "must be a JSON value",
    ),
    ([OK, {"name": "demo-a", "port": 0}], "demo.models[1].name", "duplicate name 'demo-a'"),
    (
        [{"name": "a", "port": 8101}, {"name": "b", "port": 8101}],
        "demo.models[1].port",
        "duplicate port 8101 (also demo.models[0].port)",
    ),
]


@pytest.mark.parametrize(("raw", "key", "problem"), CONFIG_ERRORS)
def test_parse_demo_models_errors_name_the_key(raw: object, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_demo_models(raw)
    assert caught.value.key == key
    assert problem in str(caught.value)
    assert f"config key '{key}'" in str(caught.value)


def test_parse_demo_models_custom_key_and_two_port_zero() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_demo_models([{"name": "x", "port": 0, "latency_ms": -5}], key="gateway.demo")
    assert caught.value.key == "gateway.demo[0].latency_ms"
    assert len(parse_demo_models([{"name": "x", "port": 0}, {"name": "y", "port": 0}])) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"latency_ms": -1},
        {"failure_rate": 2.0},
        {"answers": ()},
        {"failure_status": 302},
        {"token_delay_ms": -1},
        {"fault": "explode"},
        {"fault_retry_after_s": -1},
        {"fault_drip_ms": -1},
    ],
)
def test_demo_model_rejects_invalid_values(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        DemoModel("demo-a", 0, **kwargs)
