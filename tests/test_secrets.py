"""No configured secret in an error, a candidate's error or a log line.

Endpoints that echo every header they received (demo fault ``echo_headers``) behind the
ensemble upstream over real HTTP, plus the pieces: the redactor, the error summary and
the log formatter. Through the real Envoy: tests/test_e2e_hostile.py.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ensemble_extproc import headers as h
from ensemble_extproc.config import ConfigError, compile_config
from ensemble_extproc.config.demo import DemoModel
from ensemble_extproc.demo.server import DemoServers, start_demo_servers
from ensemble_extproc.envoy_bootstrap import bootstrap, render_yaml
from ensemble_extproc.envoy_redact import lua_source
from ensemble_extproc.internal import Binding, sign
from ensemble_extproc.observability import logs
from ensemble_extproc.redact import MASK, Redactor, client_credentials, config_redactor
from ensemble_extproc.stack import envoy_binary
from ensemble_extproc.upstream import create_app
from ensemble_extproc.upstream.client import MAX_DETAIL, error_summary

from helpers import chat, serve_app

ENDPOINT_KEY = "sk-live-endpoint-0123456789abcdef"
CLIENT_KEY = "client-key-0123456789abcdef"
INTERNAL = "internal-secret-0123456789abcdef"
ENV = {"ECHO_KEY": ENDPOINT_KEY, "CLIENT_KEYS": CLIENT_KEY, "ENSEMBLE_INTERNAL_SECRET": INTERNAL}
SECRETS = (ENDPOINT_KEY, CLIENT_KEY, INTERNAL)


# --- the pieces ----------------------------------------------------------------------------


def test_the_redactor_masks_each_secret_also_inside_json_strings() -> None:
    redact = Redactor(["abc-123", 'quo"te\\d', "", "abc-123-longer"])
    assert redact("x abc-123 y abc-123-longer z") == f"x {MASK} y {MASK} z"
    escaped = json.dumps({"m": 'key quo"te\\d here'})
    assert 'quo\\"te\\\\d' in escaped
    assert redact(escaped) == json.dumps({"m": f"key {MASK} here"})
    assert Redactor()("nothing to mask") == "nothing to mask"


def test_every_kind_of_configured_secret_is_known() -> None:
    config = compile_config(
        {
            "models": [{"name": "m", "url": "http://127.0.0.1:9/v1", "api_key_env": "ECHO_KEY"}],
            "header_control": {"api_keys_env": "CLIENT_KEYS"},
        },
        environ=ENV,
    )
    text = " / ".join(SECRETS)
    assert config_redactor(config)(text) == " / ".join([MASK] * 3)


@pytest.mark.parametrize(
    ("headers", "found"),
    [
        ({"authorization": "Bearer tok-1"}, ("tok-1",)),
        ({"authorization": "tok-2"}, ("tok-2",)),
        ({"x-api-key": " k-3 "}, ("k-3",)),
        ({}, ()),
    ],
)
def test_client_credentials_are_read_from_both_headers(
    headers: dict[str, str], found: tuple[str, ...]
) -> None:
    assert client_credentials(headers) == found


def echo_body(secret: str, code: str | None = None) -> dict[str, Any]:
    message = f'got {{"Authorization": "Bearer {secret}", "Host": "x"}}'
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


@pytest.mark.parametrize("status", [401, 403, 407, 429, 500, 502, 503])
def test_error_bodies_other_than_request_mistakes_are_left_out(status: int) -> None:
    summary = error_summary(status, echo_body(ENDPOINT_KEY, "invalid_api_key"), Redactor())
    assert summary.startswith(f"HTTP {status} ")
    assert summary.endswith("(invalid_api_key)")
    assert "Bearer" not in summary


def test_a_request_mistakes_message_is_masked_before_it_is_shortened() -> None:
    """A secret across the cut would leave its first half unmasked."""
    message = "x" * (MAX_DETAIL - 10) + ENDPOINT_KEY + " tail"
    payload = {"error": {"message": message, "type": "invalid_request_error"}}
    summary = error_summary(400, payload, Redactor([ENDPOINT_KEY]))
    assert ENDPOINT_KEY[:8] not in summary
    assert summary.endswith("...")


def test_free_text_in_an_error_code_is_not_a_reason() -> None:
    payload = {"error": {"code": "see Bearer sk-123 for details", "type": "x y"}}
    assert error_summary(401, payload, Redactor()) == "HTTP 401 Unauthorized"


@pytest.fixture
def captured() -> Iterator[Callable[[], str]]:
    """The root logger as the servers configure it, writing to a buffer."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    config = compile_config(
        {"models": [{"name": "m", "url": "http://127.0.0.1:9/v1", "api_key_env": "ECHO_KEY"}]},
        environ=ENV,
    )
    logs.configure("test", "INFO", "json", config_redactor(config))
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        yield stream.getvalue
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_log_lines_mask_secrets_in_messages_fields_and_tracebacks(
    captured: Callable[[], str],
) -> None:
    log = logging.getLogger("ensemble_extproc.test")
    log.info("message with %s", ENDPOINT_KEY, extra={"field": {"nested": [ENDPOINT_KEY]}})
    try:
        raise RuntimeError(f"failed with key {ENDPOINT_KEY}")
    except RuntimeError:
        log.exception("call failed")
    token = logs.REQUEST_SECRETS.set((CLIENT_KEY,))
    try:
        log.warning("a client's own key %s", CLIENT_KEY)
    finally:
        logs.REQUEST_SECRETS.reset(token)
    output = captured()
    lines = [json.loads(line) for line in output.splitlines()]
    assert len(lines) == 3
    assert ENDPOINT_KEY not in output
    assert CLIENT_KEY not in output
    assert lines[0]["message"] == f"message with {MASK}"
    assert lines[0]["field"] == {"nested": [MASK]}
    assert f"failed with key {MASK}" in lines[1]["exception"]
    assert lines[2]["message"] == f"a client's own key {MASK}"


# --- the upstream over real HTTP, with echoing endpoints -----------------------------------

ECHOES = (
    DemoModel("echo-401", 0, fault="echo_headers", failure_status=401),
    DemoModel("echo-500", 0, fault="echo_headers", failure_status=500),
    DemoModel("echo-400", 0, fault="echo_headers", failure_status=400),
    # Slower than the echoes: their errors are in before the quorum of one is met.
    DemoModel("fine", 0, latency_ms=50, answers=("Paris",)),
)


@pytest.fixture
async def echoes() -> AsyncIterator[DemoServers]:
    async with await start_demo_servers(ECHOES) as servers:
        yield servers


@pytest.fixture
async def echo_upstream(
    echoes: DemoServers, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[str]:
    caplog.set_level(logging.DEBUG)
    models = [
        {"name": name, "url": url, "api_key_env": "ECHO_KEY"} for name, url in echoes.urls.items()
    ]
    # A model that gets the client's own key, which is one of header_control's.
    models.append({"name": "echo-fwd", "url": echoes.urls["echo-400"], "forward_client_auth": True})
    config = compile_config(
        {
            "models": models,
            "header_control": {"api_keys_env": "CLIENT_KEYS"},
            "ensemble": {"retries": False},
        },
        environ=ENV,
    )
    async with serve_app(create_app(config)) as url:
        yield url


async def ask(
    url: str, models: str, quorum: int = 2, strategy: str = "voting", **body: Any
) -> tuple[int, dict[str, str], str]:
    headers = {
        "x-ensemble-models": models,
        "x-ensemble-strategy": strategy,
        "x-ensemble-min-responses": str(quorum),
        "authorization": f"Bearer {CLIENT_KEY}",
        h.REQUEST_ID: uuid.uuid4().hex,
    }
    # Signed as the processor signs, for this one request (the upstream has the secret).
    binding = Binding(headers[h.REQUEST_ID], "POST", "/v1/chat/completions")
    headers[h.SIGNATURE] = sign(INTERNAL.encode(), headers, binding, time.time())
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", json=chat(**body), headers=headers) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.text()


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every record as the app handed it to logging (before any formatter), fields too."""
    return "\n".join(json.dumps(record.__dict__, default=str) for record in caplog.records)


async def test_a_502_says_how_each_echoing_endpoint_failed_and_no_more(
    echo_upstream: str, caplog: pytest.LogCaptureFixture
) -> None:
    status, headers, text = await ask(echo_upstream, "echo-401,echo-500")
    assert status == 502
    assert_no_secret(text, json.dumps(headers), logged(caplog))
    body = json.loads(text)
    errors = {c["model"]: c["error"] for c in body["ensemble"]["candidates"]}
    assert errors["echo-401"] == "HTTP 401 Unauthorized (invalid_request_error)"
    assert "echo-401: HTTP 401 Unauthorized" in body["error"]["message"]
    assert "received these headers" not in text


async def test_a_200_keeps_secrets_out_of_the_failed_candidates(
    echo_upstream: str, caplog: pytest.LogCaptureFixture
) -> None:
    status, headers, text = await ask(echo_upstream, "fine,echo-400,echo-fwd", quorum=1)
    assert status == 200, text
    assert_no_secret(text, json.dumps(headers), logged(caplog))
    errors = {c["model"]: c["error"] for c in json.loads(text)["ensemble"]["candidates"]}
    # A mistake in the request keeps the endpoint's message, masked: the key was sent (and
    # echoed), and what reaches the client is the mask.
    assert f'"Authorization\\": \\"Bearer {MASK}' in json.dumps(errors["echo-400"])
    assert f"Bearer {MASK}" in errors["echo-fwd"]


async def test_streamed_error_events_are_summarised(
    echo_upstream: str, caplog: pytest.LogCaptureFixture
) -> None:
    # first_success relays its calls: the endpoints are asked to stream.
    status, headers, text = await ask(
        echo_upstream, "echo-500,echo-401", 1, "first_success", stream=True
    )
    assert_no_secret(text, json.dumps(headers), logged(caplog))
    assert status == 502
    assert "error event (server_error)" in text


# --- Envoy: the default model's key in what Envoy relays ---------------------------------


def http_filters(config: Any) -> list[dict[str, Any]]:
    listener = bootstrap(config)["static_resources"]["listeners"][0]
    filters: list[dict[str, Any]] = listener["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"
    ]
    return filters


def test_envoy_masks_model_keys_only_when_a_model_has_one(tmp_path: Path) -> None:
    keyed = compile_config(
        {
            "models": [
                {"name": "m", "url": "http://127.0.0.1:9/v1", "api_key_env": "ECHO_KEY"},
                {"name": "n", "url": "http://127.0.0.1:9/v1"},
            ]
        },
        environ=ENV,
    )
    names = [f["name"] for f in http_filters(keyed)]
    assert names == [
        "envoy.filters.http.ext_proc",
        "envoy.filters.http.lua",
        "envoy.filters.http.router",
    ]
    [lua] = [f for f in http_filters(keyed) if f["name"] == "envoy.filters.http.lua"]
    script = lua["typed_config"]["default_source_code"]["inline_string"]
    # The variable's name, never its value: the bootstrap holds no secret.
    assert "os.getenv(name)" in script
    assert '"ECHO_KEY"' in script
    assert ENDPOINT_KEY not in json.dumps(bootstrap(keyed))
    path = tmp_path / "envoy.yaml"
    path.write_text(render_yaml(keyed, "test"))
    checked = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **ENV},
    )
    assert checked.returncode == 0, checked.stderr
    plain = compile_config({"models": [{"name": "n", "url": "http://127.0.0.1:9/v1"}]})
    assert "envoy.filters.http.lua" not in [f["name"] for f in http_filters(plain)]


@pytest.mark.parametrize("name", ["MY-KEY", "1KEY", "KEY NAME", 'K")os.exit()--'])
def test_a_key_variable_must_be_a_plain_name(name: str) -> None:
    with pytest.raises(ConfigError) as raised:
        compile_config(
            {"models": [{"name": "m", "url": "http://127.0.0.1:9/v1", "api_key_env": name}]},
            environ={name: "x" * 20},
        )
    assert raised.value.key == "models[0].api_key_env"
    with pytest.raises(ValueError, match="not an environment variable name"):
        lua_source([name])
