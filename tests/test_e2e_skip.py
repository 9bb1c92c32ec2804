"""Envoy alone routes what the processor could not answer differently (issue 14.1).

Two Envoys in front of the same processor, upstream and models: one with the shipped
bootstrap (ext_proc only on the routes that need it), one with ext_proc on every route, as
before. Every request of the matrix (plain traffic, header ensembles, bad headers, spoofed
internal headers, precedence between the sources) gets the same answer from both, and the
answer it should; and the shipped Envoy opens a processor stream exactly for the requests
that need one (Envoy's ext_proc stats), for four configs: headers only, a policy
(profiles, rules, adaptive), header control off, ensembles off.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ensemble_extproc import headers as h
from ensemble_extproc.config import Config
from ensemble_extproc.internal import Binding, sign
from parts import POLICY, Parts, gateway_config, running_parts

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
STREAMS = "http.gateway.ext_proc.streams_started"


def body(text: str = "What is the capital of France?", model: str = "any") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}]}).encode()


def forged_signature() -> str:
    values = {h.MODELS: "demo-fast", h.PROFILE: "critical"}
    binding = Binding("", "POST", CHAT)
    return sign(b"not-the-gateway-secret-at-all!", values, binding, time.time())


@dataclass(frozen=True)
class Case:
    """One request, and what each config must answer (``*``: every config not named).

    Answers: ``default`` (the default model), ``list`` (its model list), ``header`` /
    ``rule:<name>`` / ``adaptive`` (an ensemble, so decided), ``error:<code>`` (an
    OpenAI-style error), ``status:<code>`` (a body that is not JSON)."""

    name: str
    expect: dict[str, str]
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "POST"
    path: str = CHAT
    data: bytes | None = field(default_factory=body)
    # False: Envoy answers before its filters run.
    filtered: bool = True

    def expected(self, config: str) -> str:
        return self.expect.get(config, self.expect["*"])


ONE = (("x-ensemble-models", "demo-fast"), ("x-ensemble-strategy", "first_success"))
SPOOF = (
    ("x-ensemble-route", "ensemble"),
    ("x-ensemble-profile", "critical"),
    ("x-ensemble-decision", "rule:medical"),
    ("x-ensemble-timeout", "0.001"),
    ("x-ensemble-signature", "t=1,n=1,v1=00"),
)
HEADERS_ON = {"headers": "header", "policy": "header"}  # header control and ensembles on
INVALID_JSON = "error:invalid_json"

CASES = [
    # Plain traffic.
    Case("plain", {"*": "default"}),
    Case("plain with a query", {"*": "default"}, path=f"{CHAT}?trace=1"),
    Case("plain, merged slashes", {"*": "default"}, path="//v1//chat/completions"),
    Case("model list", {"*": "list"}, method="GET", path="/v1/models", data=None),
    Case("unserved path", {"*": "error:not_found"}, path="/v1/embeddings"),
    Case("another method", {"*": "error:method_not_allowed"}, method="GET", data=None),
    # Refused by Envoy's HTTP codec, before any route or filter.
    Case("a lower-case method", {"*": "error:bad_request"}, method="post", filtered=False),
    Case("an unknown x-ensemble header", {"*": "default"}, (("x-ensemble-colour", "blue"),)),
    # Header ensembles and their precedence.
    Case("models", {**HEADERS_ON, "*": "default"}, ONE),
    Case(
        "models, names in capitals",
        {**HEADERS_ON, "*": "default"},
        (("X-Ensemble-Models", "demo-fast"), ("X-ENSEMBLE-STRATEGY", "first_success")),
    ),
    Case(
        "enable: true",
        {"headers": "error:missing_models", "policy": "error:missing_models", "*": "default"},
        (("x-ensemble-enable", "true"),),
    ),
    Case("enable: false wins", {"*": "default"}, (("x-ensemble-enable", "false"), *ONE)),
    Case("enable: FALSE", {"*": "default"}, (("x-ensemble-enable", "FALSE"), *ONE)),
    Case("models on the model list", {"*": "list"}, ONE, "GET", "/v1/models", None),
    Case("models on an unserved path", {"*": "error:not_found"}, ONE, path="/v1/completions"),
    # Bad headers.
    Case("enable: perhaps", {"*": "error:invalid_header"}, (("x-ensemble-enable", "perhaps"),)),
    Case("enable, empty", {"*": "error:invalid_header"}, (("x-ensemble-enable", ""),)),
    Case(
        "models, empty",
        {"headers": "error:invalid_header", "policy": "error:invalid_header", "*": "default"},
        (("x-ensemble-models", ""),),
    ),
    Case(
        "models, repeated",
        {"headers": "error:duplicate_model", "policy": "error:duplicate_model", "*": "default"},
        (("x-ensemble-models", "demo-fast"), ("x-ensemble-models", "demo-fast")),
    ),
    Case(
        "strategy alone",
        {"headers": "error:missing_models", "policy": "error:missing_models", "*": "default"},
        (("x-ensemble-strategy", "first_success"),),
    ),
    Case(
        "unknown model",
        {"headers": "error:model_not_found", "policy": "error:model_not_found", "*": "default"},
        (("x-ensemble-models", "demo-fast,gpt-nope"),),
    ),
    Case(
        "unknown strategy",
        {"headers": "error:unknown_strategy", "policy": "error:unknown_strategy", "*": "default"},
        (("x-ensemble-models", "demo-fast"), ("x-ensemble-strategy", "best")),
    ),
    Case(
        "min responses 0",
        {
            "headers": "error:invalid_min_responses",
            "policy": "error:invalid_min_responses",
            "*": "default",
        },
        (("x-ensemble-models", "demo-fast"), ("x-ensemble-min-responses", "0")),
    ),
    Case(
        "too many models",
        {"headers": "error:too_many_models", "policy": "error:too_many_models", "*": "default"},
        (("x-ensemble-models", "demo-fast,demo-medium,demo-slow,demo-judge,demo-aggregator"),),
    ),
    # Clients' copies of internal headers: removed, whatever their spelling.
    Case("route", {"*": "default"}, (("x-ensemble-route", "ensemble"),)),
    Case("route in capitals", {"*": "default"}, (("x-ensemble-route", "ENSEMBLE"),)),
    Case("route, name in capitals", {"*": "default"}, (("X-Ensemble-Route", "ensemble"),)),
    Case(
        "route, repeated",
        {"*": "default"},
        (("x-ensemble-route", "ensemble"), ("x-ensemble-route", "ensemble")),
    ),
    Case("route, empty", {"*": "default"}, (("x-ensemble-route", ""),)),
    Case("profile alone", {"*": "default"}, (("x-ensemble-profile", "critical"),)),
    Case("decision alone", {"*": "default"}, (("x-ensemble-decision", "header"),)),
    Case("timeout alone", {"*": "default"}, (("x-ensemble-timeout", "0.001"),)),
    Case("signature alone", {"*": "default"}, (("x-ensemble-signature", "t=1,n=1,v1=00"),)),
    Case("every internal header", {"*": "default"}, SPOOF),
    Case(
        "a signature made with another key",
        {"*": "default"},
        (*SPOOF[:2], ("x-ensemble-signature", forged_signature())),
    ),
    Case("spoof beside models", {**HEADERS_ON, "*": "default"}, (*SPOOF, *ONE)),
    Case("spoof, enable: false", {"*": "default"}, (*SPOOF, ("x-ensemble-enable", "false"))),
    Case("spoof on the model list", {"*": "list"}, SPOOF, "GET", "/v1/models", None),
    Case("spoof on an unserved path", {"*": "error:not_found"}, SPOOF, path="/v1/embeddings"),
    Case(
        "spoof with a profile's name in the body",
        {"policy": "rule:model", "*": "default"},
        SPOOF,
        data=body(model="critical"),
    ),
    # The body and adaptive confidence.
    Case(
        "a profile named in the body",
        {"policy": "rule:model", "*": "default"},
        data=body(model="critical"),
    ),
    Case(
        "a keyword rule",
        {"policy": "rule:medical", "*": "default"},
        data=body("What dosage of ibuprofen is safe?"),
    ),
    Case(
        "headers before the body",
        {**HEADERS_ON, "*": "default"},
        ONE,
        data=body("What dosage of ibuprofen is safe?", model="critical"),
    ),
    Case("invalid JSON", {"policy": INVALID_JSON, "*": "error:invalid_json"}, data=b"{nope"),
    Case(
        "low confidence",
        {"policy": "adaptive", "*": "default"},
        (("x-vsr-selected-confidence", "0.2"),),
    ),
    Case(
        "unusable confidence",
        {"*": "default"},
        (("x-vsr-selected-confidence", "banana"),),
    ),
    Case(
        "low confidence, enable: false",
        {"*": "default"},
        (("x-vsr-selected-confidence", "0.2"), ("x-ensemble-enable", "false")),
    ),
    Case("identity encoding", {"*": "default"}, (("content-encoding", "identity"),)),
    # A compressed body is refused whatever the config (the processor's 415).
    Case(
        "gzip encoding",
        {"*": "error:unsupported_content_encoding"},
        (("content-encoding", "gzip"),),
    ),
    Case(
        "gzip encoding, name in capitals",
        {"*": "error:unsupported_content_encoding"},
        (("Content-Encoding", "gzip"),),
    ),
]


def reaches_processor(case: Case, config: str) -> bool:
    """The issue's rule, written out independently of ``scope``: only chat completions,
    all of them when the config reads bodies (policy), else those carrying an x-ensemble-*
    header the processor reads in that config, or a Content-Encoding (checked whatever the
    config)."""
    if (
        not case.filtered
        or case.method != "POST"
        or case.path.partition("?")[0].replace("//", "/") != CHAT
    ):
        return False
    if config == "policy":
        return True
    names = {name.lower() for name, _ in case.headers}
    read = {h.ENABLE, *h.INTERNAL, "content-encoding"}
    if config == "headers":
        read |= {h.MODELS, h.STRATEGY, h.MIN_RESPONSES}
    return bool(names & read)


def config_raw(name: str) -> dict[str, Any]:
    if name == "policy":
        return gateway_config(POLICY)
    raw = gateway_config({})
    if name == "no header control":
        raw["header_control"] = {"enabled": False}
    elif name == "ensembles off":
        raw["ensemble"]["enabled"] = False
    return raw


@dataclass(frozen=True)
class Front:
    config: Config

    def stats(self) -> dict[str, int]:
        admin = self.config.listen.envoy_admin
        with urllib.request.urlopen(f"http://{admin}/stats?filter=ext_proc", timeout=5) as r:
            lines = r.read().decode().splitlines()
        pairs = (line.split(": ", 1) for line in lines if ": " in line)
        return {key: int(value) for key, value in pairs if value.strip().isdigit()}

    def send(self, case: Case) -> tuple[int, dict[str, str], Any]:
        address = self.config.listen.envoy
        connection = http.client.HTTPConnection(address.host, address.port, timeout=10)
        try:
            connection.putrequest(case.method, case.path, skip_accept_encoding=True)
            headers = list(case.headers)
            if case.data is not None:
                headers += [("content-type", "application/json")]
                headers += [("content-length", str(len(case.data)))]
            for name, value in headers:
                connection.putheader(name, value)
            connection.endheaders(case.data)
            response = connection.getresponse()
            raw = response.read()
            got = {k.lower(): v for k, v in response.getheaders()}
        finally:
            connection.close()
        payload: Any = raw.decode(errors="replace")
        if got.get("content-type", "").startswith("application/json"):
            payload = json.loads(raw)
        return response.status, got, payload


COMPARED = (
    "x-ensemble-decision",
    "x-ensemble-confidence",
    "x-ensemble-served-by",
    "x-ensemble-strategy",
    "x-ensemble-selected-model",
    "x-ensemble-models-queried",
    "x-demo-model",
    "allow",
    "content-type",
)


def outcome(status: int, headers: dict[str, str], payload: Any) -> dict[str, Any]:
    """What a client sees, without what differs between any two requests (ids, times)."""
    seen: dict[str, Any] = {"status": status, **{k: headers.get(k) for k in COMPARED}}
    if isinstance(payload, dict) and "error" in payload:
        seen["error"] = (payload["error"]["code"], payload["error"]["message"])
    elif isinstance(payload, dict):
        seen["model"] = payload.get("model")
        seen["object"] = payload.get("object")
        choices = payload.get("choices") or [{}]
        seen["answer"] = choices[0].get("message", {}).get("content")
    else:
        seen["text"] = payload
    return seen


def answer(seen: dict[str, Any]) -> str:
    """The kind of answer (see ``Case``) an outcome is."""
    if "error" in seen:
        return f"error:{seen['error'][0]}"
    if "text" in seen:
        return f"status:{seen['status']}"
    if seen["object"] == "list":
        return "list"
    if seen["x-demo-model"] == "demo-default":
        assert seen["x-ensemble-decision"] == "none", seen
        return "default"
    assert seen["status"] == 200, seen
    return str(seen["x-ensemble-decision"])


@dataclass(frozen=True)
class Stack:
    parts: Parts
    shipped: Front
    every_route: Front


CONFIGS = ("headers", "policy", "no header control", "ensembles off")


@pytest.fixture(scope="module", params=CONFIGS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Stack]]:
    name: str = request.param
    tmp = tmp_path_factory.mktemp(name.replace(" ", "-"))
    with running_parts(tmp, config_raw(name)) as parts:
        every_route = parts.start_envoy("envoy-every-route", processor_on_every_request=True)
        yield name, Stack(parts, Front(parts.config), Front(every_route))


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_same_answer_with_and_without_the_skip(stack: tuple[str, Stack], case: Case) -> None:
    name, gateway = stack
    before = gateway.shipped.stats().get(STREAMS, 0), gateway.every_route.stats().get(STREAMS, 0)
    shipped = outcome(*gateway.shipped.send(case))
    reference = outcome(*gateway.every_route.send(case))
    after = gateway.shipped.stats().get(STREAMS, 0), gateway.every_route.stats().get(STREAMS, 0)
    assert shipped == reference
    assert answer(shipped) == case.expected(name), shipped
    # The shipped Envoy asks the processor only when the request needs it; the reference
    # asks it for every request.
    assert after[0] - before[0] == int(reaches_processor(case, name))
    assert after[1] - before[1] == int(case.filtered)


def test_requests_envoy_routes_alone_are_logged_as_undecided(tmp_path: Path) -> None:
    """The access log's decision is the processor's, or the route's own "none"."""
    with running_parts(tmp_path, config_raw("headers")) as parts:
        front = Front(parts.config)
        for case in (CASES[0], Case("models", {}, ONE)):
            status, _, _ = front.send(case)
            assert status == 200
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            entries = [
                json.loads(line)
                for line in parts.log.read_text().splitlines()
                if line.startswith("{") and '"route"' in line
            ]
            if len(entries) >= 2:
                break
            time.sleep(0.2)
    by_route = {entry["route"]: entry["decision"] for entry in entries}
    assert by_route == {"default_model_direct": "none", "ensemble": "header"}
