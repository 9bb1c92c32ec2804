"""Fault modes of the demo backends (DemoModel.fault), exercised over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from ensemble_extproc.config.demo import FAULT_KINDS, DemoModel, FaultKind, parse_demo_models
from ensemble_extproc.demo.server import DemoServers, start_demo_servers
from ensemble_extproc.errors import ConfigError

WORDS = "one two three four five six"
HELLO = {"messages": [{"role": "user", "content": "hello there"}]}
STREAM = {**HELLO, "stream": True}
SLOW_DRIP_MS = 40


def fault_model(fault: FaultKind, **extra: Any) -> DemoModel:
    return DemoModel(f"demo-{fault}".replace("_", "-"), 0, answers=(WORDS,), fault=fault, **extra)


@pytest.fixture
async def servers() -> AsyncIterator[DemoServers]:
    models = [
        fault_model("status_500"),
        fault_model("rate_limit", fault_retry_after_s=2.5),
        fault_model("malformed_json"),
        fault_model("reset"),
        fault_model("hang"),
        fault_model("drip", fault_drip_ms=SLOW_DRIP_MS),
        DemoModel("demo-drip-fast", 0, answers=(WORDS,), fault="drip", fault_drip_ms=0.5),
        fault_model("stream_stop"),
        fault_model("no_done"),
        fault_model("malformed_sse"),
        fault_model("echo_headers", failure_status=401),
        DemoModel("demo-ok", 0, answers=(WORDS,)),
    ]
    async with await start_demo_servers(models) as running:
        yield running


def chat_url(servers: DemoServers, model: str) -> str:
    return f"{servers.urls[model]}/chat/completions"


async def stats(session: aiohttp.ClientSession, servers: DemoServers, model: str) -> dict[str, int]:
    async with session.get(f"{servers.urls[model].removesuffix('/v1')}/demo/stats") as resp:
        data: dict[str, int] = await resp.json()
        return data


async def settled_stats(
    session: aiohttp.ClientSession, servers: DemoServers, model: str
) -> dict[str, int]:
    """The stats once no request is in flight (a disconnect reaches the server a bit later)."""
    deadline = time.monotonic() + 2.0
    current = await stats(session, servers, model)
    while current["in_flight"] and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        current = await stats(session, servers, model)
    return current


def counters(requests: int, faults: int, **outcomes: int) -> dict[str, int]:
    return {
        "requests": requests,
        "completed": outcomes.get("completed", 0),
        "failed": outcomes.get("failed", 0),
        "cancelled": outcomes.get("cancelled", 0),
        "in_flight": 0,
        "faults": faults,
    }


def sse_payloads(raw: bytes) -> list[str]:
    events = [event for event in raw.decode().split("\n\n") if event]
    assert all(event.startswith("data: ") for event in events), events
    return [event.removeprefix("data: ") for event in events]


async def read_until_error(resp: aiohttp.ClientResponse) -> tuple[bytes, BaseException | None]:
    received = b""
    try:
        async for data in resp.content.iter_any():
            received += data
    except (TimeoutError, aiohttp.ClientError) as exc:
        return received, exc
    return received, None


# ------------------------------------------------------------ error answers


@pytest.mark.parametrize("body", [HELLO, STREAM], ids=["json", "stream"])
async def test_status_500(
    servers: DemoServers, session: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    async with session.post(chat_url(servers, "demo-status-500"), json=body) as resp:
        assert resp.status == 500
        data = await resp.json()
    assert set(data["error"]) == {"message", "type", "param", "code"}
    assert data["error"]["type"] == "server_error"
    assert "demo model demo-status-500: simulated fault status_500" in data["error"]["message"]
    assert await stats(session, servers, "demo-status-500") == counters(1, 1, failed=1)


async def test_echo_headers_answers_its_failure_status_with_every_header(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": "Bearer sk-echoed-1234", "X-Extra": "seen"}
    url = chat_url(servers, "demo-echo-headers")
    async with session.post(url, json=HELLO, headers=headers) as resp:
        assert resp.status == 401
        assert resp.headers["x-echo-authorization"] == "Bearer sk-echoed-1234"
        data = await resp.json()
    assert data["error"]["type"] == "invalid_request_error"
    assert "Bearer sk-echoed-1234" in data["error"]["message"]
    assert '"X-Extra": "seen"' in data["error"]["message"]
    assert await stats(session, servers, "demo-echo-headers") == counters(1, 1, failed=1)


async def test_echo_headers_streams_an_error_event_with_every_header(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    url = chat_url(servers, "demo-echo-headers")
    async with session.post(url, json=STREAM, headers={"Authorization": "Bearer k-9"}) as resp:
        assert resp.status == 200
        lines = [line for line in (await resp.text()).splitlines() if line]
    assert json.loads(lines[0].removeprefix("data: "))["choices"][0]["delta"]["role"]
    error = json.loads(lines[1].removeprefix("data: "))["error"]
    assert "Bearer k-9" in error["message"]
    assert lines[2] == "data: [DONE]"


@pytest.mark.parametrize("body", [HELLO, STREAM], ids=["json", "stream"])
async def test_rate_limit_has_retry_after(
    servers: DemoServers, session: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    async with session.post(chat_url(servers, "demo-rate-limit"), json=body) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "2.5"
        data = await resp.json()
    assert data["error"]["type"] == "rate_limit_error"
    assert data["error"]["code"] == "rate_limit_exceeded"
    assert await stats(session, servers, "demo-rate-limit") == counters(1, 1, failed=1)


async def test_rate_limit_default_retry_after(session: aiohttp.ClientSession) -> None:
    async with (
        await start_demo_servers([fault_model("rate_limit")]) as running,
        session.post(chat_url(running, "demo-rate-limit"), json=HELLO) as resp,
    ):
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "1"


@pytest.mark.parametrize("body", [HELLO, STREAM], ids=["json", "stream"])
async def test_malformed_json(
    servers: DemoServers, session: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    async with session.post(chat_url(servers, "demo-malformed-json"), json=body) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        raw = await resp.read()
    assert raw.startswith(b'{"id": "chatcmpl-demo-')
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    assert await stats(session, servers, "demo-malformed-json") == counters(1, 1, completed=1)


# --------------------------------------------------------- broken connections


@pytest.mark.parametrize(
    ("model", "body"),
    [
        ("demo-reset", HELLO),
        ("demo-reset", STREAM),
        ("demo-stream-stop", HELLO),  # not streaming: like reset
    ],
)
async def test_reset_closes_without_a_response(
    servers: DemoServers, session: aiohttp.ClientSession, model: str, body: dict[str, Any]
) -> None:
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await session.post(chat_url(servers, model), json=body)
    assert await settled_stats(session, servers, model) == counters(1, 1, completed=1)


async def test_reset_after_the_latency(session: aiohttp.ClientSession) -> None:
    async with await start_demo_servers([fault_model("reset", latency_ms=100)]) as running:
        started = time.monotonic()
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await session.post(chat_url(running, "demo-reset"), json=HELLO)
    assert time.monotonic() - started >= 0.095


@pytest.mark.parametrize("body", [HELLO, STREAM], ids=["json", "stream"])
async def test_hang_until_the_client_gives_up(
    servers: DemoServers, session: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await session.post(
            chat_url(servers, "demo-hang"), json=body, timeout=aiohttp.ClientTimeout(total=0.2)
        )
    assert time.monotonic() - started >= 0.19  # the client's own timeout fired
    assert await settled_stats(session, servers, "demo-hang") == counters(1, 1, cancelled=1)


async def test_stream_stop_cuts_the_stream(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    async with session.post(chat_url(servers, "demo-stream-stop"), json=STREAM) as resp:
        assert resp.status == 200
        raw, error = await read_until_error(resp)
    # The connection was closed mid-body: the chunked body never ended.
    assert isinstance(error, aiohttp.ClientPayloadError)
    assert raw.endswith(b"\n\n")
    payloads = sse_payloads(raw)
    assert "[DONE]" not in payloads
    chunks = [json.loads(payload) for payload in payloads]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks)
    content = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert content == "one two three "  # about half of the six words
    assert await settled_stats(session, servers, "demo-stream-stop") == counters(1, 1, completed=1)


async def test_no_done_sends_everything_but_done_and_holds(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    post = session.post(chat_url(servers, "demo-no-done"), json=STREAM, timeout=timeout)
    async with post as resp:
        assert resp.status == 200
        raw, error = await read_until_error(resp)
    assert isinstance(error, TimeoutError)  # the client gave up waiting for more
    received = sse_payloads(raw)
    assert "[DONE]" not in received
    chunks = [json.loads(payload) for payload in received]
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == WORDS
    assert await settled_stats(session, servers, "demo-no-done") == counters(1, 1, cancelled=1)


async def test_malformed_sse_line_then_the_rest(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    async with session.post(chat_url(servers, "demo-malformed-sse"), json=STREAM) as resp:
        assert resp.status == 200
        payloads = sse_payloads(await resp.read())
    assert payloads[-1] == "[DONE]"
    bad = []
    chunks = []
    for payload in payloads[:-1]:
        try:
            chunks.append(json.loads(payload))
        except json.JSONDecodeError:
            bad.append(payload)
    assert bad == ["{not json"]
    assert payloads.index("{not json") == 2  # after the role chunk and the first word
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == WORDS
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert await stats(session, servers, "demo-malformed-sse") == counters(1, 1, completed=1)


@pytest.mark.parametrize("model", ["demo-no-done", "demo-malformed-sse"])
async def test_stream_only_faults_spare_non_streamed_answers(
    servers: DemoServers, session: aiohttp.ClientSession, model: str
) -> None:
    async with session.post(chat_url(servers, model), json=HELLO) as resp:
        assert resp.status == 200
        data = await resp.json()
    assert data["choices"][0]["message"]["content"] == WORDS
    assert await stats(session, servers, model) == counters(1, 0, completed=1)


# ---------------------------------------------------------------------- drip


@pytest.mark.parametrize("body", [HELLO, STREAM], ids=["json", "stream"])
async def test_drip_sends_one_byte_at_a_time(
    servers: DemoServers, session: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    wanted = 6
    async with session.post(chat_url(servers, "demo-drip"), json=body) as resp:
        # The headers come at once; the body is chunked.
        assert resp.status == 200
        assert resp.headers["Transfer-Encoding"] == "chunked"
        started = time.monotonic()
        received = b""
        while len(received) < wanted:
            received += await resp.content.readany()
        elapsed = time.monotonic() - started
    # Lower bounds on the time, upper bound on the bytes: a slow machine only gets fewer.
    assert elapsed >= (wanted - 2) * SLOW_DRIP_MS / 1000 * 0.9
    assert len(received) <= elapsed * 1000 / SLOW_DRIP_MS + 2
    expected = b'data: {"id"' if body.get("stream") else b'{"id": "cha'
    assert received == expected[: len(received)]
    # Leaving early counts as cancelled.
    assert await settled_stats(session, servers, "demo-drip") == counters(1, 1, cancelled=1)


async def test_drip_sends_a_valid_answer_in_the_end(
    servers: DemoServers, session: aiohttp.ClientSession
) -> None:
    async with session.post(chat_url(servers, "demo-drip-fast"), json=HELLO) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        data = await resp.json()
    assert data["choices"][0]["message"]["content"] == WORDS
    assert await stats(session, servers, "demo-drip-fast") == counters(1, 1, completed=1)


# ------------------------------------------------------------ interactions


async def test_seeded_failures_and_bad_requests_come_before_faults(
    session: aiohttp.ClientSession,
) -> None:
    models = [
        DemoModel("demo-broken-hang", 0, failure_rate=1.0, fault="hang"),
        fault_model("hang"),
    ]
    async with await start_demo_servers(models) as running:
        async with session.post(chat_url(running, "demo-broken-hang"), json=HELLO) as resp:
            assert resp.status == 500
            assert (await resp.json())["error"]["code"] == "demo_simulated_failure"
        async with session.post(chat_url(running, "demo-hang"), json={"messages": []}) as resp:
            assert resp.status == 400
        assert await stats(session, running, "demo-broken-hang") == counters(1, 0, failed=1)
        assert await stats(session, running, "demo-hang") == counters(1, 0, failed=1)


async def test_fault_after_the_latency(session: aiohttp.ClientSession) -> None:
    async with await start_demo_servers([fault_model("status_500", latency_ms=100)]) as running:
        started = time.monotonic()
        async with session.post(chat_url(running, "demo-status-500"), json=HELLO) as resp:
            assert resp.status == 500
    assert time.monotonic() - started >= 0.095


async def test_no_fault_by_default(servers: DemoServers, session: aiohttp.ClientSession) -> None:
    async with session.post(chat_url(servers, "demo-ok"), json=STREAM) as resp:
        payloads = sse_payloads(await resp.read())
    assert payloads[-1] == "[DONE]"
    assert await stats(session, servers, "demo-ok") == counters(1, 0, completed=1)


# ------------------------------------------------------------ configuration


def test_parse_fault_keys() -> None:
    raw = [
        {"name": "a", "port": 0, "fault": "drip", "fault_drip_ms": 5},
        {"name": "b", "port": 0, "fault": "rate_limit", "fault_retry_after_s": 0},
        {"name": "c", "port": 0, "fault": None},
        {"name": "d", "port": 0, "fault": "none"},
    ]
    a, b, c, d = parse_demo_models(raw)
    assert (a.fault, a.fault_drip_ms) == ("drip", 5.0)
    assert (b.fault, b.fault_retry_after_s) == ("rate_limit", 0.0)
    assert c == DemoModel("c", 0)
    assert d == DemoModel("d", 0)
    assert {m.fault for m in parse_demo_models([{"name": "x", "port": 0}])} == {None}
    for kind in FAULT_KINDS:
        assert parse_demo_models([{"name": "x", "port": 0, "fault": kind}])[0].fault == kind


OK = {"name": "demo-a", "port": 0}

FAULT_CONFIG_ERRORS: list[tuple[dict[str, object], str, str]] = [
    ({"fault": "explode"}, "fault", "unknown fault kind 'explode'"),
    ({"fault": "explode"}, "fault", "one of: " + ", ".join(FAULT_KINDS)),
    ({"fault": "rate-limit"}, "fault", "did you mean 'rate_limit'?"),
    ({"fault": 500}, "fault", "must be a string"),
    ({"fault": ["hang"]}, "fault", "must be a string"),
    ({"fault_retry_after_s": -1}, "fault_retry_after_s", "between 0 and 3600"),
    ({"fault_retry_after_s": "1s"}, "fault_retry_after_s", "must be a number"),
    ({"fault_retry_after_s": 5000}, "fault_retry_after_s", "the unit is seconds"),
    ({"fault_drip_ms": -200}, "fault_drip_ms", "between 0 and 600000"),
    ({"fault_drip_ms": True}, "fault_drip_ms", "must be a number"),
    ({"fault_drip_ms": float("inf")}, "fault_drip_ms", "finite"),
    ({"faults": "hang"}, "faults", "did you mean 'fault"),
]


@pytest.mark.parametrize(("extra", "key", "problem"), FAULT_CONFIG_ERRORS)
def test_fault_config_errors_name_the_key(extra: dict[str, object], key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_demo_models([OK, {**OK, "name": "demo-b", **extra}])
    assert caught.value.key == f"demo.models[1].{key}"
    assert problem in str(caught.value)
