"""Config: our shape, the semantic-router ensemble shape, and errors that name the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_extproc.config import ConfigError, compile_config, load_config
from ensemble_extproc.config.load import TOP_KEYS
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


@pytest.mark.parametrize(
    ("path", "said"),
    [
        ("config/default.yaml", ["asked only for chat completions that carry one of"]),
        (
            "config/examples/policy.yaml",
            [
                "reads the body of every chat completion",
                "  - profiles: ",
                "  - rules[0] (high-stakes): matches on last_user_message",
                "  - adaptive.signals[1]: difficulty",
            ],
        ),
    ],
)
def test_check_config_says_which_requests_the_processor_sees(
    path: str, said: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from ensemble_extproc.cli import main

    assert main(["check-config", "--config", str(ROOT / path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{ROOT / path}: ok (")
    for part in said:
        assert part in out, out


def test_policy_example_config_compiles() -> None:
    config = load_config(ROOT / "config" / "examples" / "policy.yaml")
    assert set(config.profiles) == {"critical", "quick"}
    assert [rule.name for rule in config.rules] == ["high-stakes", "gold-tier", "long-answers"]
    assert config.adaptive.enabled
    assert needs_body(config)


@pytest.mark.parametrize(
    ("raw", "key", "fragment"),
    [
        # Inside a mapping of named entries, the key names the entry.
        (
            {"models": [MODEL], "profiles": {"p": {"models": ["a", 3]}}},
            "profiles.p.models[1]",
            "got an integer (3)",
        ),
        (
            {"ensemble": {"endpoint_mappings": {"m": "ftp://x"}}},
            "ensemble.endpoint_mappings.m",
            "invalid URL",
        ),
        ({"models": [{**MODEL, "wieght": 2}]}, "models[0].wieght", "did you mean 'weight'?"),
        (
            {"models": [MODEL], "ensemble": {"retries": True}},
            "ensemble.retries",
            "must be a mapping or false, got true",
        ),
        (
            {"models": [MODEL], "ensemble": {"timeout_seconds": None}},
            "ensemble.timeout_seconds",
            "leave it out for the default",
        ),
        ({"models": [MODEL], "adaptive": None}, "adaptive", "must be a mapping, got null"),
        ({"models": [MODEL], "logging": {"format": "yml"}}, "logging.format", "one of: json, text"),
        (
            {"models": [MODEL], "envoy": {"message_timeout_ms": float("inf")}},
            "envoy.message_timeout_ms",
            "finite",
        ),
        (
            {"models": [MODEL], "ensemble": {"similarity_threshold": 0}},
            "ensemble.similarity_threshold",
            "must be in (0, 1], got 0",
        ),
        (
            {"models": [{**MODEL, "api_key_env": "MY-KEY"}]},
            "models[0].api_key_env",
            "invalid environment variable name 'MY-KEY'",
        ),
        (
            {
                "models": [MODEL],
                "adaptive": {"signals": [{"type": "difficulty", "weights": {"maths": 1}}]},
            },
            "adaptive.signals[0].weights.maths",
            "did you mean 'math'?",
        ),
        (
            {"models": [MODEL], "rules": [{"name": "r", "profile": "p", 1: {}}]},
            "rules[0]",
            "keys must be strings, got 1",
        ),
    ],
)
def test_declared_checks_name_the_key_and_the_fix(raw: Any, key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_config(raw, environ={})
    assert caught.value.key == key
    assert fragment in str(caught.value)


def test_defaults_are_declared_once() -> None:
    """An empty section compiles to the declaration's defaults, which the runtime reads."""
    from ensemble_extproc.config.model import EnsembleSettings, EnvoySettings, RetryPolicy

    config = compile_config({"models": [MODEL]}, environ={})
    assert config.ensemble == EnsembleSettings()
    assert config.envoy == EnvoySettings()
    assert config.ensemble.retry.attempts == 2
    assert config.endpoints["a"].retry is None  # the ensemble's retries apply
    assert config.endpoints["a"].upstream_model == "a"
    off = compile_config(
        {"models": [{**MODEL, "retries": False}], "ensemble": {"circuit_breaker": False}}
    )
    assert off.endpoints["a"].retry == RetryPolicy(attempts=1)
    assert off.ensemble.breaker is None


def test_reading_the_config_never_imports_the_demo_server() -> None:
    import subprocess
    import sys

    code = (
        "import sys, ensemble_extproc.config; prefixes = ('aiohttp', 'ensemble_extproc.demo'); "
        "print(sorted(m for m in sys.modules if m.startswith(prefixes)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


YAML_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats()
    | st.text(max_size=12)
    | st.dates(),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8) | st.integers(0, 3), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@settings(max_examples=300, deadline=None)
@given(st.data(), st.sampled_from(["default.yaml", "examples/policy.yaml"]))
def test_any_value_anywhere_is_a_config_error_naming_a_key(data: Any, name: str) -> None:
    """Whatever a file holds, compiling it succeeds or raises ConfigError; never a crash."""
    raw = yaml.safe_load((ROOT / "config" / name).read_text())
    *parent, last = data.draw(st.sampled_from(_paths(raw)[1:]))
    target = raw
    for step in parent:
        target = target[step]
    if data.draw(st.booleans()) and isinstance(target, dict):
        last = data.draw(st.text(max_size=8))  # a new key beside an existing one
    target[last] = data.draw(YAML_VALUES)
    error = compile_error(raw)
    if error is not None:
        heads = {str(key) or "''" for key in raw} | TOP_KEYS | {"<file>"}
        assert any(error.key == h or error.key.startswith((f"{h}.", f"{h}[")) for h in heads)


def compile_error(raw: Any) -> ConfigError | None:
    try:
        compile_config(raw, environ={})
    except ConfigError as error:
        return error
    return None
