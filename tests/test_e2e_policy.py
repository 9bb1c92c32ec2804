"""End to end through the real Envoy: config rules, profiles, adaptive confidence, header
control and unforgeable internal headers (see conftest.POLICY for the gateway's policy)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest

from ensemble_extproc import headers as h
from ensemble_extproc.internal import Binding, sign
from parts import QUESTION, Gateway, chat_json, curl, running_gateway

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


def test_model_naming_a_profile_selects_it(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="critical", messages=QUESTION)  # type: ignore[arg-type]
    completion = raw.parse()
    assert raw.headers["x-ensemble-decision"] == "rule:model"
    assert raw.headers["x-ensemble-strategy"] == "voting"
    assert raw.headers["x-ensemble-models-queried"] == "demo-fast,demo-medium,demo-slow"
    assert completion.model == "ensemble/voting"
    assert completion.choices[0].message.content == "Paris."


def test_keyword_rule_sends_medical_prompts_to_the_critical_profile(gateway: Gateway) -> None:
    status, headers, answer = curl(gateway, "-d", chat_json("What dosage of ibuprofen is safe?"))
    assert status == 200
    assert headers["x-ensemble-decision"] == "rule:medical"
    assert headers["x-ensemble-models-queried"] == "demo-fast,demo-medium,demo-slow"
    assert answer["ensemble"]["strategy"] == "voting"


@pytest.mark.parametrize(
    ("confidence", "decision", "routed"),
    [
        ("0.2", "adaptive", True),
        ("0.9", "none", False),
        ("banana", "none", False),
        ("7", "none", False),
    ],
)
def test_semantic_router_confidence_header(
    gateway: Gateway, confidence: str, decision: str, routed: bool
) -> None:
    status, headers, answer = curl(
        gateway, "-H", f"x-vsr-selected-confidence: {confidence}", "-d", chat_json()
    )
    assert status == 200  # an unusable confidence is ignored, never the client's error
    assert headers["x-ensemble-decision"] == decision
    if routed:
        assert headers["x-ensemble-confidence"] == "0.200"
        assert headers["x-ensemble-strategy"] == "first_success"  # the "quick" profile
    else:
        assert headers["x-demo-model"] == "demo-default"
        assert answer["model"] == "demo-default"


def test_plain_requests_say_nobody_decided(gateway: Gateway) -> None:
    status, headers, _ = curl(gateway, "-d", chat_json())
    assert status == 200
    assert headers["x-ensemble-decision"] == "none"
    assert headers["x-demo-model"] == "demo-default"


def test_header_requests_say_so(gateway: Gateway) -> None:
    _, headers, _ = curl(gateway, "-H", "x-ensemble-models: demo-fast", "-d", chat_json())
    assert headers["x-ensemble-decision"] == "header"


def test_invalid_json_is_the_processors_400_when_the_body_is_read(gateway: Gateway) -> None:
    status, _headers, answer = curl(gateway, "-d", "{nope")
    assert status == 400
    assert answer["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    "spoof",
    [
        ["x-ensemble-route: ensemble"],
        [
            "x-ensemble-route: ensemble",
            "x-ensemble-profile: critical",
            "x-ensemble-decision: rule:medical",
            "x-ensemble-signature: t=1,v1=00",
        ],
    ],
)
def test_spoofed_internal_headers_are_ignored(gateway: Gateway, spoof: list[str]) -> None:
    args = [arg for header in spoof for arg in ("-H", header)]
    status, headers, _answer = curl(gateway, *args, "-d", chat_json())
    assert status == 200
    assert headers["x-demo-model"] == "demo-default"
    assert headers["x-ensemble-decision"] == "none"


async def direct(gateway: Gateway, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gateway.upstream_url}/v1/chat/completions", data=chat_json(), headers=headers
        ) as resp,
    ):
        return resp.status, await resp.json()


@pytest.mark.parametrize(
    "headers",
    [
        {"x-ensemble-models": "demo-fast,demo-medium"},
        {
            "x-ensemble-models": "demo-fast",
            "x-ensemble-profile": "critical",
            "x-ensemble-signature": f"t={int(time.time())},v1={'0' * 64}",
        },
    ],
)
async def test_the_upstream_rejects_unsigned_internal_headers(
    gateway: Gateway, headers: dict[str, str]
) -> None:
    status, answer = await direct(gateway, headers)
    assert status == 403
    assert answer["error"]["code"] == "unsigned_internal_headers"


async def test_a_signature_with_another_key_is_rejected(gateway: Gateway) -> None:
    values = {h.MODELS: "demo-fast", h.STRATEGY: "voting", h.MIN_RESPONSES: "1"}
    binding = Binding("", "POST", "/v1/chat/completions")
    forged = {
        **values,
        h.SIGNATURE: sign(b"not-the-gateway-secret!", values, binding, time.time()),
    }
    status, answer = await direct(gateway, forged)
    assert status == 403
    assert "does not match" in answer["error"]["message"]


@pytest.fixture(scope="module")
def no_header_control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    extra = {**__import__("conftest").POLICY, "header_control": {"enabled": False}}
    with running_gateway(tmp_path_factory.mktemp("no-headers"), extra) as running:
        yield running


def test_header_control_switched_off(no_header_control: Gateway) -> None:
    status, headers, answer = curl(
        no_header_control, "-H", "x-ensemble-models: demo-fast,demo-medium", "-d", chat_json()
    )
    assert status == 200
    assert headers["x-ensemble-decision"] == "none"
    assert answer["model"] == "demo-default"
    # Rules still apply.
    _, headers, _ = curl(no_header_control, "-d", chat_json("dosage for a child?"))
    assert headers["x-ensemble-decision"] == "rule:medical"


def test_access_log_carries_the_decision(gateway: Gateway) -> None:
    curl(gateway, "-H", "x-vsr-selected-confidence: 0.1", "-d", chat_json("access log probe"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        entries = [
            json.loads(line)
            for line in Path(gateway.log).read_text().splitlines()
            if line.startswith("{")
        ]
        # Confidence 0.1 is this test's own probe (others send 0.2).
        probes = [e for e in entries if e.get("confidence") == "0.100"]
        if probes:
            assert probes[-1]["decision"] == "adaptive"
            assert probes[-1]["profile"] == "quick"
            assert probes[-1]["route"] == "ensemble"
            return
        time.sleep(0.1)
    raise AssertionError("no access log line with decision=adaptive")
