"""Through the real Envoy, with model endpoints that record what they receive (issue 12).

Real-looking providers: a key from the environment, a path prefix, HTTPS with a private
CA, a server on IPv4 only behind ``localhost``; hostile clients: their own credentials,
spoofed request ids and internal headers, internal endpoints, raw HTTP Envoy refuses.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest

from capture import Capture, Pki, capture_server, make_pki
from ensemble_extproc import headers as h
from ensemble_extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from parts import Parts, running_parts

from helpers import free_port, headers_message, listen_block

pytestmark = pytest.mark.e2e

KEY = "sk-provider-0123456789abcdef"  # the gateway's key for the provider (from env)
CLIENT_CREDENTIALS = {
    "authorization": "Bearer sk-client-own-key",
    "cookie": "session=client-cookie",
    "x-api-key": "client-x-api-key",
    "api-key": "client-azure-key",
    "proxy-authorization": "Basic Y2xpZW50OnNlY3JldA==",
}
CHAT = {"model": "any", "messages": [{"role": "user", "content": "Capital of France?"}]}


def demo_models() -> list[dict[str, Any]]:
    return [
        {"name": "demo-fast", "port": free_port(), "latency_ms": 5, "answers": ["Paris."]},
        {"name": "demo-broken", "port": free_port(), "latency_ms": 5, "failure_rate": 1.0},
        {"name": "demo-slow", "port": free_port(), "latency_ms": 1500, "answers": ["Paris."]},
    ]


def request(
    parts: Parts,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    body: Any = None,
) -> tuple[int, dict[str, str], Any]:
    """One request through Envoy; the JSON body parsed when it is JSON."""
    address = parts.config.listen.envoy
    connection = http.client.HTTPConnection(address.host, address.port, timeout=10)
    try:
        data = None if body is None else json.dumps(body)
        sent = {"content-type": "application/json", **(headers or {})} if data else headers
        connection.request(method, path, data, dict(sent or {}))
        response = connection.getresponse()
        raw = response.read()
        got = {k.lower(): v for k, v in response.getheaders()}
    finally:
        connection.close()
    payload: Any = raw
    if got.get("content-type", "").startswith("application/json"):
        payload = json.loads(raw)
    return response.status, got, payload


def raw_exchange(parts: Parts, data: bytes) -> tuple[int, dict[str, str], Any]:
    """Bytes a client library would not send; the status, headers and JSON body back."""
    address = parts.config.listen.envoy
    with socket.create_connection((address.host, address.port), timeout=5) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received or len(received) < _expected_length(received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, json.loads(body)


def _expected_length(received: bytes) -> int:
    head, sep, _ = received.partition(b"\r\n\r\n")
    for line in head.decode(errors="replace").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            return len(head) + len(sep) + int(value)
    return len(received) + 1


def assert_envoy_json_error(
    status: int, headers: Mapping[str, str], payload: Any, code: str
) -> str:
    assert headers["content-type"].startswith("application/json")
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code, payload
    assert error["message"].strip(), payload
    assert status >= 400
    message: str = error["message"]
    return message


# ----------------------------------------------------------------------------- stack A


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Provider:
    """Stack A: the default model is a provider behind ``http://localhost:PORT/base/v1``
    (listening on IPv4 only) that wants the gateway's key; more models over HTTPS."""

    def __init__(self, parts: Parts, captures: dict[str, Capture]) -> None:
        self.parts = parts
        self.captures = captures


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Provider]:
    with (
        capture_server("127.0.0.1", answer="provider answer") as default,
        capture_server(tls=pki.server_context(pki.trusted, "localhost")) as secure,
        capture_server(tls=pki.server_context(pki.untrusted, "localhost")) as untrusted,
        capture_server(tls=pki.server_context(pki.trusted, "other.example")) as wrong_name,
    ):
        raw = {
            "listen": listen_block(),
            "default_model": "provider",
            "models": [
                {
                    "name": "provider",
                    "url": default.url("/base/v1", host="localhost"),
                    "api_key_env": "PROVIDER_KEY",
                },
                {"name": "secure", "url": secure.url(host="localhost"), "ca_file": pki.ca_file},
                # No ca_file: the system CAs, which do not know this certificate's CA.
                {"name": "untrusted", "url": untrusted.url(host="localhost")},
                # The trusted CA, but a certificate for another name.
                {
                    "name": "wrong-name",
                    "url": wrong_name.url(host="localhost"),
                    "ca_file": pki.ca_file,
                },
            ],
            "demo": {"models": demo_models()},
            "ensemble": {
                "timeout_seconds": 3,
                "default_min_responses": 1,
                "circuit_breaker": {"failures": 1, "window_seconds": 60, "cooldown_seconds": 60},
            },
            "security": {"signature_lifetime_seconds": 2},
        }
        captures = {
            "provider": default,
            "secure": secure,
            "untrusted": untrusted,
            "wrong-name": wrong_name,
        }
        tmp = tmp_path_factory.mktemp("provider")
        with running_parts(tmp, raw, {"PROVIDER_KEY": KEY}) as parts:
            yield Provider(parts, captures)


@pytest.fixture
def fresh(provider: Provider) -> Provider:
    for capture in provider.captures.values():
        capture.clear()
    return provider


def test_plain_traffic_reaches_the_provider_as_configured(fresh: Provider) -> None:
    """Issue 12.1: the gateway's key, not the client's credentials; the URL's path prefix
    and host; no internal header; Envoy's own request id, not the client's."""
    spoofed = {h.ROUTE: "ensemble", h.PROFILE: "x", h.SIGNATURE: "t=1,n=1,v1=00"}
    headers = {**CLIENT_CREDENTIALS, **spoofed, "x-request-id": "chosen-by-the-client"}
    status, _, payload = request(fresh.parts, "POST", "/v1/chat/completions", headers, CHAT)
    assert status == 200, payload
    assert payload["choices"][0]["message"]["content"] == "provider answer"
    [seen] = fresh.captures["provider"].requests
    assert (seen.method, seen.path) == ("POST", "/base/v1/chat/completions")
    assert seen.headers["authorization"] == f"Bearer {KEY}"
    assert seen.headers["host"] == f"localhost:{fresh.captures['provider'].port}"
    leaked = set(CLIENT_CREDENTIALS) - {"authorization"}
    assert not leaked & seen.headers.keys()
    assert not {name for name in seen.headers if name.startswith("x-ensemble-")}
    assert seen.headers["x-request-id"] != "chosen-by-the-client"
    assert json.loads(seen.body)["messages"] == CHAT["messages"]


def test_the_key_is_in_no_rendered_file_and_no_admin_dump(fresh: Provider) -> None:
    rendered = (fresh.parts.tmp / "envoy.yaml").read_text()
    assert "%ENVIRONMENT(PROVIDER_KEY)%" in rendered
    assert KEY not in rendered
    admin = fresh.parts.config.listen.envoy_admin
    connection = http.client.HTTPConnection(admin.host, admin.port, timeout=10)
    connection.request("GET", "/config_dump")
    dump = connection.getresponse().read().decode()
    connection.close()
    assert "%ENVIRONMENT(PROVIDER_KEY)%" in dump
    assert KEY not in dump
    assert KEY not in (fresh.parts.tmp / "parts.log").read_text()


def test_a_localhost_endpoint_listening_on_ipv4_only_is_reached(fresh: Provider) -> None:
    """Issue 12.10: Envoy resolved localhost to ::1 only; the default route got a 503."""
    capture = fresh.captures["provider"]
    assert capture.host == "127.0.0.1"
    with socket.socket(socket.AF_INET6) as sock:
        assert sock.connect_ex(("::1", capture.port)) != 0  # nothing listens on IPv6
    status, _, _ = request(fresh.parts, "POST", "/v1/chat/completions", {}, CHAT)
    assert status == 200
    assert len(capture.requests) == 1


def test_the_model_list_is_the_gateways_and_no_key_leaves(fresh: Provider) -> None:
    """Issue 16.3: the gateway lists what a client may name; the default model's own list
    is not asked for (so its key goes nowhere), and no endpoint URL is in the answer."""
    headers = {**CLIENT_CREDENTIALS, "x-ensemble-enable": "true"}
    status, _, listing = request(fresh.parts, "GET", "/v1/models", headers)
    assert status == 200
    assert listing["object"] == "list"
    kinds = {m["id"]: m["ensemble_kind"] for m in listing["data"]}
    assert kinds["provider"] == "default"
    assert kinds["secure"] == kinds["demo-fast"] == "member"
    status, _, one = request(fresh.parts, "GET", "/v1/models/secure", headers)
    assert (status, one["id"], one["ensemble_kind"]) == (200, "secure", "member")
    status, _, missing = request(fresh.parts, "GET", "/v1/models/capture", headers)
    assert (status, missing["error"]["code"]) == (404, "unknown_model")
    assert fresh.captures["provider"].requests == []
    for text in (json.dumps(listing), json.dumps(one)):
        assert "localhost" not in text
        assert "127.0.0.1" not in text
        assert KEY not in text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/healthz"),
        ("GET", "/"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/completions"),
        ("POST", "/v2/chat/completions"),
    ],
)
def test_internal_and_unserved_paths_are_a_json_404(
    fresh: Provider, method: str, path: str
) -> None:
    """Issue 12.8: GET /metrics with x-ensemble-enable reached the upstream's metrics."""
    headers = {"x-ensemble-enable": "true", "x-ensemble-models": "demo-fast"}
    status, got, payload = request(
        fresh.parts, method, path, headers, CHAT if method == "POST" else None
    )
    assert status == 404
    message = assert_envoy_json_error(status, got, payload, "not_found")
    assert message.startswith(f"{method} {path}: not found")
    assert "POST /v1/chat/completions" in message
    assert "x-ensemble-served-by" not in got
    assert all(not c.requests for c in fresh.captures.values())


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/chat/completions", "POST"),
        ("POST", "/v1/models", "GET"),
        ("DELETE", "/v1/models/capture", "GET"),
    ],
)
def test_a_served_path_with_another_method_is_a_json_405(
    fresh: Provider, method: str, path: str, allow: str
) -> None:
    headers = {"x-ensemble-enable": "true"}
    status, got, payload = request(fresh.parts, method, path, headers)
    assert status == 405
    assert_envoy_json_error(status, got, payload, "method_not_allowed")
    assert got["allow"] == allow
    assert all(not c.requests for c in fresh.captures.values())


def test_an_ensemble_call_over_https_is_verified_and_carries_nothing_internal(
    fresh: Provider,
) -> None:
    """Issue 12.1/12.4 on the ensemble route: the upstream's own TLS client verifies the
    endpoint with its ca_file and SNI, and sends neither internal headers nor the
    client's credentials."""
    headers = {**CLIENT_CREDENTIALS, "x-ensemble-models": "secure"}
    status, _, payload = request(fresh.parts, "POST", "/v1/chat/completions", headers, CHAT)
    assert status == 200, payload
    assert payload["ensemble"]["selected_model"] == "secure"
    secure = fresh.captures["secure"]
    [seen] = secure.requests
    assert seen.path == "/v1/chat/completions"
    assert secure.server_names == ["localhost"]
    assert not {name for name in seen.headers if name.startswith("x-ensemble-")}
    assert not set(CLIENT_CREDENTIALS) & seen.headers.keys()


@pytest.mark.parametrize("model", ["untrusted", "wrong-name"])
def test_an_untrusted_certificate_fails_the_call_before_anything_is_sent(
    fresh: Provider, model: str
) -> None:
    headers = {"x-ensemble-models": model, "x-ensemble-min-responses": "1"}
    status, got, payload = request(fresh.parts, "POST", "/v1/chat/completions", headers, CHAT)
    assert status == 502
    assert got["content-type"].startswith("application/json")
    assert payload["error"]["code"] == "ensemble_quorum_not_met"
    [candidate] = payload["ensemble"]["candidates"]
    assert "CERTIFICATE_VERIFY_FAILED" in candidate["error"]
    assert fresh.captures[model].requests == []  # the handshake failed: no HTTP at all


# Issue 12.9: what Envoy answers by itself, to bytes a library would not send.
RAW = {
    "http/1.0": (
        b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
        426,
        "upgrade_required",
    ),
    "header too large": (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n",
        431,
        "headers_too_large",
    ),
    "URL too large": (
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        431,
        "headers_too_large",
    ),
    "not HTTP": (b"HELLO THERE\r\n\r\n", 400, "bad_request"),
    "bad header name": (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n",
        400,
        "bad_request",
    ),
    "length and chunked": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "bad_request",
    ),
    "unknown transfer encoding": (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
        "not_implemented",
    ),
    "no such path": (b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not_found"),
}


@pytest.mark.parametrize("case", RAW)
def test_envoys_own_replies_are_openai_json_with_a_message(fresh: Provider, case: str) -> None:
    data, status, code = RAW[case]
    got_status, headers, payload = raw_exchange(fresh.parts, data)
    assert got_status == status
    message = assert_envoy_json_error(got_status, headers, payload, code)
    assert "(" in message or code == "not_found"  # Envoy's details say what it saw


# ----------------------------------------------- the signature: bound, short-lived, once


def processor_headers(parts: Parts, request_id: str, models: str) -> dict[str, str]:
    """What the real processor sets for one request (over its real gRPC port)."""
    address = parts.config.listen.extproc
    with grpc.insecure_channel(f"{address.host}:{address.port}") as channel:
        stub = pb_grpc.ExternalProcessorStub(channel)
        message = headers_message(
            {"x-request-id": request_id, "x-ensemble-models": models}, end_of_stream=False
        )
        [response] = list(stub.Process(iter([message])))
    mutation = response.request_headers.response.header_mutation
    return {o.header.key: o.header.raw_value.decode() for o in mutation.set_headers}


def to_upstream(
    parts: Parts, headers: Mapping[str, str], path: str = "/v1/chat/completions"
) -> tuple[int, Any]:
    address = parts.config.listen.upstream
    connection = http.client.HTTPConnection(address.host, address.port, timeout=10)
    try:
        connection.request(
            "POST", path, json.dumps(CHAT), {"content-type": "application/json", **headers}
        )
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_a_signature_works_once_for_its_own_request_only(fresh: Provider) -> None:
    """Issue 12.4: a captured signature could be replayed for 300 s with any body."""
    signed = processor_headers(fresh.parts, "rid-once", "demo-fast")
    assert signed[h.SIGNATURE]
    own = {**signed, "x-request-id": "rid-once"}
    other_id = {**signed, "x-request-id": "rid-other"}
    refused_for_another_request, answer = to_upstream(fresh.parts, other_id)
    assert refused_for_another_request == 403
    assert "does not match" in answer["error"]["message"]
    status, answer = to_upstream(fresh.parts, own, "/v1/chat/completions?other=path")
    assert status == 403
    status, answer = to_upstream(fresh.parts, own)
    assert status == 200, answer
    replay, answer = to_upstream(fresh.parts, own)
    assert replay == 403
    assert answer["error"]["code"] == "unsigned_internal_headers"
    assert "already used" in answer["error"]["message"]


def test_a_signature_expires_after_its_lifetime(fresh: Provider) -> None:
    signed = processor_headers(fresh.parts, "rid-late", "demo-fast")
    time.sleep(3.1)  # security.signature_lifetime_seconds is 2 in this stack
    status, answer = to_upstream(fresh.parts, {**signed, "x-request-id": "rid-late"})
    assert status == 403
    assert "expired" in answer["error"]["message"]


def test_identical_ensembles_one_after_the_other_are_both_served(fresh: Provider) -> None:
    """Single use never refuses a real request: each gets its own id and nonce."""
    headers = {"x-ensemble-models": "demo-fast", "x-request-id": "same-every-time"}
    for _ in range(3):
        status, _, payload = request(fresh.parts, "POST", "/v1/chat/completions", headers, CHAT)
        assert status == 200, payload


def test_a_quorum_made_impossible_by_an_open_circuit_is_reported_truthfully(
    fresh: Provider,
) -> None:
    """Issue 12.10: the other members were "cancelled: the ensemble had its answer"."""
    headers = {"x-ensemble-models": "demo-broken,demo-slow", "x-ensemble-min-responses": "2"}
    first, _, _ = request(fresh.parts, "POST", "/v1/chat/completions", headers, CHAT)
    assert first == 502  # demo-broken failed: its circuit opens (failures: 1)
    status, _, payload = request(fresh.parts, "POST", "/v1/chat/completions", headers, CHAT)
    assert status == 502
    members = {c["model"]: c for c in payload["ensemble"]["candidates"]}
    assert members["demo-broken"]["status"] == "skipped"
    assert members["demo-slow"]["status"] == "cancelled"
    assert members["demo-slow"]["error"] == "cancelled: the quorum could no longer be met"
    assert "had its answer" not in json.dumps(payload)


# --------------------------------------------- the default model over HTTPS (stacks B, D)


@contextlib.contextmanager
def default_model_stack(tmp: Path, url: str, ca_file: str, **model: Any) -> Iterator[Parts]:
    raw = {
        "listen": listen_block(),
        "default_model": "default",
        "models": [{"name": "default", "url": url, "ca_file": ca_file, **model}],
        "demo": {"models": demo_models()[:1]},
    }
    with running_parts(tmp, raw) as parts:
        yield parts


def test_an_https_default_model_with_its_ca_is_answered(tmp_path: Path, pki: Pki) -> None:
    """Envoy verifies the chain against the configured CA, the name, and sends SNI; here
    the client's own Authorization goes on (forward_client_auth), its cookie does not."""
    with capture_server(tls=pki.server_context(pki.trusted, "localhost")) as secure:
        url = secure.url("/base/v1", host="localhost")
        with default_model_stack(tmp_path, url, pki.ca_file, forward_client_auth=True) as parts:
            status, _, payload = request(
                parts, "POST", "/v1/chat/completions", CLIENT_CREDENTIALS, CHAT
            )
            assert status == 200, payload
        [seen] = secure.requests
        assert seen.path == "/base/v1/chat/completions"
        assert secure.server_names == ["localhost"]
        assert seen.headers["authorization"] == CLIENT_CREDENTIALS["authorization"]
        assert not (set(CLIENT_CREDENTIALS) - {"authorization"}) & seen.headers.keys()


@pytest.mark.parametrize("issuer", ["untrusted", "wrong-name"])
def test_an_untrusted_https_default_model_is_a_json_502_and_nothing_is_sent(
    tmp_path: Path, pki: Pki, issuer: str
) -> None:
    ca, name = (
        (pki.untrusted, "localhost") if issuer == "untrusted" else (pki.trusted, "other.example")
    )
    with capture_server(tls=pki.server_context(ca, name)) as server:
        url = server.url(host="localhost")
        with default_model_stack(tmp_path, url, pki.ca_file) as parts:
            status, got, payload = request(parts, "POST", "/v1/chat/completions", {}, CHAT)
        assert status == 502
        message = assert_envoy_json_error(status, got, payload, "upstream_tls_error")
        assert "CERTIFICATE_VERIFY_FAILED" in message
        assert server.requests == []


# --------------------------------------------------------- the fallback route (stack C)


def test_the_fallback_to_the_default_model_sends_no_internal_header(tmp_path: Path) -> None:
    """Issue 12.4: with the upstream down, the signed internal headers (and the client's
    credentials) reached the default model through the aggregate cluster."""
    with capture_server("127.0.0.1", answer="fallback answer") as default:
        raw = {
            "listen": listen_block(),
            "default_model": "provider",
            "models": [
                {
                    "name": "provider",
                    "url": default.url("/base/v1", host="localhost"),
                    "api_key_env": "PROVIDER_KEY",
                }
            ],
            "demo": {"models": demo_models()[:1]},
        }
        with running_parts(tmp_path, raw, {"PROVIDER_KEY": KEY}) as parts:
            parts.kill("upstream")
            headers = {**CLIENT_CREDENTIALS, "x-ensemble-models": "demo-fast"}
            deadline = time.monotonic() + 10
            while True:  # until Envoy's health checks mark the upstream down
                status, got, payload = request(parts, "POST", "/v1/chat/completions", headers, CHAT)
                if status == 200 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
        assert status == 200, payload
        assert got["x-ensemble-served-by"] == "default_model"
        assert payload["choices"][0]["message"]["content"] == "fallback answer"
        seen = default.requests[-1]
        assert (seen.method, seen.path) == ("POST", "/base/v1/chat/completions")
        assert seen.headers["authorization"] == f"Bearer {KEY}"
        assert seen.headers["host"] == f"localhost:{default.port}"
        assert not {name for name in seen.headers if name.startswith("x-ensemble-")}
        assert not (set(CLIENT_CREDENTIALS) - {"authorization"}) & seen.headers.keys()
