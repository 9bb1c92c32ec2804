"""Which requests the processor must see (``scope``): table tests per config, and the
property the rendered routes rely on: a request outside the scope gets the answer Envoy
gives alone (a pass-through that says nobody decided, nothing to remove)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_extproc import headers as h
from ensemble_extproc.adaptive.signals import build_signals
from ensemble_extproc.body import check_content_encoding
from ensemble_extproc.config import Config, compile_config
from ensemble_extproc.errors import ApiError
from ensemble_extproc.extproc.decision import (
    Decision,
    Passthrough,
    Reject,
    Reroute,
    decide,
    decision_label,
    needs_body,
)
from ensemble_extproc.extproc.policy import DecisionPolicy
from ensemble_extproc.rules import RequestView
from ensemble_extproc.scope import scope
from ensemble_extproc.spec import parse_max_cost, with_cost_cap

CHAT = "/v1/chat/completions"
URLS = {name: f"http://127.0.0.1:9/{name}" for name in ("m1", "m2", "m3")}
ASKING = (h.ENABLE, h.MODELS, h.STRATEGY, h.MIN_RESPONSES, h.MAX_COST)
CE = "content-encoding"  # a compressed body is refused whatever the config
PROFILES = {"critical": {"models": ["m1", "m2"]}, "quick": {"models": ["m1"]}}


def config(**extra: Any) -> Config:
    raw: dict[str, Any] = {"models": [{"name": n, "url": u} for n, u in URLS.items()], **extra}
    return compile_config(raw, environ={})


def adaptive(*signals: dict[str, Any]) -> dict[str, Any]:
    return {"enabled": True, "profile": "quick", "signals": list(signals)}


CONFIGS: dict[str, tuple[Config, list[str], tuple[str, ...]]] = {
    # name: (config, the keys that send every chat completion, the headers otherwise)
    "headers only": (config(), [], (*ASKING, *h.INTERNAL, CE)),
    "header control off": (
        config(header_control={"enabled": False}),
        [],
        (h.ENABLE, *h.INTERNAL, CE, h.MAX_COST),
    ),
    "ensembles off, with profiles": (
        config(ensemble={"enabled": False}, profiles=PROFILES),
        [],
        (h.ENABLE, *h.INTERNAL, CE, h.MAX_COST),
    ),
    "profiles": (config(profiles=PROFILES), ["profiles"], (*ASKING, *h.INTERNAL, CE)),
    "rules": (
        config(
            profiles=PROFILES,
            rules=[
                {
                    "name": "med",
                    "profile": "critical",
                    "match": {"last_user_message": {"keywords": ["dosage"]}},
                },
                {
                    "name": "team",
                    "profile": "quick",
                    "match": {"headers.X-Team": {"present": False}},
                },
            ],
        ),
        ["profiles", "rules[0] (med)", "rules[1] (team)"],
        (*ASKING, *h.INTERNAL, CE),
    ),
    "adaptive": (
        config(
            profiles=PROFILES,
            adaptive=adaptive(
                {"type": "header", "headers": ["X-Router-Confidence"]},
                {"type": "difficulty"},
                {"type": "python:test_adaptive_parts:make_length_signal"},
            ),
        ),
        ["profiles", "adaptive.signals[1]", "adaptive.signals[2]"],
        (*ASKING, *h.INTERNAL, CE, "x-router-confidence"),
    ),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_scope_of_each_config(name: str) -> None:
    built, keys, headers = CONFIGS[name]
    found = scope(built)
    assert [reason.key for reason in found.every_chat_completion] == keys
    assert found.headers == headers
    assert found.reads_body is needs_body(built)
    assert found.reads_body is bool(keys)  # every example config with a reason reads bodies


def test_a_header_rule_alone_sends_every_chat_completion_but_reads_no_body() -> None:
    *_, rule = scope(CONFIGS["rules"][0]).every_chat_completion
    assert (rule.key, rule.reads_body) == ("rules[1] (team)", False)
    assert "headers.x-team" in rule.why


@pytest.mark.parametrize(
    ("name", "said"),
    [
        ("headers only", ["asked only for chat completions that carry one of", h.MODELS]),
        (
            "adaptive",
            [
                "reads the body of every chat completion",
                "profiles",
                "critical, quick",
                "adaptive.signals[1]: difficulty",
                "adaptive.signals[2]: python:test_adaptive_parts:make_length_signal",
            ],
        ),
    ],
)
def test_the_description_names_the_keys_responsible(name: str, said: list[str]) -> None:
    text = scope(CONFIGS[name][0]).describe()
    for part in said:
        assert part in text, text


NAMES = st.sampled_from(
    [
        *ASKING,
        *h.INTERNAL,
        "x-ensemble-colour",
        "x-vsr-selected-confidence",
        "x-router-confidence",
        "authorization",
        "x-api-key",
        "content-type",
        "content-encoding",
        "x-team",
    ]
)
VALUES = st.sampled_from(
    ["", "true", "false", "perhaps", "m1", "m1,m2", "0.1", "ensemble", "gzip", "identity"]
)


@pytest.mark.parametrize("name", [n for n, (_, keys, _) in CONFIGS.items() if not keys])
@settings(max_examples=300, deadline=None)
@given(headers=st.dictionaries(NAMES, VALUES, max_size=6), body_pending=st.booleans())
def test_outside_the_scope_the_processor_answers_as_envoy_alone(
    name: str, headers: dict[str, str], body_pending: bool
) -> None:
    """The direct route sends a chat completion without any scope header to the default
    model, saying nobody decided: exactly what the processor would have answered."""
    built = CONFIGS[name][0]
    outside = {k: v for k, v in headers.items() if k not in scope(built).headers}
    outside |= {":method": "POST", ":path": CHAT, "x-request-id": "r"}
    view = RequestView(path=CHAT, headers=outside)
    decision = DecisionPolicy(built).decide(view, body_pending=body_pending)
    assert isinstance(decision, Passthrough)
    assert (decision_label(decision), decision.confidence) == ("none", None)
    assert not set(h.INTERNAL) & outside.keys()  # nothing for the processor to remove


@pytest.mark.parametrize("name", CONFIGS)
@settings(max_examples=100, deadline=None)
@given(
    headers=st.dictionaries(NAMES, VALUES, max_size=6),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=st.sampled_from(["/v1/models", "/v1/models/m1", "/v1/embeddings", "/", CHAT]),
)
def test_only_chat_completions_can_need_the_processor(
    name: str, headers: dict[str, str], method: str, path: str
) -> None:
    """Every other request is a pass-through whatever it carries: its routes never ask."""
    if (method, path) == ("POST", CHAT):
        return
    built = CONFIGS[name][0]
    view = RequestView(path=path, headers={**headers, ":method": method, ":path": path})
    decision = DecisionPolicy(built).decide(view, body_pending=True)
    assert decision == Passthrough("not a chat completion")


@pytest.mark.parametrize("name", CONFIGS)
@settings(max_examples=200, deadline=None)
@given(headers=st.dictionaries(NAMES, VALUES, max_size=6), body_pending=st.booleans())
def test_the_processors_shortcut_outside_the_scope_decides_as_the_full_path(
    name: str, headers: dict[str, str], body_pending: bool
) -> None:
    """The processor answers a chat completion outside the scope at once (for Envoys that
    ask about every request): exactly what every source in turn would have decided."""
    built = CONFIGS[name][0]
    policy = DecisionPolicy(built)
    full = {**headers, ":method": "POST", ":path": CHAT, "x-request-id": "r"}
    view = RequestView(path=CHAT, headers=full)
    expected: Decision
    try:
        if body_pending:
            check_content_encoding(full)
        expected = decide(
            view,
            built,
            build_signals(built.adaptive.signals),
            lambda _: (True, ""),
            body_pending=body_pending and needs_body(built),
        )
        # Whoever decided, the cost cap is checked (and goes with an ensemble's spec).
        if isinstance(expected, Reroute):
            expected = replace(expected, spec=with_cost_cap(expected.spec, full, built))
        elif isinstance(expected, Passthrough):
            parse_max_cost(full)
    except ApiError as error:
        expected = Reject(error)
    assert comparable(policy.decide(view, body_pending=body_pending)) == comparable(expected)


def comparable(decision: Decision) -> object:
    """Rejects carry an exception, which compares by identity: compare what it says."""
    if isinstance(decision, Reject):
        return (decision.error.status, decision.error.code, str(decision.error))
    return decision


def test_a_confidence_header_from_the_router_sends_every_chat_completion() -> None:
    """The router sets x-vsr-selected-confidence after Envoy picked the route: a route
    chosen by its presence would never see it, so every chat completion goes to ours."""
    raw = {
        "models": [{"name": "m", "url": "http://127.0.0.1:1/v1"}],
        "profiles": {"p": {"models": ["m"]}},
        "adaptive": {"enabled": True, "profile": "p", "signals": [{"type": "header"}]},
    }
    without = scope(compile_config(raw))
    with_router = scope(
        compile_config({**raw, "semantic_router": {"extproc": {"address": "127.0.0.1:50051"}}})
    )
    assert "adaptive.signals[0]" not in [r.key for r in without.every_chat_completion]
    [reason] = [r for r in with_router.every_chat_completion if r.key == "adaptive.signals[0]"]
    assert "semantic_router.extproc" in reason.why
    assert not reason.reads_body
