"""The ensemble upstream over real HTTP, with demo backends as model endpoints."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from ensemble_extproc.config.demo import DemoModel
from ensemble_extproc.demo.server import DemoServers, start_demo_servers
from ensemble_extproc.upstream import create_app

from helpers import chat, demo_stats, make_config, serve_app

Start = Callable[..., Any]


async def post(
    url: str, body: Any, headers: dict[str, str] | None = None, raw: bytes | None = None
) -> tuple[int, dict[str, str], dict[str, Any]]:
    data = raw if raw is not None else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", data=data, headers=headers or {}) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.json()


async def test_voting_answers_with_the_majority(upstream: Start) -> None:
    url = await upstream()
    headers = {"x-ensemble-models": "demo-fast,demo-medium,demo-slow"}
    status, resp_headers, body = await post(url, chat(), headers)
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["model"] == "ensemble/voting"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Paris."}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert resp_headers["x-ensemble-strategy"] == "voting"
    assert resp_headers["x-ensemble-models-queried"] == "demo-fast,demo-medium,demo-slow"
    # "Paris." (10 ms) and "paris" (50 ms) agree: demo-slow could no longer change the
    # outcome, so voting stopped early and cancelled it.
    assert resp_headers["x-ensemble-responses-received"] == "2"
    assert resp_headers["x-ensemble-selected-model"] == "demo-fast"
    assert resp_headers["x-ensemble-agreement"] == "1.000"
    ensemble = body["ensemble"]
    assert ensemble["calls"] == {"started": 3, "cancelled": 1}
    assert ensemble["details"]["stopped_early"] is True
    statuses = {c["model"]: (c["status"], c["answer"]) for c in ensemble["candidates"]}
    assert statuses == {
        "demo-fast": ("ok", "paris"),
        "demo-medium": ("ok", "paris"),
        "demo-slow": ("cancelled", None),
    }
    # usage sums the two answered calls, and the ensemble object breaks it down.
    per_model = [c["usage"] for c in ensemble["candidates"] if c["usage"] is not None]
    assert len(per_model) == 2
    assert sum(u["total_tokens"] for u in per_model) == body["usage"]["total_tokens"]
    per_call = body["usage"]["prompt_tokens"] // 2
    assert per_call > 0
    assert body["usage"]["prompt_tokens"] == 2 * per_call
    assert body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


async def test_first_success_is_as_fast_as_the_fastest_and_cancels_the_rest(
    upstream: Start, demo: DemoServers
) -> None:
    url = await upstream()
    headers = {
        "x-ensemble-models": "demo-slow,demo-medium,demo-fast",
        "x-ensemble-strategy": "first_success",
    }
    medium = {**headers, "x-ensemble-models": "demo-medium"}
    await post(url, chat(), headers)  # warm the connection pool
    # The baseline: the same request answered by the second-fastest model (50 ms) alone.
    medium_ms = min([await timed_post(url, chat(), medium) for _ in range(3)])
    ensemble_ms = [await timed_post(url, chat(), headers) for _ in range(2)]
    before = {m: await demo_stats(demo.urls[m]) for m in ("demo-medium", "demo-slow")}
    started = time.perf_counter()
    status, resp_headers, body = await post(url, chat(), headers)
    ensemble_ms.append((time.perf_counter() - started) * 1000)
    assert status == 200
    assert resp_headers["x-ensemble-selected-model"] == "demo-fast"
    assert body["choices"][0]["message"]["content"] == "Paris."
    # Well below the second-fastest model alone (demo-fast answers in 10 ms, demo-medium
    # in 50): the answer did not wait for it.
    assert min(ensemble_ms) < 0.8 * medium_ms, (ensemble_ms, medium_ms)
    statuses = {c["model"]: c["status"] for c in body["ensemble"]["candidates"]}
    assert statuses == {"demo-slow": "cancelled", "demo-medium": "cancelled", "demo-fast": "ok"}
    # The slower backends see their calls disconnect.
    for model, stats_before in before.items():
        for _ in range(50):
            stats = await demo_stats(demo.urls[model])
            if stats["cancelled"] > stats_before["cancelled"]:
                break
            await asyncio.sleep(0.02)
        assert stats["cancelled"] == stats_before["cancelled"] + 1, model
        assert stats["completed"] == stats_before["completed"]


async def timed_post(url: str, body: Any, headers: dict[str, str]) -> float:
    """Milliseconds to a 200 answer."""
    started = time.perf_counter()
    status, _, _ = await post(url, body, headers)
    assert status == 200
    return (time.perf_counter() - started) * 1000


async def test_quorum_not_met_is_a_502_that_names_the_failures(upstream: Start) -> None:
    url = await upstream(retries=False)
    headers = {"x-ensemble-models": "demo-fast,demo-broken", "x-ensemble-min-responses": "2"}
    status, resp_headers, body = await post(url, chat(), headers)
    assert status == 502
    assert body["error"]["code"] == "ensemble_quorum_not_met"
    assert "demo-broken: HTTP 500" in body["error"]["message"]
    # demo-broken fails after 5 ms; the quorum of 2 is then out of reach, so the answer
    # comes at once and demo-fast's call is cancelled rather than waited for.
    assert resp_headers["x-ensemble-responses-received"] == "0"
    assert "x-ensemble-selected-model" not in resp_headers
    statuses = {c["model"]: c["status"] for c in body["ensemble"]["candidates"]}
    assert statuses == {"demo-fast": "cancelled", "demo-broken": "error"}


async def test_deadline_is_a_504_within_the_deadline(upstream: Start) -> None:
    url = await upstream(timeout_seconds=0.3)
    headers = {"x-ensemble-models": "demo-fast,demo-hang", "x-ensemble-min-responses": "2"}
    started = time.perf_counter()
    status, _, body = await post(url, chat(), headers)
    assert time.perf_counter() - started < 1.5
    assert status == 504
    assert body["error"]["code"] == "ensemble_deadline_exceeded"
    assert "demo-hang: ensemble deadline of 0.3 s passed" in body["error"]["message"]


async def test_a_failed_member_does_not_fail_a_met_quorum(upstream: Start) -> None:
    url = await upstream()
    headers = {"x-ensemble-models": "demo-fast,demo-broken,demo-medium"}
    status, resp_headers, body = await post(url, chat(), headers)
    assert status == 200
    assert resp_headers["x-ensemble-responses-received"] == "2"
    assert body["ensemble"]["agreement"] == 1.0


@pytest.mark.parametrize(
    ("headers", "raw", "status", "code"),
    [
        ({"x-ensemble-models": "demo-fast,nope"}, None, 400, "model_not_found"),
        ({"x-ensemble-models": "a,b,c,d,e,f"}, None, 400, "too_many_models"),
        (
            {"x-ensemble-models": "demo-fast", "x-ensemble-strategy": "x"},
            None,
            400,
            "unknown_strategy",
        ),
        (
            {"x-ensemble-models": "demo-fast", "x-ensemble-min-responses": "0"},
            None,
            400,
            "invalid_min_responses",
        ),
        (
            {"x-ensemble-models": "demo-fast", "x-ensemble-min-responses": "2"},
            None,
            400,
            "invalid_min_responses",
        ),
        ({"x-ensemble-models": "demo-fast"}, b"{not json", 400, "invalid_json"),
        ({"x-ensemble-models": "demo-fast"}, b"[1, 2]", 400, "invalid_json"),
        ({"x-ensemble-models": "demo-fast"}, b'{"model": "x"}', 400, "missing_messages"),
        ({"x-ensemble-models": "demo-fast"}, b'{"messages": []}', 400, "invalid_messages"),
        ({"x-ensemble-models": "demo-fast"}, b'{"messages": [1]}', 400, "invalid_messages"),
        (
            {"x-ensemble-models": "demo-fast"},
            json.dumps(chat(stream="yes")).encode(),
            400,
            "invalid_type",
        ),
        (
            {"x-ensemble-models": "demo-fast"},
            json.dumps(chat(tools={"type": "function"})).encode(),
            400,
            "invalid_type",
        ),
        (
            {"x-ensemble-models": "demo-fast"},
            json.dumps(chat(stream=True, stream_options=[])).encode(),
            400,
            "invalid_type",
        ),
        ({"x-ensemble-models": "demo-fast"}, json.dumps(chat(n=2)).encode(), 400, "unsupported_n"),
        ({}, None, 400, "missing_models"),
    ],
)
async def test_bad_input_is_a_4xx_openai_error(
    upstream: Start, headers: dict[str, str], raw: bytes | None, status: int, code: str
) -> None:
    url = await upstream()
    got_status, _, body = await post(url, chat(), headers, raw=raw)
    assert (got_status, body["error"]["code"]) == (status, code)
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]


async def test_body_over_the_limit_is_a_413(upstream: Start) -> None:
    url = await upstream(max_body_bytes=1000)
    big = chat("x" * 2000)
    status, _, body = await post(url, big, {"x-ensemble-models": "demo-fast"})
    assert status == 413
    assert body["error"]["code"] == "request_too_large"


@pytest.mark.parametrize("pause", [0.0, 0.05], ids=["arrives whole", "trickles"])
async def test_a_chunked_body_over_the_limit_is_a_413(upstream: Start, pause: float) -> None:
    # No Content-Length to refuse it by: it is found too large as it is read, whether it
    # was all in before the handler read it or is still arriving.
    url = await upstream(max_body_bytes=1000)
    raw = json.dumps(chat("x" * 2000)).encode()

    async def chunks() -> Any:
        yield raw[:500]
        await asyncio.sleep(pause)
        yield raw[500:]

    headers = {"x-ensemble-models": "demo-fast", "content-type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", data=chunks(), headers=headers) as resp,
    ):
        status, body = resp.status, await resp.json()
    assert status == 413
    assert body["error"]["code"] == "request_too_large"


async def test_models_healthz_and_unknown_routes(upstream: Start) -> None:
    url = await upstream()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v1/models") as resp:
            models = await resp.json()
        async with session.get(f"{url}/healthz") as resp:
            health = await resp.json()
        async with session.get(f"{url}/v1/embeddings") as resp:
            missing_status, missing = resp.status, await resp.json()
        async with session.get(f"{url}/v1/chat/completions") as resp:
            wrong_method_status = resp.status
    assert {m["id"] for m in models["data"]} >= {"demo-fast", "demo-slow"}
    assert health == {"status": "ok"}
    assert missing_status == 404
    assert missing["error"]["code"] == "not_found"
    assert wrong_method_status == 405


async def test_reranking_calls_the_judge_and_counts_its_usage(upstream: Start) -> None:
    url = await upstream(reranking={"judge_model": "demo-judge"})
    headers = {
        "x-ensemble-models": "demo-fast,demo-medium,demo-slow",
        "x-ensemble-strategy": "reranking",
        "x-ensemble-min-responses": "3",
    }
    status, resp_headers, body = await post(url, chat(), headers)
    assert status == 200
    # The canned judge answers "Candidate 3": the third in model order, demo-slow.
    assert resp_headers["x-ensemble-selected-model"] == "demo-slow"
    assert body["choices"][0]["message"]["content"] == "Lyon"
    roles = [(c["model"], c["role"]) for c in body["ensemble"]["candidates"]]
    assert roles[-1] == ("demo-judge", "judge")
    assert body["ensemble"]["calls"]["started"] == 4
    assert "judge demo-judge picked candidate 3" in body["ensemble"]["reason"]


async def test_fusion_returns_the_aggregators_answer(upstream: Start) -> None:
    url = await upstream(fusion={"aggregator_model": "demo-aggregator"})
    headers = {"x-ensemble-models": "demo-fast,demo-medium", "x-ensemble-strategy": "fusion"}
    status, resp_headers, body = await post(url, chat(), headers)
    assert status == 200
    assert resp_headers["x-ensemble-selected-model"] == "demo-aggregator"
    assert body["choices"][0]["message"]["content"] == "Paris, fused."


async def test_cascade_reports_its_depth(upstream: Start) -> None:
    url = await upstream()
    headers = {
        "x-ensemble-models": "demo-fast,demo-medium,demo-slow",
        "x-ensemble-strategy": "cascade",
    }
    status, resp_headers, body = await post(url, chat(), headers)
    assert status == 200
    # Demo answers carry no logprobs unless asked; the cascade asks, and demo-fast's
    # canned confidence (0.9) clears the default threshold of 0.8 at once.
    assert resp_headers["x-ensemble-cascade-depth"] == "1"
    assert body["ensemble"]["calls"]["started"] == 1


async def test_strategy_needing_a_judge_without_one_is_a_400(upstream: Start) -> None:
    url = await upstream()
    headers = {"x-ensemble-models": "demo-fast,demo-medium", "x-ensemble-strategy": "reranking"}
    status, _, body = await post(url, chat(), headers)
    assert status == 400
    assert body["error"]["code"] == "strategy_not_configured"
    assert "ensemble.reranking.judge_model" in body["error"]["message"]


async def sse_events(
    url: str, body: Any, headers: dict[str, str]
) -> tuple[int, dict[str, str], list[Any], float]:
    """POST a streaming request; the parsed data events and the time to the first one."""
    events: list[Any] = []
    first = 0.0
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        async for line in resp.content:
            text = line.decode().strip()
            if not text.startswith("data:"):
                continue
            if not events:
                first = (time.perf_counter() - started) * 1000
            data = text[5:].strip()
            events.append("[DONE]" if data == "[DONE]" else json.loads(data))
        return resp.status, dict(resp.headers), events, first


def content_of(events: list[Any]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )


async def test_streaming_voting_sends_the_decided_answer_as_chunks(upstream: Start) -> None:
    url = await upstream()
    headers = {"x-ensemble-models": "demo-fast,demo-medium,demo-slow"}
    body = chat(stream=True, stream_options={"include_usage": True})
    status, resp_headers, events, _ = await sse_events(url, body, headers)
    assert status == 200
    assert resp_headers["Content-Type"].startswith("text/event-stream")
    assert resp_headers["x-ensemble-selected-model"] == "demo-fast"
    assert events[-1] == "[DONE]"
    chunks = [e for e in events if e != "[DONE]"]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert content_of(events) == "Paris."
    final = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(final) == 1
    assert final[0]["ensemble"]["selected_model"] == "demo-fast"
    usage = chunks[-1]
    assert usage["choices"] == []
    assert usage["usage"]["total_tokens"] > 0


async def test_streaming_first_success_relays_the_fastest_model_live(
    upstream: Start, demo: DemoServers
) -> None:
    url = await upstream()
    headers = {
        "x-ensemble-models": "demo-slow,demo-medium,demo-fast",
        "x-ensemble-strategy": "first_success",
    }
    medium = {**headers, "x-ensemble-models": "demo-medium"}
    await sse_events(url, chat(stream=True), headers)  # warm the pool
    # The baseline: the first chunk of the second-fastest model (50 ms) alone.
    medium_ms = min([(await sse_events(url, chat(stream=True), medium))[3] for _ in range(3)])
    first = [(await sse_events(url, chat(stream=True), headers))[3] for _ in range(2)]
    status, resp_headers, events, first_ms = await sse_events(url, chat(stream=True), headers)
    assert status == 200
    assert resp_headers["x-ensemble-selected-model"] == "demo-fast"
    assert content_of(events) == "Paris."
    # demo-fast's first chunk (10 ms), not demo-medium's (50 ms).
    assert min(*first, first_ms) < 0.8 * medium_ms, (first, first_ms, medium_ms)
    final = next(
        e
        for e in events
        if isinstance(e, dict) and e["choices"] and e["choices"][0]["finish_reason"]
    )
    statuses = {c["model"]: c["status"] for c in final["ensemble"]["candidates"]}
    assert statuses == {"demo-slow": "cancelled", "demo-medium": "cancelled", "demo-fast": "ok"}
    assert events[-1] == "[DONE]"


async def test_streaming_failure_before_any_output_is_a_plain_http_error(upstream: Start) -> None:
    url = await upstream()
    headers = {"x-ensemble-models": "demo-broken", "x-ensemble-strategy": "first_success"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", json=chat(stream=True), headers=headers) as resp,
    ):
        assert resp.status == 502
        assert (await resp.json())["error"]["code"] == "ensemble_quorum_not_met"


async def test_streaming_sends_keepalives_while_deciding(upstream: Start) -> None:
    url = await upstream(stream_keepalive_seconds=0.03)
    headers = {"x-ensemble-models": "demo-fast,demo-slow", "x-ensemble-min-responses": "2"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", json=chat(stream=True), headers=headers) as resp,
    ):
        raw = (await resp.read()).decode()
    assert raw.startswith(": keep-alive")
    assert raw.rstrip().endswith("data: [DONE]")


async def test_streaming_deadline_after_the_stream_started_is_an_error_event(
    upstream: Start,
) -> None:
    url = await upstream(stream_keepalive_seconds=0.05, timeout_seconds=0.3)
    headers = {"x-ensemble-models": "demo-fast,demo-hang", "x-ensemble-min-responses": "2"}
    status, _, events, _ = await sse_events(url, chat(stream=True), headers)
    assert status == 200  # the stream had started (keep-alives)
    assert events[-1]["error"]["code"] == "ensemble_deadline_exceeded"
    assert "[DONE]" not in events


async def test_a_failing_endpoint_is_retried_within_the_deadline(
    upstream: Start, demo: DemoServers
) -> None:
    url = await upstream(retries={"attempts": 3, "backoff_ms": 10})
    before = await demo_stats(demo.urls["demo-broken"])
    headers = {"x-ensemble-models": "demo-fast,demo-broken", "x-ensemble-min-responses": "2"}
    status, _, body = await post(url, chat(), headers)
    assert status == 502
    broken = next(c for c in body["ensemble"]["candidates"] if c["model"] == "demo-broken")
    assert broken["attempts"] == 3
    after = await demo_stats(demo.urls["demo-broken"])
    assert after["requests"] - before["requests"] == 3


async def test_the_circuit_opens_and_skipped_endpoints_are_named(upstream: Start) -> None:
    url = await upstream(
        retries=False, circuit_breaker={"failures": 2, "window_seconds": 60, "cooldown_seconds": 60}
    )
    headers = {"x-ensemble-models": "demo-fast,demo-broken", "x-ensemble-min-responses": "1"}
    for _ in range(2):
        status, _, body = await post(url, chat(), headers)
        assert status == 200
    status, _, body = await post(url, chat(), headers)
    assert status == 200  # the quorum of 1 is still met without the skipped endpoint
    broken = next(c for c in body["ensemble"]["candidates"] if c["model"] == "demo-broken")
    assert broken["status"] == "skipped"
    assert "circuit open" in broken["error"]


async def test_too_many_ensembles_in_flight_is_a_429_with_retry_after(upstream: Start) -> None:
    url = await upstream(max_in_flight=2, timeout_seconds=2)
    headers = {"x-ensemble-models": "demo-slow"}
    slow = [asyncio.create_task(post(url, chat(), headers)) for _ in range(2)]
    await asyncio.sleep(0.03)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", json=chat(), headers=headers) as resp,
    ):
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.json())["error"]["code"] == "too_many_ensembles"
    assert [r[0] for r in await asyncio.gather(*slow)] == [200, 200]


async def test_405_says_which_methods_are_allowed(upstream: Start) -> None:
    url = await upstream()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{url}/v1/chat/completions") as resp,
    ):
        assert resp.status == 405
        assert "POST" in resp.headers["Allow"]


async def test_a_lone_surrogate_that_models_echo_is_passed_on_not_a_500() -> None:
    """JSON can carry a lone surrogate as an escape and models echo prompts: msgspec cannot
    encode it as UTF-8 (the demo's ``json.dumps`` could), and the answer was a 500."""
    echoes = [DemoModel(name, 0, answers=("you said: {prompt}",)) for name in ("e1", "e2")]
    headers = {"x-ensemble-models": "e1,e2"}
    prompt = "bad \ud800 text"  # json.dumps sends it as the escape
    async with (
        await start_demo_servers(echoes) as demo,
        serve_app(create_app(make_config(demo.urls))) as url,
    ):
        status, _, body = await post(url, chat(prompt), headers)
        assert status == 200, body
        assert body["choices"][0]["message"]["content"] == f"you said: {prompt}"
        status, _, events, _ = await sse_events(url, chat(prompt, stream=True), headers)
    assert status == 200
    assert events[-1] == "[DONE]"
    assert content_of(events) == f"you said: {prompt}"
