"""A relayed stream that breaks midway continues, through the real Envoy with the official
openai SDK: the client's text is the broken model's partial text plus another model's
continuation of it, one answer on one stream, and usage counts both calls. Where no model
can continue it, the stream ends with today's error event.

The models are declared as real endpoints are (``models[]``, with ``continuation`` where
the server continues a partial assistant message); demo backends answer behind them and
break where told (``fault_after_pieces``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from parts import Gateway, running_gateway

from helpers import free_port, listen_block

pytestmark = pytest.mark.e2e

STORY = (
    "Paris is the capital of France. It sits on the Seine, and kings and governments "
    "have ruled from it for most of the last thousand years."
)
WORDS = len(STORY.split())
QUESTION = [{"role": "user", "content": "Tell me about Paris"}]
PRICE = {"input_per_million": 0.15, "output_per_million": 0.60}
# name: (its backend, the continuation style its models[] entry declares)
BACKENDS: dict[str, tuple[dict[str, Any], str | None]] = {
    # Breaks after six words: the connection drops mid-body.
    "story-a": ({"fault": "stream_stop", "fault_after_pieces": 6}, None),
    # Breaks after four words with an error event, as a provider failing mid-answer.
    "story-err": ({"fault": "stream_error", "fault_after_pieces": 4}, None),
    # vLLM-style replicas that continue a partial answer; slower to start, so that the
    # breaking model is the one relayed.
    "story-b": (
        {"latency_ms": 60, "continuation": "continue_final_message"},
        "continue_final_message",
    ),
    # Continues (prefill), then breaks in turn three words into its continuation.
    "story-chain": (
        {
            "latency_ms": 60,
            "continuation": "prefill",
            "fault": "stream_stop",
            "fault_after_pieces": 3,
        },
        "prefill",
    ),
    # A replica that cannot continue a partial answer.
    "story-plain": ({"latency_ms": 60}, None),
}


def config() -> dict[str, Any]:
    ports = {name: free_port() for name in BACKENDS}
    return {
        "listen": listen_block(),
        "default_model": "story-b",
        "demo": {
            "models": [
                {
                    "name": f"{name}-backend",
                    "port": ports[name],
                    "answers": [STORY],
                    "latency_ms": 5,
                    "token_delay_ms": 5,
                    **backend,
                }
                for name, (backend, _) in BACKENDS.items()
            ]
        },
        "models": [
            {
                "name": name,
                "url": f"http://127.0.0.1:{ports[name]}/v1",
                "api_key_env": "PROVIDER_KEY",
                "price": PRICE,
                **({"continuation": style} if style else {}),
            }
            for name, (_, style) in BACKENDS.items()
        ],
        "ensemble": {
            "default_strategy": "first_success",
            "default_min_responses": 1,
            "timeout_seconds": 5,
        },
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("resume")
    with running_gateway(tmp, {}, raw=config(), env={"PROVIDER_KEY": "sk-test"}) as running:
        yield running


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def stream(client: openai.OpenAI, models: str) -> tuple[list[Any], str]:
    chunks = list(
        client.chat.completions.create(
            model="any",
            messages=QUESTION,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-ensemble-models": models},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, text


def ensemble_of(chunks: list[Any]) -> dict[str, Any]:
    [final] = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert final.choices[0].finish_reason == "stop"
    ensemble: dict[str, Any] = final.model_extra["ensemble"]
    return ensemble


def test_a_stream_that_breaks_is_resumed_and_reads_as_one_answer(client: openai.OpenAI) -> None:
    """story-a and story-b race; story-a streams first and drops after six words (the
    other member was cancelled when it lost the race); story-b is asked to continue those
    six words and the client gets one answer."""
    chunks, text = stream(client, "story-a,story-b")
    ensemble = ensemble_of(chunks)
    [resume] = ensemble["resumes"]
    assert resume["broken"] == "story-a"
    assert resume["resumed_on"] == "story-b"
    assert resume["chunks"] == 6
    partial = "Paris is the capital of France. "
    assert resume["chars"] == len(partial)
    # The partial text plus the continuation: the whole answer, once.
    assert text.startswith(partial)
    assert text == STORY
    # One stream: one id, one role, one finish.
    assert len({c.id for c in chunks}) == 1
    assert [c.choices[0].delta.role for c in chunks if c.choices and c.choices[0].delta.role] == [
        "assistant"
    ]
    # story-b was asked to continue: its prompt held the six words, its answer the rest.
    calls = ensemble["candidates"]
    [broken] = [c for c in calls if c["model"] == "story-a"]
    [continued] = [c for c in calls if c["model"] == "story-b" and c["status"] == "ok"]
    question = len(QUESTION[0]["content"].split())
    assert continued["usage"]["prompt_tokens"] == question + 6
    assert continued["usage"]["completion_tokens"] == WORDS - 6
    # The broken call never reported usage: it is counted (its chunks, and its prompt).
    assert broken["usage_counted"] is True
    assert broken["usage"] == {
        "prompt_tokens": question,
        "completion_tokens": 6,
        "total_tokens": question + 6,
    }
    assert "resumed on story-b" in broken["error"]
    # The usage the client gets counts both calls.
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == WORDS
    assert usage.prompt_tokens == 2 * question + 6
    assert ensemble["cost"]["estimated"] is True
    assert ensemble["selected_model"] == "story-b"


def test_an_error_event_midway_is_resumed_too(client: openai.OpenAI) -> None:
    chunks, text = stream(client, "story-err,story-b")
    assert text == STORY
    [resume] = ensemble_of(chunks)["resumes"]
    assert (resume["broken"], resume["resumed_on"], resume["chunks"]) == ("story-err", "story-b", 4)


def test_a_continuation_that_breaks_is_resumed_again(client: openai.OpenAI) -> None:
    """story-a breaks after six words; story-chain continues three more and breaks;
    story-b continues all nine."""
    chunks, text = stream(client, "story-a,story-chain,story-b")
    assert text == STORY
    ensemble = ensemble_of(chunks)
    assert [(r["broken"], r["resumed_on"], r["chunks"]) for r in ensemble["resumes"]] == [
        ("story-a", "story-chain", 6),
        ("story-chain", "story-b", 3),
    ]
    assert chunks[-1].usage.completion_tokens == WORDS


def test_where_no_model_can_continue_the_stream_ends_with_an_error_event(
    client: openai.OpenAI,
) -> None:
    """story-plain cannot continue a partial answer: the client keeps today's error event
    after the six words it got, never a silently truncated answer."""
    received: list[str] = []
    stream = client.chat.completions.create(
        model="any",
        messages=QUESTION,  # type: ignore[arg-type]
        stream=True,
        extra_headers={"x-ensemble-models": "story-a,story-plain"},
    )
    with pytest.raises(openai.APIError) as raised:
        received.extend(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert "".join(received) == "Paris is the capital of France. "
    message = str(raised.value)
    assert "the streamed answer of story-a broke after 32 characters" in message
    assert "not resumed: no other model can continue it" in message
