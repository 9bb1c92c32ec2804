"""Config: our shape, the semantic-router ensemble shape, and errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ensemble_extproc.config import ConfigError, compile_config, load_config
from ensemble_extproc.extproc.decision import needs_body

ROOT = Path(__file__).resolve().parent.parent
MODEL = {"name": "a", "url": "http://127.0.0.1:9001/v1"}


def test_default_config_loads() -> None:
    config = load_config(ROOT / "config" / "default.yaml")
    assert config.default_model == "demo-default"
    assert all(endpoint.demo for endpoint in config.endpoints.values())
    assert config.listen.envoy.port == 10000
    assert set(config.ensemble.default_models) <= set(config.endpoints)


def test_semantic_router_shape() -> None:
    raw = {
        "bert_model": {"model_id": "x"},  # a semantic-router section: ignored
        "ensemble": {
            "enabled": True,
            "default_strategy": "voting",
            "default_min_responses": 2,
            "timeout_seconds": 30,
            "max_concurrent_requests": 10,
            "endpoint_mappings": {
                "model-a": "http://localhost:8001/v1/chat/completions",
                "model-b": "http://localhost:8002/v1",
                "model-c": "http://localhost:8003",
            },
        },
    }
    config = compile_config(raw)
    urls = {name: e.url for name, e in config.endpoints.items()}
    assert urls == {
        "model-a": "http://localhost:8001/v1/chat/completions",
        "model-b": "http://localhost:8002/v1/chat/completions",
        "model-c": "http://localhost:8003/v1/chat/completions",
    }
    assert config.default_model == "model-a"
    assert config.ensemble.timeout_seconds == 30.0
    assert config.ensemble.max_concurrent_requests == 10
    assert config.ensemble.default_min_responses == 2


def test_api_key_comes_from_the_environment() -> None:
    raw = {"models": [{**MODEL, "api_key_env": "KEY_A"}]}
    config = compile_config(raw, environ={"KEY_A": "sk-test"})
    assert config.endpoints["a"].api_key == "sk-test"
    with pytest.raises(ConfigError, match=r"models\[0\]\.api_key_env.*KEY_A is not set"):
        compile_config(raw, environ={})


@pytest.mark.parametrize(
    ("raw", "key", "fragment"),
    [
        ([], "<file>", "must be a YAML mapping"),
        ({}, "models", "no model endpoints"),
        ({"modles": []}, "modles", "allowed keys here"),
        ({"models": [{"url": "http://x/v1"}]}, "models[0].name", "is required"),
        ({"models": [{"name": "a", "url": "ftp://x"}]}, "models[0].url", "http(s) URL"),
        ({"models": [MODEL, MODEL]}, "models[1].name", "defined twice"),
        ({"models": [{**MODEL, "weight": 0}]}, "models[0].weight", "must be > 0"),
        ({"models": [{**MODEL, "wieght": 2}]}, "models[0].wieght", "unknown key"),
        ({"models": [MODEL], "default_model": "b"}, "default_model", "unknown model 'b'"),
        (
            {"models": [MODEL], "ensemble": {"default_strategy": "best"}},
            "ensemble.default_strategy",
            "one of: voting, weighted, first_success, score_averaging",
        ),
        (
            {"models": [MODEL], "ensemble": {"timeout_seconds": "30s"}},
            "ensemble.timeout_seconds",
            "must be a number",
        ),
        (
            {"models": [MODEL], "ensemble": {"timeout_seconds": 5, "model_timeout_seconds": 9}},
            "ensemble.model_timeout_seconds",
            "longer than timeout_seconds",
        ),
        (
            {"models": [MODEL], "ensemble": {"max_concurrent_requests": 0}},
            "ensemble.max_concurrent_requests",
            "must be > 0",
        ),
        (
            {"models": [MODEL], "ensemble": {"default_min_responses": True}},
            "ensemble.default_min_responses",
            "must be an integer",
        ),
        (
            {"models": [MODEL], "ensemble": {"default_models": ["a", "z"]}},
            "ensemble.default_models",
            "unknown model 'z'",
        ),
        ({"models": [MODEL], "listen": {"envoy": "localhost"}}, "listen.envoy", "host:port"),
        ({"models": [MODEL], "listen": {"envoy": "h:70000"}}, "listen.envoy", "host:port"),
        (
            {"demo": {"models": [{"name": "d", "port": 0}]}},
            "demo.models[0].port",
            "needs a fixed port",
        ),
    ],
)
def test_errors_name_the_key(raw: Any, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_config(raw, environ={})
    assert caught.value.key == key
    assert fragment in str(caught.value)


def test_cli_reports_invalid_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ensemble_extproc.cli import main

    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  - name: a\n    url: http://127.0.0.1:1/v1\n    weigth: 2\n")
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "models[0].weigth" in err
    assert "allowed keys here" in err


def test_policy_example_config_compiles() -> None:
    config = load_config(ROOT / "config" / "examples" / "policy.yaml")
    assert set(config.profiles) == {"critical", "quick"}
    assert [rule.name for rule in config.rules] == ["high-stakes", "gold-tier", "long-answers"]
    assert config.adaptive.enabled
    assert needs_body(config)
