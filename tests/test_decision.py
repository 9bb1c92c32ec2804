"""Table tests of the header-driven decision (pure: headers + config -> decision)."""

from __future__ import annotations

import pytest

from ensemble_extproc.config import compile_config
from ensemble_extproc.extproc import Passthrough, Reject, Reroute, decide
from ensemble_extproc.spec import EnsembleSpec

from helpers import make_config

URLS = {name: f"http://127.0.0.1:9/{name}" for name in ("m1", "m2", "m3", "m4")}
CONFIG = make_config(URLS, ensemble={"max_models_per_request": 3, "default_min_responses": 2})
WITH_DEFAULTS = make_config(
    URLS, ensemble={"default_models": ["m1", "m2"], "default_strategy": "first_success"}
)


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
def test_reroute(headers: dict[str, str], spec: EnsembleSpec) -> None:
    assert decide(headers, CONFIG) == Reroute(spec)


def test_enable_alone_uses_the_configured_defaults() -> None:
    decision = decide({"x-ensemble-enable": "yes"}, WITH_DEFAULTS)
    assert decision == Reroute(EnsembleSpec(("m1", "m2"), "first_success", 1))


@pytest.mark.parametrize(
    ("headers", "strip"),
    [
        ({}, False),
        ({"content-type": "application/json"}, False),
        ({"x-ensemble-enable": "false", "x-ensemble-models": "m1,m2"}, False),
        ({"x-ensemble-enable": "0", "x-ensemble-models": "nope"}, False),
        ({"x-ensemble-route": "ensemble"}, True),
        ({"x-ensemble-enable": "false", "x-ensemble-route": "ensemble"}, True),
    ],
)
def test_passthrough(headers: dict[str, str], strip: bool) -> None:
    decision = decide(headers, CONFIG)
    assert isinstance(decision, Passthrough)
    assert decision.strip_route_header is strip


def test_strategy_without_its_required_config_is_a_400_naming_the_key() -> None:
    decision = decide({"x-ensemble-models": "m1,m2", "x-ensemble-strategy": "reranking"}, CONFIG)
    assert isinstance(decision, Reject)
    assert decision.error.code == "strategy_not_configured"
    assert "ensemble.reranking.judge_model" in decision.error.message
    configured = make_config(URLS, ensemble={"reranking": {"judge_model": "m4"}})
    decision = decide(
        {"x-ensemble-models": "m1,m2", "x-ensemble-strategy": "reranking"}, configured
    )
    assert isinstance(decision, Reroute)


def test_disabled_config_never_reroutes() -> None:
    config = compile_config(
        {"ensemble": {"enabled": False, "endpoint_mappings": {"a": "http://127.0.0.1:9/v1"}}}
    )
    decision = decide({"x-ensemble-models": "a", "x-ensemble-route": "ensemble"}, config)
    assert decision == Passthrough("disabled", True)


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
            {"x-ensemble-models": "m1,m2", "x-ensemble-min-responses": "two"},
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
    decision = decide(headers, CONFIG)
    assert isinstance(decision, Reject)
    assert decision.error.status == 400
    assert decision.error.code == code
    assert fragment in decision.error.message
    body = decision.error.body()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
