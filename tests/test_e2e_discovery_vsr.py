"""Issue 16.3 and 16.4 through the real Envoy: the openai SDK discovers models and
profiles; the semantic router's processor (a stand-in) runs before ours and ours decides
from its headers, with clients unable to speak for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from parts import POLICY, Gateway, chat_json, curl, running_gateway
from vsr_standin import CONFIDENCE, MODEL, Router, running_router

from helpers import free_port

# ------------------------------------------------------------------ discovery (16.3)


def test_the_sdk_lists_what_a_client_may_name(gateway: Gateway) -> None:
    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0) as client:
        check_listing(client)


def check_listing(client: openai.OpenAI) -> None:
    listed = client.models.list().data
    kinds = {m.id: m.ensemble_kind for m in listed}  # type: ignore[attr-defined]
    assert listed[0].id == "demo-default"
    assert kinds["demo-default"] == "default"
    assert kinds["demo-fast"] == kinds["demo-judge"] == "member"
    assert kinds["critical"] == kinds["quick"] == "profile"
    assert all(m.object == "model" and m.owned_by.startswith("ensemble-extproc") for m in listed)
    critical = client.models.retrieve("critical")
    assert critical.ensemble_strategy == "voting"  # type: ignore[attr-defined]
    assert critical.ensemble_models == ["demo-fast", "demo-medium", "demo-slow"]  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("gpt-nonexistent")
    assert missing.value.code == "unknown_model"
    # A profile it listed is one a request may name.
    answer = client.chat.completions.create(
        model="critical", messages=[{"role": "user", "content": "Capital of France?"}]
    )
    assert answer.model == "ensemble/voting"


# ------------------------------------------------------- the semantic router (16.4)

HARD = "Prove the Riemann hypothesis"


def classify(prompt: str) -> tuple[str, float]:
    """The stand-in's 'classifier': hard prompts get low confidence."""
    return ("demo-slow", 0.2) if "Riemann" in prompt else ("demo-fast", 0.95)


class Chained:
    def __init__(self, gateway: Gateway, router: Router) -> None:
        self.gateway = gateway
        self.router = router


@pytest.fixture(scope="module")
def chained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chained]:
    port = free_port()
    extra: dict[str, Any] = {
        **POLICY,
        "semantic_router": {
            "dialect": True,
            "extproc": {"address": f"127.0.0.1:{port}", "failure_mode": "closed"},
        },
    }
    with running_router(classify, port) as router:
        tmp: Path = tmp_path_factory.mktemp("chained")
        with running_gateway(tmp, extra) as gateway:
            yield Chained(gateway, router)


def test_low_confidence_from_the_router_ensembles(chained: Chained) -> None:
    status, headers, body = curl(chained.gateway, "-d", chat_json(HARD))
    assert status == 200
    assert headers["x-ensemble-decision"] == "adaptive"
    assert headers["x-ensemble-confidence"] == "0.200"
    assert body["model"] == "ensemble/first_success"  # adaptive's profile, "quick"
    # Our route won over the router's clear_route_cache; its response mutation still
    # applies, and the seed's dialect says an ensemble answered.
    assert headers[MODEL] == "demo-slow"
    assert headers[CONFIDENCE] == "0.20"
    assert headers["x-vsr-ensemble-used"] == "true"
    assert headers["x-vsr-ensemble-models-queried"] == "2"


def test_high_confidence_from_the_router_does_not(chained: Chained) -> None:
    status, headers, body = curl(chained.gateway, "-d", chat_json("Capital of France?"))
    assert status == 200
    assert headers["x-ensemble-decision"] == "none"
    assert headers["x-ensemble-confidence"] == "0.950"
    assert headers["x-demo-model"] == "demo-default"
    assert headers[MODEL] == "demo-fast"
    assert "x-vsr-ensemble-used" not in headers
    assert "ensemble" not in body


@pytest.mark.parametrize(
    ("prompt", "spoofed", "decision"),
    [
        # A client cannot buy an ensemble with a low confidence of its own...
        ("Capital of France?", "0.0", "none"),
        # ...nor avoid the one the router asks for.
        (HARD, "1.0", "adaptive"),
    ],
)
def test_clients_cannot_speak_for_the_router(
    chained: Chained, prompt: str, spoofed: str, decision: str
) -> None:
    before = len(chained.router.seen)
    status, headers, _ = curl(
        chained.gateway,
        "-d",
        chat_json(prompt),
        "-H",
        f"{CONFIDENCE}: {spoofed}",
        "-H",
        f"{MODEL}: demo-hang",
    )
    assert status == 200
    assert headers["x-ensemble-decision"] == decision
    # Removed at Envoy's edge: not even the router saw the client's copies.
    [seen] = chained.router.seen[before:]
    assert CONFIDENCE not in seen
    assert MODEL not in seen


def test_the_router_also_sees_model_listing(chained: Chained) -> None:
    with openai.OpenAI(base_url=f"{chained.gateway.url}/v1", api_key="x", max_retries=0) as client:
        assert "quick" in {m.id for m in client.models.list().data}
