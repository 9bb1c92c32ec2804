"""Hostile clients and careless providers, through the real Envoy (``ensemble-extproc run``).

- Bad input is a 4xx OpenAI-style JSON error, never a 5xx.
- Slow clients cannot lock out ensembles; slow answers and long streams are not cut.
- No configured secret reaches a client (body or headers) or a log line, with endpoints
  that echo every header they received.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from parts import Gateway, gateway_config, running_gateway

from helpers import free_port, trickle_post

pytestmark = pytest.mark.e2e

ENDPOINT_KEY = "sk-live-endpoint-0123456789abcdef"
CLIENT_KEY = "client-key-0123456789abcdef"
INTERNAL = "internal-secret-0123456789abcdef"
SECRETS = (ENDPOINT_KEY, CLIENT_KEY, INTERNAL)
ENV = {"ECHO_KEY": ENDPOINT_KEY, "CLIENT_KEYS": CLIENT_KEY, "ENSEMBLE_INTERNAL_SECRET": INTERNAL}
# header_control admits only clients with a configured key to the x-ensemble-* headers.
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
MAX_IN_FLIGHT = 4
# Envoy's request timeout (headers and body): short, so that slow clients are cut quickly.
REQUEST_TIMEOUT = 1.0
# Demo backends behind configured models with a key (echoes) or a slow pace.
BACKENDS: dict[str, dict[str, Any]] = {
    "echo-401": {"fault": "echo_headers", "failure_status": 401},
    "echo-500": {"fault": "echo_headers", "failure_status": 500},
    "echo-400": {"fault": "echo_headers", "failure_status": 400},
    # Answers after more than Envoy's request timeout: a slow answer, not a slow client.
    "slow-answer": {"latency_ms": 1500, "answers": ["Paris"]},
    # Streams for about 1.8 s, longer than the request timeout.
    "slow-stream": {
        "latency_ms": 10,
        "token_delay_ms": 150,
        "answers": ["one two three four five six seven eight nine ten eleven twelve"],
    },
}


def hostile_config() -> dict[str, Any]:
    raw = gateway_config(
        {
            "header_control": {"api_keys_env": "CLIENT_KEYS"},
            # A profile: the processor reads every body (a body's model may name it).
            "profiles": {"checked": {"models": ["demo-fast", "demo-medium"]}},
            "envoy": {
                "request_headers_timeout_seconds": REQUEST_TIMEOUT,
                "request_timeout_seconds": REQUEST_TIMEOUT,
            },
        }
    )
    raw["ensemble"].update(timeout_seconds=5, max_in_flight=MAX_IN_FLIGHT, retries=False)
    ports = {name: free_port() for name in BACKENDS}
    raw["demo"]["models"] += [
        {"name": f"{name}-backend", "port": ports[name], **spec} for name, spec in BACKENDS.items()
    ]
    raw["models"] = [
        {"name": name, "url": f"http://127.0.0.1:{ports[name]}/v1", "api_key_env": "ECHO_KEY"}
        for name in BACKENDS
    ] + [
        # Gets the client's own key (one of header_control's), and echoes it.
        {
            "name": "echo-fwd",
            "url": f"http://127.0.0.1:{ports['echo-400']}/v1",
            "forward_client_auth": True,
        }
    ]
    return raw


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    tmp = tmp_path_factory.mktemp("hostile")
    with running_gateway(tmp, {}, raw=hostile_config(), env=ENV) as running:
        yield running


def post(
    gateway: Gateway, raw: bytes, headers: dict[str, str], timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(gateway.url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request(
            "POST",
            "/v1/chat/completions",
            raw,
            {"content-type": "application/json", **AUTH, **headers},
        )
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def ask(gateway: Gateway, headers: dict[str, str], **body: Any) -> tuple[int, dict[str, str], Any]:
    status, resp_headers, raw = post(
        gateway, json.dumps({"model": "any", "messages": QUESTION, **body}).encode(), headers
    )
    return status, resp_headers, raw


def json_error(raw: bytes) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(raw)["error"]
    assert error["message"]
    return error


# --- bad input: 4xx JSON, never 5xx --------------------------------------------------------

ENSEMBLE = {"x-ensemble-models": "demo-fast,demo-medium"}
BODY = json.dumps({"model": "any", "messages": QUESTION}).encode()


@pytest.mark.parametrize(
    ("headers", "raw", "status", "code"),
    [
        # Today (before this change): 500, Python's int-string conversion limit.
        ({**ENSEMBLE, "x-ensemble-min-responses": "1" * 5000}, BODY, 400, "invalid_min_responses"),
        (
            {**ENSEMBLE, "x-ensemble-min-responses": "0" * 4000 + "2"},
            BODY,
            200,
            None,
        ),
        # Today: 500 from the upstream (and from the default model's server).
        ({**ENSEMBLE, "content-encoding": "gzip"}, BODY, 415, "unsupported_content_encoding"),
        ({"content-encoding": "gzip"}, BODY, 415, "unsupported_content_encoding"),
        # A valid gzip body: refused alike on both routes (the processor and the upstream
        # would read it differently).
        (ENSEMBLE | {"content-encoding": "gzip"}, gzip.compress(BODY), 415, None),
        ({"content-encoding": "gzip"}, gzip.compress(BODY), 415, None),
        ({"content-encoding": "identity"}, BODY, 200, None),
    ]
    + [
        # Today: passed on to models as non-standard JSON.
        (headers, BODY[:-1] + b', "temperature": ' + value + b"}", 400, "invalid_json")
        for value in (b"NaN", b"Infinity", b"-Infinity", b"1e999")
        for headers in (ENSEMBLE, {})
    ],
)
def test_bad_input_is_a_4xx_json_error(
    gateway: Gateway, headers: dict[str, str], raw: bytes, status: int, code: str | None
) -> None:
    got, resp_headers, body = post(gateway, raw, headers)
    assert got == status, body[:300]
    if status == 200:
        return
    assert resp_headers["content-type"].startswith("application/json")
    error = json_error(body)
    assert error["code"] == (code or error["code"])
    if status == 415:
        assert resp_headers["accept-encoding"] == "identity"
        assert error["code"] == "unsupported_content_encoding"


def test_lone_surrogates_and_deep_numbers_are_not_a_5xx(gateway: Gateway) -> None:
    raw = b'{"model": "any", "messages": [{"role": "user", "content": "\\ud800 hi"}]}'
    for headers in (ENSEMBLE, {}):
        status, _, body = post(gateway, raw, headers)
        assert status < 500, body[:300]


# --- slow clients -----------------------------------------------------------------------


def test_slow_bodies_cannot_lock_out_ensembles(gateway: Gateway) -> None:
    """max_in_flight clients trickle their bodies on the ensemble route while probes are
    answered; Envoy cuts the trickles after its request timeout with a JSON 408."""
    host, port = urlsplit(gateway.url).hostname or "", urlsplit(gateway.url).port or 0
    headers = {"content-type": "application/json", **AUTH, **ENSEMBLE}

    async def scenario() -> tuple[list[int], list[tuple[int, bytes]], bool]:
        slow = [
            asyncio.create_task(trickle_post(host, port, headers, BODY, pause=0.05))
            for _ in range(MAX_IN_FLIGHT)
        ]
        await asyncio.sleep(0.2)
        probes = [(await trickle_post(host, port, headers, BODY, pause=0))[0] for _ in range(3)]
        still_open = not any(task.done() for task in slow)
        return probes, list(await asyncio.gather(*slow)), still_open

    probes, trickled, still_open = asyncio.run(scenario())
    assert probes == [200, 200, 200]
    assert still_open, "the slow clients were answered before the probes ran"
    for status, raw in trickled:
        assert status == 408
        head, _, payload = raw.partition(b"\r\n\r\n")
        assert b"content-type: application/json" in head.lower()
        assert json.loads(payload)["error"]["code"] == "request_timeout"


def test_slow_headers_are_cut_and_others_are_served(gateway: Gateway) -> None:
    host, port = urlsplit(gateway.url).hostname or "", urlsplit(gateway.url).port or 0

    async def trickle_headers() -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        try:
            for _ in range(int(REQUEST_TIMEOUT * 10)):
                await asyncio.sleep(0.2)
                writer.write(b"x-slow: 1\r\n")
                await writer.drain()
            return await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:
            return b""
        finally:
            writer.close()

    received = asyncio.run(trickle_headers())
    assert received == b"", "Envoy answered a request whose headers never ended"
    status, _, _ = ask(gateway, {})
    assert status == 200


def test_a_slow_answer_is_not_a_slow_client(gateway: Gateway) -> None:
    """request_timeout bounds receiving the request, not waiting for the answer."""
    started = time.monotonic()
    status, headers, _ = ask(gateway, {"x-ensemble-models": "slow-answer"})
    assert status == 200
    assert time.monotonic() - started > REQUEST_TIMEOUT  # the scenario did take longer
    assert headers["x-ensemble-selected-model"] == "slow-answer"


def test_a_stream_longer_than_the_request_timeout_is_not_cut(gateway: Gateway) -> None:
    started = time.monotonic()
    status, _, raw = ask(
        gateway,
        {"x-ensemble-models": "slow-stream", "x-ensemble-strategy": "first_success"},
        stream=True,
    )
    assert status == 200
    assert time.monotonic() - started > REQUEST_TIMEOUT
    events = [line for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    text = "".join(
        choice["delta"].get("content") or ""
        for line in events[:-1]
        for choice in json.loads(line.removeprefix("data: ")).get("choices", [])
    )
    assert text == "one two three four five six seven eight nine ten eleven twelve"


# --- no secret reaches a client or a log line ---------------------------------------------


def assert_nowhere(gateway: Gateway, *texts: bytes | str) -> None:
    log = gateway.log.read_text()
    for secret in SECRETS:
        for text in (*texts, log):
            assert secret not in (text.decode() if isinstance(text, bytes) else text)


def test_echoed_keys_are_not_in_the_502_nor_its_headers_nor_the_logs(gateway: Gateway) -> None:
    # A quorum of one: both calls run to their (failed) end.
    status, headers, raw = ask(
        gateway, {"x-ensemble-models": "echo-401,echo-500", "x-ensemble-min-responses": "1"}
    )
    assert status == 502
    assert_nowhere(gateway, raw, json.dumps(headers))
    errors = {c["model"]: c["error"] for c in json.loads(raw)["ensemble"]["candidates"]}
    assert errors == {
        "echo-401": "HTTP 401 Unauthorized (invalid_request_error)",
        "echo-500": "HTTP 500 Internal Server Error (server_error)",
    }
    # The log has the ensemble's summary line, with the summarised errors.
    assert "HTTP 401 Unauthorized (invalid_request_error)" in gateway.log.read_text()


def test_echoed_keys_are_masked_in_a_200s_candidates(gateway: Gateway) -> None:
    status, headers, raw = ask(
        gateway,
        {"x-ensemble-models": "demo-fast,echo-400,echo-fwd", "x-ensemble-min-responses": "1"},
    )
    assert status == 200
    assert_nowhere(gateway, raw, json.dumps(headers))
    errors = {c["model"]: c["error"] for c in json.loads(raw)["ensemble"]["candidates"]}
    # A mistake in the request keeps the endpoint's message, masked: the keys were sent,
    # echoed, and masked on the way back.
    assert "Bearer [redacted]" in errors["echo-400"]
    assert "Bearer [redacted]" in errors["echo-fwd"]


def test_echoed_keys_are_not_in_a_stream(gateway: Gateway) -> None:
    status, headers, raw = ask(
        gateway,
        {"x-ensemble-models": "echo-500,echo-401", "x-ensemble-strategy": "first_success"},
        stream=True,
    )
    assert status == 502
    assert_nowhere(gateway, raw, json.dumps(headers))
    assert "echo-500: error event (server_error)" in json_error(raw)["message"]


@pytest.fixture(scope="module")
def echo_default(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose default model echoes every header (Envoy sends it the key)."""
    raw = hostile_config()
    raw["default_model"] = "echo-401"
    tmp = tmp_path_factory.mktemp("echo-default")
    with running_gateway(tmp, {}, raw=raw, env=ENV) as running:
        yield running


def test_the_default_routes_echoed_key_is_masked_by_envoy(echo_default: Gateway) -> None:
    """Envoy relays the default model's answer: its Lua filter masks the key in response
    headers and error bodies (the upstream never serves this route)."""
    status, headers, raw = post(echo_default, BODY, {})
    assert status == 401  # the model's own status, relayed
    assert_nowhere(echo_default, raw, json.dumps(headers))
    # The key was sent (Envoy adds it) and echoed, in the body and in a header.
    assert "Bearer [redacted]" in json_error(raw)["message"]
    assert headers["x-echo-authorization"] == "Bearer [redacted]"
    assert int(headers["content-length"]) == len(raw)
