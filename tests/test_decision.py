"""Table tests of the decision: headers, rules, adaptive confidence, and their precedence."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ensemble_extproc.adaptive.signals import build_signals
from ensemble_extproc.config import Config, ConfigError, compile_config
from ensemble_extproc.extproc.decision import (
    NeedBody,
    Passthrough,
    Reject,
    Reroute,
    decide,
    needs_body,
)
from ensemble_extproc.extproc.policy import DecisionPolicy, with_body
from ensemble_extproc.rules import RequestView
from ensemble_extproc.spec import EnsembleSpec

from helpers import make_config

URLS = {name: f"http://127.0.0.1:9/{name}" for name in ("m1", "m2", "m3", "m4")}
CHAT = "/v1/chat/completions"
CONFIG = make_config(URLS, ensemble={"max_models_per_request": 3, "default_min_responses": 2})
WITH_DEFAULTS = make_config(
    URLS, ensemble={"default_models": ["m1", "m2"], "default_strategy": "first_success"}
)


def policy_config(**extra: Any) -> Config:
    raw: dict[str, Any] = {
        "models": [{"name": n, "url": u} for n, u in URLS.items()],
        "profiles": {
            "critical": {"models": ["m1", "m2", "m3"], "strategy": "voting", "timeout_seconds": 9},
            "cheap": {"models": ["m1", "m2"], "strategy": "first_success"},
        },
        **extra,
    }
    return compile_config(raw, environ={"CLIENT_KEYS": "k1,k2"})


RULES = [
    {
        "name": "medical",
        "profile": "critical",
        "match": {"last_user_message": {"keywords": ["diagnosis", "dosage"]}},
    },
    {"name": "big", "profile": "cheap", "match": {"body.max_tokens": {"gt": 1000}}},
    {"name": "gold", "profile": "critical", "match": {"body.metadata.tier": {"exact": "gold"}}},
    {"name": "team", "profile": "cheap", "match": {"headers.X-Team": {"in": ["ml", "research"]}}},
    {
        "name": "legal-system",
        "profile": "critical",
        "match": {"system_prompt": {"regex": "(?i)legal"}, "path": {"prefix": "/v1/chat"}},
    },
]
ADAPTIVE = {
    "enabled": True,
    "profile": "critical",
    "threshold": 0.5,
    "signals": [{"type": "header"}, {"type": "difficulty"}],
}


def run(
    config: Config,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    admit: tuple[bool, str] = (True, ""),
) -> Any:
    """Decide as the processor does: on headers, then (if asked) on the body."""
    view = RequestView(path="/v1/chat/completions", headers=headers or {})
    signals = build_signals(config.adaptive.signals)
    decision = decide(view, config, signals, lambda _: admit, body_pending=body is not None)
    if isinstance(decision, NeedBody) and body is not None:
        full = with_body(view, json.dumps(body).encode())
        decision = decide(full, config, signals, lambda _: admit, body_pending=False)
    return decision


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-x", "messages": [{"role": "user", "content": text}], **extra}


# ------------------------------------------------------------------------ headers


@pytest.mark.parametrize(
    ("headers", "spec"),
    [
        ({"x-ensemble-models": "m1,m2"}, EnsembleSpec(("m1", "m2"), "voting", 2)),
        (
            {"x-ensemble-enable": "true", "x-ensemble-models": " m1 , m3 "},
            EnsembleSpec(("m1", "m3"), "voting", 2),
        ),
        (
            {"x-ensemble-models": "m1,m2,m3", "x-ensemble-strategy": "first_success"},
            EnsembleSpec(("m1", "m2", "m3"), "first_success", 1),
        ),
        (
            {"x-ensemble-models": "m1,m2,m3", "x-ensemble-min-responses": "3"},
            EnsembleSpec(("m1", "m2", "m3"), "voting", 3),
        ),
        # The config default (2) is capped at the number of models named.
        ({"x-ensemble-models": "m4"}, EnsembleSpec(("m4",), "voting", 1)),
        # A spoofed routing header does not stop a real ensemble request.
        (
            {"x-ensemble-models": "m1,m2", "x-ensemble-route": "ensemble"},
            EnsembleSpec(("m1", "m2"), "voting", 2),
        ),
    ],
)
def test_header_reroute(headers: dict[str, str], spec: EnsembleSpec) -> None:
    assert run(CONFIG, headers) == Reroute(spec, "header")


def test_enable_alone_uses_the_configured_defaults() -> None:
    decision = run(WITH_DEFAULTS, {"x-ensemble-enable": "yes"})
    assert decision == Reroute(EnsembleSpec(("m1", "m2"), "first_success", 1), "header")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"content-type": "application/json"},
        {"x-ensemble-enable": "false", "x-ensemble-models": "m1,m2"},
        {"x-ensemble-enable": "0", "x-ensemble-models": "nope"},
        {"x-ensemble-route": "ensemble"},
    ],
)
def test_passthrough(headers: dict[str, str]) -> None:
    assert isinstance(run(CONFIG, headers), Passthrough)


def test_disabled_config_never_reroutes() -> None:
    config = compile_config(
        {"ensemble": {"enabled": False, "endpoint_mappings": {"a": "http://127.0.0.1:9/v1"}}}
    )
    decision = run(config, {"x-ensemble-models": "a", "x-ensemble-route": "ensemble"})
    assert decision == Passthrough("disabled")


@pytest.mark.parametrize(
    ("headers", "code", "fragment"),
    [
        ({"x-ensemble-models": "m1,nope"}, "model_not_found", "unknown model 'nope'"),
        ({"x-ensemble-models": "m1,m2,m3,m4"}, "too_many_models", "at most 3"),
        ({"x-ensemble-models": "m1,,m2"}, "invalid_header", "empty model name"),
        ({"x-ensemble-models": "m1,m1"}, "duplicate_model", "twice"),
        ({"x-ensemble-models": "http://evil.example/v1"}, "model_not_found", "unknown model"),
        (
            {"x-ensemble-models": "m1,m2", "x-ensemble-strategy": "best"},
            "unknown_strategy",
            "known strategies: voting, weighted, first_success, score_averaging, reranking",
        ),
        (
            {"x-ensemble-models": "m1,m2", "x-ensemble-strategy": "reranking"},
            "strategy_not_configured",
            "ensemble.reranking.judge_model",
        ),
        (
            {"x-ensemble-models": "m1,m2", "x-ensemble-min-responses": "0"},
            "invalid_min_responses",
            "positive integer",
        ),
        (
            {"x-ensemble-models": "m1,m2", "x-ensemble-min-responses": "-1"},
            "invalid_min_responses",
            "positive integer",
        ),
        (
            {"x-ensemble-models": "m1,m2", "x-ensemble-min-responses": "1.5"},
            "invalid_min_responses",
            "positive integer",
        ),
        (
            {"x-ensemble-models": "m1,m2", "x-ensemble-min-responses": "3"},
            "invalid_min_responses",
            "only 2 model(s)",
        ),
        ({"x-ensemble-enable": "maybe"}, "invalid_header", "true or false"),
        ({"x-ensemble-enable": "true"}, "missing_models", "x-ensemble-models is required"),
        ({"x-ensemble-strategy": "voting"}, "missing_models", "known models: m1, m2, m3, m4"),
    ],
)
def test_reject(headers: dict[str, str], code: str, fragment: str) -> None:
    decision = run(CONFIG, headers)
    assert isinstance(decision, Reject)
    assert decision.error.status == 400
    assert decision.error.code == code
    assert fragment in decision.error.message
    body = decision.error.body()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"


# ----------------------------------------------------------------- header control


@pytest.mark.parametrize(
    ("control", "headers", "outcome"),
    [
        ({"enabled": False}, {"x-ensemble-models": "m1,m2"}, "passthrough"),
        ({"api_keys_env": "CLIENT_KEYS"}, {"x-ensemble-models": "m1,m2"}, 403),
        (
            {"api_keys_env": "CLIENT_KEYS"},
            {"x-ensemble-models": "m1,m2", "authorization": "Bearer k2"},
            "header",
        ),
        (
            {"api_keys_env": "CLIENT_KEYS"},
            {"x-ensemble-models": "m1,m2", "x-api-key": "k1"},
            "header",
        ),
        (
            {"api_keys_env": "CLIENT_KEYS"},
            {"x-ensemble-models": "m1,m2", "authorization": "Bearer k3"},
            403,
        ),
        (
            {"require_header": {"name": "X-Tier", "values": ["gold"]}},
            {"x-ensemble-models": "m1,m2", "x-tier": "gold"},
            "header",
        ),
        (
            {"require_header": {"name": "X-Tier", "values": ["gold"]}},
            {"x-ensemble-models": "m1,m2", "x-tier": "free"},
            403,
        ),
    ],
)
def test_header_control(control: dict[str, Any], headers: dict[str, str], outcome: Any) -> None:
    decision = run(policy_config(header_control=control), headers)
    if outcome == "passthrough":
        assert isinstance(decision, Passthrough)
    elif outcome == 403:
        assert isinstance(decision, Reject)
        assert decision.error.status == 403
        assert decision.error.code == "ensemble_headers_not_allowed"
    else:
        assert isinstance(decision, Reroute)
        assert decision.source == outcome


# -------------------------------------------------------------------------- rules


@pytest.mark.parametrize(
    ("headers", "body", "source", "profile"),
    [
        ({}, ask("hi", model="critical"), "rule:model", "critical"),
        ({}, ask("What dosage of ibuprofen is safe?"), "rule:medical", "critical"),
        ({}, ask("Tell me about DOSAGE forms"), "rule:medical", "critical"),
        ({}, ask("hi", max_tokens=4000), "rule:big", "cheap"),
        ({}, ask("hi", metadata={"tier": "gold"}), "rule:gold", "critical"),
        ({"x-team": "ml"}, ask("hi"), "rule:team", "cheap"),
        (
            {},
            {
                "messages": [
                    {"role": "system", "content": "You are a Legal aide."},
                    {"role": "user", "content": "hi"},
                ]
            },
            "rule:legal-system",
            "critical",
        ),
        # First match wins: medical before big.
        ({}, ask("diagnosis please", max_tokens=4000), "rule:medical", "critical"),
    ],
)
def test_rules(headers: dict[str, str], body: dict[str, Any], source: str, profile: str) -> None:
    decision = run(policy_config(rules=RULES), headers, body)
    assert isinstance(decision, Reroute)
    assert decision.source == source
    assert decision.spec.profile == profile


@pytest.mark.parametrize(
    "body",
    [
        ask("hi"),
        ask("a diagnostic tool"),
        ask("hi", max_tokens=1000),
        ask("hi", metadata={"tier": "silver"}),
        ask("hi", max_tokens="4000"),
    ],
)
def test_rules_that_do_not_match(body: dict[str, Any]) -> None:
    assert run(policy_config(rules=RULES), {}, body) == Passthrough()


def test_profile_spec_carries_its_deadline() -> None:
    decision = run(policy_config(rules=RULES), {}, ask("hi", model="critical"))
    assert decision.spec == EnsembleSpec(("m1", "m2", "m3"), "voting", 2, "critical", 9.0)


def test_body_is_requested_only_when_a_source_reads_it() -> None:
    view = RequestView(CHAT, {":method": "POST", ":path": CHAT})
    headers_only = make_config(URLS)
    assert isinstance(DecisionPolicy(headers_only).decide(view, body_pending=True), Passthrough)
    with_rules = policy_config(rules=RULES)
    assert isinstance(DecisionPolicy(with_rules).decide(view, body_pending=True), NeedBody)


@pytest.mark.parametrize(
    ("method", "path", "ensembled"),
    [
        ("POST", CHAT, True),
        ("POST", CHAT + "?api-version=1", True),
        ("GET", CHAT, False),
        ("GET", "/v1/models", False),
        ("GET", "/metrics", False),
        ("GET", "/openapi.json", False),
        ("POST", "/v1/completions", False),
        ("POST", "/v1/chat/completions/", False),
    ],
)
def test_only_a_chat_completion_post_can_be_ensembled(
    method: str, path: str, ensembled: bool
) -> None:
    """Ensemble headers elsewhere are not an ensemble: Envoy proxies or refuses the request
    as plain traffic (and the ensemble route carries only the chat completion POST)."""
    headers = {":method": method, ":path": path, "x-ensemble-enable": "true"}
    decision = DecisionPolicy(WITH_DEFAULTS).decide(RequestView(path, headers), body_pending=False)
    assert isinstance(decision, Reroute) is ensembled
    if not ensembled:
        assert decision == Passthrough("not a chat completion")


def test_any_profile_or_body_rule_means_the_body_is_read() -> None:
    assert needs_body(policy_config())  # profiles: a body's model may name one
    assert needs_body(policy_config(rules=RULES))
    assert not needs_body(make_config(URLS))


def test_invalid_json_body_is_the_clients_400() -> None:
    from ensemble_extproc.errors import ApiError

    with pytest.raises(ApiError) as caught:
        with_body(RequestView("/", {}), b"{nope")
    assert caught.value.status == 400
    assert caught.value.code == "invalid_json"


# ----------------------------------------------------------------------- adaptive


@pytest.mark.parametrize(
    ("headers", "body", "expected", "confidence"),
    [
        ({"x-vsr-selected-confidence": "0.2"}, ask("hi"), "adaptive", 0.2),
        ({"x-vsr-selected-confidence": "0.9"}, ask("hi"), "none", 0.9),
        # min(): the least confident signal decides.
        (
            {"x-vsr-selected-confidence": "0.9"},
            ask("Prove step by step that the integral of x^2 from 0 to 1 is 1/3, and explain why."),
            "adaptive",
            None,
        ),
        # Not a number / out of range: ignored (and counted), never an error.
        ({"x-vsr-selected-confidence": "high"}, ask("hi"), "none", None),
        ({"x-vsr-selected-confidence": "1.7"}, ask("hi"), "none", None),
    ],
)
def test_adaptive(
    headers: dict[str, str], body: dict[str, Any], expected: str, confidence: float | None
) -> None:
    decision = run(policy_config(adaptive=ADAPTIVE), headers, body)
    label = decision.source if isinstance(decision, Reroute) else "none"
    assert label == expected
    if confidence is not None:
        assert decision.confidence == pytest.approx(confidence)
    if "high" in headers.values() or "1.7" in headers.values():
        assert decision.ignored


def test_adaptive_respects_the_gate() -> None:
    decision = run(
        policy_config(adaptive=ADAPTIVE),
        {"x-vsr-selected-confidence": "0.1"},
        ask("hi"),
        admit=(False, "rate cap reached"),
    )
    assert decision == Passthrough("adaptive: rate cap reached", 0.1, ())


def test_header_signal_alone_needs_no_body() -> None:
    adaptive = {**ADAPTIVE, "signals": [{"type": "header", "headers": ["x-conf"]}]}
    config = compile_config(
        {
            "models": [{"name": "m1", "url": URLS["m1"]}],
            "profiles": {"p": {"models": ["m1"]}},
            "adaptive": {**adaptive, "profile": "p"},
        }
    )
    view = RequestView("/v1/chat/completions", {"x-conf": "0.1"})
    signals = build_signals(config.adaptive.signals)
    # Profiles exist, so a body might select one by model: the body is still needed.
    assert isinstance(
        decide(view, config, signals, lambda _: (True, ""), body_pending=True), NeedBody
    )


# --------------------------------------------------------------------- precedence


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        # enable: false beats a header request, a rule and adaptive.
        (
            {
                "x-ensemble-enable": "false",
                "x-ensemble-models": "m1,m2",
                "x-vsr-selected-confidence": "0.1",
            },
            ask("dosage", model="critical"),
            "none",
        ),
        # Header beats rules and adaptive.
        (
            {"x-ensemble-models": "m3,m4", "x-vsr-selected-confidence": "0.1"},
            ask("dosage", model="critical"),
            "header",
        ),
        # Model profile beats rules and adaptive.
        ({"x-vsr-selected-confidence": "0.1"}, ask("dosage", model="cheap"), "rule:model"),
        # A rule beats adaptive.
        ({"x-vsr-selected-confidence": "0.1"}, ask("dosage"), "rule:medical"),
        # Adaptive, when nothing else decides.
        ({"x-vsr-selected-confidence": "0.1"}, ask("hi"), "adaptive"),
        # Otherwise the default route.
        ({"x-vsr-selected-confidence": "0.9"}, ask("hi"), "none"),
    ],
)
def test_precedence(headers: dict[str, str], body: dict[str, Any], expected: str) -> None:
    decision = run(policy_config(rules=RULES, adaptive=ADAPTIVE), headers, body)
    label = decision.source if isinstance(decision, Reroute) else "none"
    assert label == expected


# -------------------------------------------------------------- config that fails


@pytest.mark.parametrize(
    ("extra", "key", "fragment"),
    [
        (
            {
                "rules": [
                    {
                        "name": "r",
                        "profile": "critical",
                        "match": {"last_user_message": {"regex": "("}},
                    }
                ]
            },
            "rules[0].match.last_user_message.regex",
            "invalid regular expression",
        ),
        (
            {
                "rules": [
                    {"name": "r", "profile": "critical", "match": {"bodyy.model": {"exact": "x"}}}
                ]
            },
            "rules[0].match.bodyy.model",
            "unknown field",
        ),
        (
            {"rules": [{"name": "r", "profile": "nope", "match": {"path": {"prefix": "/"}}}]},
            "rules[0].profile",
            "unknown profile 'nope'",
        ),
        (
            {"rules": [{"name": "r", "profile": "critical", "match": {"path": {"like": "/"}}}]},
            "rules[0].match.path.like",
            "unknown operator",
        ),
        ({"profiles": {"p": {"models": ["m1", "zz"]}}}, "profiles.p.models", "unknown model 'zz'"),
        ({"adaptive": {"enabled": True, "profile": "nope"}}, "adaptive.profile", "unknown profile"),
        (
            {"adaptive": {**ADAPTIVE, "signals": [{"type": "magic"}]}},
            "adaptive.signals[0].type",
            "invalid signal",
        ),
        (
            {"header_control": {"api_keys_env": "MISSING_KEYS"}},
            "header_control.api_keys_env",
            "MISSING_KEYS is not set",
        ),
    ],
)
def test_config_that_does_not_compile(extra: dict[str, Any], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        policy_config(**extra)
    assert caught.value.key == key
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("text", "hit"),
    [
        ("What DOSAGE?", True),
        ("dosage", True),
        ("a dosage_form", False),
        ("overdosage", False),
        ("dosages", False),
        ("(dosage)", True),
        ("", False),
        ("Dosage\nplease", True),
        ("high blood-pressure", True),
        ("blood pressure", False),
    ],
)
def test_keywords_match_whole_words(text: str, hit: bool) -> None:
    from ensemble_extproc.rules import keyword_test

    assert keyword_test(["dosage", "Blood-Pressure"])(text) is hit


def test_deeply_nested_json_is_the_clients_400() -> None:
    from ensemble_extproc.errors import ApiError

    with pytest.raises(ApiError) as caught:
        with_body(RequestView("/", {}), b"[" * 100_000)
    assert caught.value.status == 400


# A confidence header is the client's word unless the semantic router's processor set it.
KEYED = {"api_keys_env": "CLIENT_KEYS"}
ROUTER = {"extproc": {"address": "127.0.0.1:50051"}}


@pytest.mark.parametrize(
    ("extra", "headers", "expected"),
    [
        # No restriction on clients: their confidence counts, as their x-ensemble-* would.
        ({}, {}, "adaptive"),
        # Restricted: a client with a key may, one without may not.
        ({"header_control": KEYED}, {"authorization": "Bearer k1"}, "adaptive"),
        ({"header_control": KEYED}, {}, "none"),
        ({"header_control": KEYED}, {"authorization": "Bearer wrong"}, "none"),
        # A router before ours: Envoy removed clients' copies, what arrives is the router's.
        ({"header_control": KEYED, "semantic_router": ROUTER}, {}, "adaptive"),
    ],
)
def test_whose_confidence_header_counts(
    extra: dict[str, Any], headers: dict[str, str], expected: str
) -> None:
    adaptive = {**ADAPTIVE, "signals": [{"type": "header"}]}
    config = policy_config(adaptive=adaptive, **extra)
    decision = run(config, {**headers, "x-vsr-selected-confidence": "0.1"}, ask("hi"))
    label = decision.source if isinstance(decision, Reroute) else "none"
    assert label == expected
    if expected == "none":
        assert decision.ignored == ("header: set by a client that header_control does not allow",)
