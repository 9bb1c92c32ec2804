"""Slow clients cannot lock out ensembles: the upstream reads a body (bounded in time)
before it takes an in-flight slot, and Envoy times out slow and idle clients.

The config and the rendered bootstrap here, the upstream over real HTTP; through the real
Envoy: tests/test_e2e_hostile.py.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from ensemble_extproc.config import ConfigError, compile_config
from ensemble_extproc.demo.server import DemoServers
from ensemble_extproc.envoy_bootstrap import bootstrap
from ensemble_extproc.envoy_names import LOCAL_REPLY_ERRORS
from ensemble_extproc.upstream import create_app

from helpers import chat, make_config, serve_app, trickle_post

Start = Callable[..., Any]
MODELS = [{"name": "m", "url": "http://127.0.0.1:9/v1"}]
ENSEMBLE = {"x-ensemble-models": "demo-fast", "content-type": "application/json"}


def test_envoy_timeouts_have_defaults_and_follow_the_config() -> None:
    defaults = compile_config({"models": MODELS})
    assert defaults.envoy.request_headers_timeout_seconds == 10
    assert defaults.envoy.request_timeout_seconds == 30
    assert defaults.envoy.stream_idle_timeout_seconds == 300
    assert defaults.envoy.idle_timeout_seconds == 3600
    assert defaults.ensemble.body_timeout_seconds == 30
    config = compile_config(
        {
            "models": MODELS,
            "ensemble": {"body_timeout_seconds": 4},
            "envoy": {
                "request_headers_timeout_seconds": 2,
                "request_timeout_seconds": 5,
                "stream_idle_timeout_seconds": 60,
                "idle_timeout_seconds": 120,
            },
        }
    )
    assert config.ensemble.body_timeout_seconds == 4
    hcm = bootstrap(config)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0][
        "typed_config"
    ]
    assert hcm["request_headers_timeout"] == "2s"
    assert hcm["request_timeout"] == "5s"
    assert hcm["stream_idle_timeout"] == "60s"
    assert hcm["common_http_protocol_options"] == {"idle_timeout": "120s"}
    # Envoy's 408 (request_timeout) is an OpenAI-style JSON error like its others.
    assert (408, "invalid_request_error", "request_timeout") in LOCAL_REPLY_ERRORS


@pytest.mark.parametrize(
    ("raw", "key", "text"),
    [
        (
            {"envoy": {"stream_idle_timeout_seconds": 30}},
            "envoy.stream_idle_timeout_seconds",
            "would cut non-streamed ensembles",
        ),
        ({"envoy": {"request_timeout_seconds": 0}}, "envoy.request_timeout_seconds", "> 0"),
        ({"envoy": {"idle_timeout_seconds": float("inf")}}, "envoy.idle_timeout_seconds", "finite"),
        ({"ensemble": {"body_timeout_seconds": float("nan")}}, "ensemble.body_timeout_seconds", ""),
    ],
)
def test_timeouts_that_cannot_work_name_their_key(raw: dict[str, Any], key: str, text: str) -> None:
    with pytest.raises(ConfigError) as raised:
        compile_config({"models": MODELS, **raw})
    assert raised.value.key == key
    assert text in str(raised.value)


async def probe(url: str) -> int:
    """One ensemble request, sent at once."""
    host, port = url.removeprefix("http://").split(":")
    status, _ = await trickle_post(host, int(port), ENSEMBLE, json.dumps(chat()).encode(), pause=0)
    return status


async def test_slow_bodies_hold_no_slot_and_get_a_408(upstream: Start) -> None:
    """As many trickling clients as max_in_flight: ensembles are still served."""
    url = await upstream(max_in_flight=2, body_timeout_seconds=1)
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps(chat()).encode()
    slow = [
        asyncio.create_task(trickle_post(host, int(port), ENSEMBLE, body, pause=0.1))
        for _ in range(2)
    ]
    await asyncio.sleep(0.3)  # their headers are in: each handler is reading its body
    # Before the fix, each of them held a slot from its headers on: this was a 429.
    assert [await probe(url) for _ in range(3)] == [200, 200, 200]
    assert not any(task.done() for task in slow), "the slow clients were answered early"
    for status, raw in await asyncio.gather(*slow):
        assert status == 408
        head, _, payload = raw.partition(b"\r\n\r\n")
        assert b"connection: close" in head.lower()
        assert json.loads(payload)["error"]["code"] == "request_timeout"


async def test_a_body_that_arrives_in_time_is_served_even_slowly(upstream: Start) -> None:
    """The bound is on the whole body, not on each byte: a slow but finished body is fine."""
    url = await upstream(body_timeout_seconds=5)
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"messages": [{"role": "user", "content": "Capital?"}]}).encode()
    status, raw = await trickle_post(host, int(port), ENSEMBLE, body, pause=0.005)
    assert status == 200, raw[:300]


async def test_a_compressed_body_is_a_415_before_it_is_read(
    upstream: Start, caplog: pytest.LogCaptureFixture
) -> None:
    url = await upstream()
    headers = {**ENSEMBLE, "content-encoding": "gzip"}
    async with aiohttp.ClientSession() as session:
        for body in (b"\x1f\x8b not gzip", gzip.compress(json.dumps(chat()).encode())):
            # The whole body at once: it is in before the answer, unread.
            async with session.post(f"{url}/v1/chat/completions", data=body, headers=headers) as r:
                assert r.status == 415
                assert r.headers["accept-encoding"] == "identity"
                assert (await r.json())["error"]["code"] == "unsupported_content_encoding"
    await asyncio.sleep(0.1)
    # Nothing inflated the refused body afterwards either (aiohttp logged a traceback).
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_client_hanging_up_mid_body_logs_no_error(
    demo: DemoServers, caplog: pytest.LogCaptureFixture
) -> None:
    # aiohttp's default runner (no handler cancellation): the read sees the hang-up.
    async with serve_app(create_app(make_config(demo.urls))) as url:
        port = int(url.rsplit(":", 1)[1])
        for _ in range(3):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n"
                b'x-ensemble-models: demo-fast\r\n\r\n{"messages"'
            )
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.2)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
        # The upstream still serves.
        assert await probe(url) == 200
