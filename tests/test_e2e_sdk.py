"""Every strategy through the real Envoy with the official openai SDK: sync and async,
streaming and not. What the SDK parses is what users get."""

from __future__ import annotations

import json
import time

import openai
import pytest

from parts import Gateway

pytestmark = pytest.mark.e2e

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
MEMBERS = "demo-fast,demo-medium,demo-slow"
# What each strategy answers with the demo models (Paris., paris, Lyon; the canned judge
# picks candidate 3; the canned aggregator writes its own sentence).
EXPECTED = {
    "voting": ("Paris.", "demo-fast"),
    "weighted": ("Paris.", "demo-fast"),
    "first_success": ("Paris.", "demo-fast"),
    "score_averaging": ("Paris.", "demo-fast"),
    "reranking": ("Lyon", "demo-slow"),
    "fusion": ("Paris, fused.", "demo-aggregator"),
    "cascade": ("Paris.", "demo-fast"),
}


def headers(strategy: str) -> dict[str, str]:
    return {
        "x-ensemble-models": MEMBERS,
        "x-ensemble-strategy": strategy,
        "x-ensemble-min-responses": "3" if strategy == "reranking" else "1",
    }


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("strategy", list(EXPECTED))
def test_every_strategy_non_streaming(client: openai.OpenAI, strategy: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="any",
        messages=QUESTION,
        extra_headers=headers(strategy),  # type: ignore[arg-type]
    )
    completion = raw.parse()
    content, model = EXPECTED[strategy]
    assert completion.choices[0].message.content == content
    assert completion.choices[0].finish_reason == "stop"
    assert raw.headers["x-ensemble-selected-model"] == model
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    assert completion.model == f"ensemble/{strategy}"


@pytest.mark.parametrize("strategy", list(EXPECTED))
def test_every_strategy_streaming(client: openai.OpenAI, strategy: str) -> None:
    stream = client.chat.completions.create(
        model="any",
        messages=QUESTION,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
        extra_headers=headers(strategy),
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    content, _ = EXPECTED[strategy]
    assert text == content
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0
    assert len({c.id for c in chunks}) == 1


async def test_async_client_streams_and_not(gateway: Gateway) -> None:
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    try:
        completion = await client.chat.completions.create(
            model="any",
            messages=QUESTION,
            extra_headers=headers("voting"),  # type: ignore[arg-type]
        )
        assert completion.choices[0].message.content == "Paris."
        stream = await client.chat.completions.create(
            model="any",
            messages=QUESTION,
            stream=True,  # type: ignore[arg-type]
            extra_headers=headers("first_success"),
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        assert text == "Paris."
    finally:
        await client.close()


def test_streaming_first_success_time_to_first_chunk(client: openai.OpenAI) -> None:
    """The first chunk comes at the fastest model's pace (10 ms), not the slowest's (100)."""

    def first_chunk_ms() -> float:
        started = time.perf_counter()
        stream = client.chat.completions.create(
            model="any",
            messages=QUESTION,
            stream=True,  # type: ignore[arg-type]
            extra_headers=headers("first_success"),
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                elapsed = (time.perf_counter() - started) * 1000
                stream.close()
                return elapsed
        raise AssertionError("no content chunk")

    first_chunk_ms()  # warm up
    best = min(first_chunk_ms() for _ in range(5))
    assert best < 45, best


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            },
        },
    }
]
WEATHER = [{"role": "user", "content": "Weather in Paris?"}]


def tool_headers(strategy: str) -> dict[str, str]:
    return {
        "x-ensemble-models": "demo-tool-c,demo-tool-a,demo-tool-b",
        "x-ensemble-strategy": strategy,
        "x-ensemble-min-responses": "1",
    }


def test_voting_compares_tool_calls_by_name_and_arguments(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="any",
        messages=WEATHER,
        tools=TOOLS,  # type: ignore[arg-type]
        extra_headers=tool_headers("voting"),
    )
    completion = raw.parse()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    # a and b agree (same arguments, other key order): c can no longer win, so voting
    # stops early without it.
    assert json.loads(call.function.arguments) == {"city": "Paris", "unit": "c"}  # type: ignore[union-attr]
    assert raw.headers["x-ensemble-agreement"] == "1.000"
    assert raw.headers["x-ensemble-responses-received"] == "2"


def test_streaming_first_success_relays_a_tool_call(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="any",
        messages=WEATHER,
        tools=TOOLS,
        stream=True,  # type: ignore[arg-type]
        extra_headers=tool_headers("first_success"),
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        if not chunk.choices:
            continue
        for delta in chunk.choices[0].delta.tool_calls or []:
            if delta.function and delta.function.name:
                name += delta.function.name
            if delta.function and delta.function.arguments:
                arguments += delta.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_weather"
    assert json.loads(arguments) == {"city": "Paris", "unit": "c"}  # demo-tool-a is fastest
    assert finish == "tool_calls"
