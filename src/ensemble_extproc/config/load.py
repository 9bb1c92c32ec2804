"""Compile a YAML config file (ours, or the semantic-router ensemble shape) into ``Config``."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..demo.models import DemoModel, parse_demo_models
from ..errors import ConfigError
from ..strategies import STRATEGIES, StrategySettings
from .model import Address, Config, Endpoint, EnsembleSettings, Listeners
from .reader import Section, type_name

log = logging.getLogger(__name__)

TOP_KEYS = frozenset({"models", "default_model", "ensemble", "listen", "demo"})
MODEL_KEYS = frozenset({"name", "url", "upstream_model", "weight", "api_key_env", "accuracy"})
STRATEGY_KEYS = {
    "weighted": frozenset({"use_confidence", "alternatives"}),
    "first_success": frozenset({"hedge_delay_ms"}),
    "score_averaging": frozenset({"numeric"}),
    "reranking": frozenset({"judge_model"}),
    "fusion": frozenset({"aggregator_model"}),
    "cascade": frozenset({"order", "confidence_threshold", "agreement", "escalation"}),
}
ENSEMBLE_KEYS = frozenset(
    {
        "enabled",
        "default_strategy",
        "default_min_responses",
        "default_models",
        "timeout_seconds",
        "model_timeout_seconds",
        "max_concurrent_requests",
        "max_models_per_request",
        "max_body_bytes",
        "max_response_bytes",
        "endpoint_mappings",
        "similarity_threshold",
        *STRATEGY_KEYS,
    }
)
LISTEN_KEYS = frozenset({"envoy", "envoy_admin", "extproc", "upstream"})


def load_config(path: str | Path) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError("<file>", f"cannot read {path}: {exc.strerror}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("<file>", f"{path} is not valid YAML: {exc}") from exc
    return compile_config(raw)


def compile_config(raw: object, environ: Mapping[str, str] | None = None) -> Config:
    environ = os.environ if environ is None else environ
    if not isinstance(raw, Mapping):
        raise ConfigError("<file>", f"must be a YAML mapping, got {type_name(raw)}")
    top = Section(_drop_foreign_keys(raw), "", TOP_KEYS)
    ensemble = Section(top.raw.get("ensemble"), "ensemble", ENSEMBLE_KEYS)
    demo_models = _demo_models(top)
    endpoints = _endpoints(top, ensemble, demo_models, environ)
    if not endpoints:
        raise ConfigError("models", "no model endpoints configured", "add at least one model")
    default_model = top.get("default_model", str, next(iter(endpoints)))
    if default_model not in endpoints:
        raise ConfigError("default_model", f"unknown model {default_model!r}", _known(endpoints))
    return Config(
        endpoints=endpoints,
        default_model=default_model,
        ensemble=_ensemble_settings(ensemble, endpoints),
        listen=_listeners(Section(top.raw.get("listen"), "listen", LISTEN_KEYS)),
        demo_models=demo_models,
    )


def _drop_foreign_keys(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """A semantic-router config carries many sections of its own: keep only ours."""
    ensemble = raw.get("ensemble")
    if not (isinstance(ensemble, Mapping) and "endpoint_mappings" in ensemble):
        return raw
    foreign = sorted(str(key) for key in raw if key not in TOP_KEYS)
    if foreign:
        log.info("semantic-router config: ignoring sections %s", ", ".join(foreign))
    return {key: value for key, value in raw.items() if key in TOP_KEYS}


def _known(endpoints: Mapping[str, Endpoint]) -> str:
    return "known models: " + ", ".join(endpoints)


def chat_completions_url(url: str, key: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"must be an http(s) URL with a host, got {url!r}")
    path = parts.path.rstrip("/")
    if path.endswith("/chat/completions"):
        return url
    if path.endswith("/v1"):
        return url.rstrip("/") + "/chat/completions"
    return url.rstrip("/") + "/v1/chat/completions"


def _endpoints(
    top: Section,
    ensemble: Section,
    demo_models: tuple[DemoModel, ...],
    environ: Mapping[str, str],
) -> dict[str, Endpoint]:
    endpoints: dict[str, Endpoint] = {}

    def add(endpoint: Endpoint, key: str) -> None:
        if endpoint.name in endpoints:
            raise ConfigError(key, f"model {endpoint.name!r} is defined twice", "rename one")
        endpoints[endpoint.name] = endpoint

    for i, demo in enumerate(demo_models):
        key = f"demo.models[{i}]"
        if demo.port == 0:
            raise ConfigError(f"{key}.port", "a demo model used as an endpoint needs a fixed port")
        url = f"http://127.0.0.1:{demo.port}/v1/chat/completions"
        add(Endpoint(name=demo.name, url=url, upstream_model=demo.name, demo=True), key)

    models = top.raw.get("models") or []
    if not isinstance(models, list):
        raise ConfigError("models", f"must be a list, got {type_name(models)}")
    for i, item in enumerate(models):
        add(_endpoint(Section(item, f"models[{i}]", MODEL_KEYS), environ), f"models[{i}].name")

    mappings = ensemble.raw.get("endpoint_mappings") or {}
    if not isinstance(mappings, Mapping):
        raise ConfigError("ensemble.endpoint_mappings", "must be a mapping of model name to URL")
    for name, url in mappings.items():
        key = f"ensemble.endpoint_mappings.{name}"
        if not isinstance(url, str):
            raise ConfigError(key, f"must be a URL string, got {type_name(url)}")
        add(Endpoint(str(name), chat_completions_url(url, key), str(name)), key)
    return endpoints


def _endpoint(section: Section, environ: Mapping[str, str]) -> Endpoint:
    name = section.require("name", str)
    if not name or "," in name or name != name.strip():
        raise ConfigError(
            section.key("name"),
            f"{name!r} is not a usable model name",
            "use a non-empty name without commas or surrounding spaces",
        )
    api_key = None
    api_key_env = section.get("api_key_env", str, "")
    if api_key_env:
        api_key = environ.get(api_key_env)
        if not api_key:
            raise ConfigError(
                section.key("api_key_env"),
                f"environment variable {api_key_env} is not set",
                "export it before start-up, or remove api_key_env",
            )
    accuracy = section.get("accuracy", float, -1.0)
    if section.has("accuracy") and not 0 < accuracy < 1:
        raise ConfigError(section.key("accuracy"), f"must be between 0 and 1, got {accuracy}")
    return Endpoint(
        name=name,
        url=chat_completions_url(section.require("url", str), section.key("url")),
        upstream_model=section.get("upstream_model", str, name),
        weight=section.positive("weight", float, 1.0),
        api_key=api_key,
        accuracy=accuracy if section.has("accuracy") else None,
    )


def _ensemble_settings(section: Section, endpoints: Mapping[str, Endpoint]) -> EnsembleSettings:
    defaults = EnsembleSettings()
    strategy = section.get("default_strategy", str, defaults.default_strategy)
    if strategy not in STRATEGIES:
        raise ConfigError(
            "ensemble.default_strategy",
            f"unknown strategy {strategy!r}",
            "one of: " + ", ".join(STRATEGIES),
        )
    timeout = section.positive("timeout_seconds", float, defaults.timeout_seconds)
    model_timeout = section.positive("model_timeout_seconds", float, timeout)
    if model_timeout > timeout:
        raise ConfigError(
            "ensemble.model_timeout_seconds",
            f"{model_timeout} is longer than timeout_seconds {timeout}",
            "a model call cannot outlive its ensemble; lower it",
        )
    max_models = section.positive("max_models_per_request", int, defaults.max_models_per_request)
    default_models = _default_models(section, endpoints, max_models)
    min_responses = section.positive("default_min_responses", int, defaults.default_min_responses)
    strategy_settings = _strategy_settings(section, endpoints)
    missing = STRATEGIES[strategy].missing_setting(strategy_settings)
    if missing is not None:
        raise ConfigError(
            "ensemble.default_strategy",
            f"{strategy} needs {missing}",
            f"set {missing}, or choose another default strategy",
        )
    return EnsembleSettings(
        enabled=section.get("enabled", bool, True),
        default_strategy=strategy,
        default_min_responses=min_responses,
        default_models=default_models,
        timeout_seconds=timeout,
        model_timeout_seconds=model_timeout,
        max_concurrent_requests=section.positive(
            "max_concurrent_requests", int, defaults.max_concurrent_requests
        ),
        max_models_per_request=max_models,
        max_body_bytes=section.positive("max_body_bytes", int, defaults.max_body_bytes),
        max_response_bytes=section.positive("max_response_bytes", int, defaults.max_response_bytes),
        strategy=strategy_settings,
    )


def _model_name(section: Section, name: str, endpoints: Mapping[str, Endpoint]) -> str | None:
    value = section.get(name, str, "")
    if value and value not in endpoints:
        raise ConfigError(section.key(name), f"unknown model {value!r}", _known(endpoints))
    return value or None


def _choice(section: Section, name: str, allowed: tuple[str, ...]) -> str:
    value = section.get(name, str, allowed[0])
    if value not in allowed:
        raise ConfigError(
            section.key(name), f"unknown value {value!r}", "one of: " + ", ".join(allowed)
        )
    return value


def _fraction(section: Section, name: str, default: float) -> float:
    value = section.get(name, float, default)
    if not 0 < value <= 1:
        raise ConfigError(section.key(name), f"must be in (0, 1], got {value}")
    return value


def _strategy_settings(ensemble: Section, endpoints: Mapping[str, Endpoint]) -> StrategySettings:
    def block(name: str) -> Section:
        return Section(ensemble.raw.get(name), f"ensemble.{name}", STRATEGY_KEYS[name])

    first_success, cascade = block("first_success"), block("cascade")
    hedge_ms = first_success.get("hedge_delay_ms", float, 0.0)
    if hedge_ms < 0:
        raise ConfigError(first_success.key("hedge_delay_ms"), f"must be >= 0, got {hedge_ms}")
    order = tuple(str(m) for m in cascade.get("order", list, []))
    for model in order:
        if model not in endpoints:
            raise ConfigError(cascade.key("order"), f"unknown model {model!r}", _known(endpoints))
    return StrategySettings(
        similarity_threshold=_fraction(ensemble, "similarity_threshold", 0.9),
        weighted_use_confidence=block("weighted").get("use_confidence", bool, False),
        weighted_alternatives=block("weighted").positive("alternatives", int, 1),
        hedge_delay_seconds=hedge_ms / 1000 if first_success.has("hedge_delay_ms") else None,
        numeric_aggregate=_choice(block("score_averaging"), "numeric", ("none", "mean", "median")),
        judge_model=_model_name(block("reranking"), "judge_model", endpoints),
        aggregator_model=_model_name(block("fusion"), "aggregator_model", endpoints),
        cascade_order=order,
        cascade_confidence=_fraction(cascade, "confidence_threshold", 0.8),
        cascade_agreement=cascade.positive("agreement", int, 2),
        cascade_escalation=_choice(cascade, "escalation", ("next", "ensemble")),
    )


def _default_models(
    section: Section, endpoints: Mapping[str, Endpoint], max_models: int
) -> tuple[str, ...]:
    key = "ensemble.default_models"
    raw = section.get("default_models", list, [])
    names = tuple(str(name) for name in raw)
    for name in names:
        if name not in endpoints:
            raise ConfigError(key, f"unknown model {name!r}", _known(endpoints))
    if len(set(names)) != len(names):
        raise ConfigError(key, "lists a model twice", "list each model once")
    if len(names) > max_models:
        raise ConfigError(
            key,
            f"has {len(names)} models, more than max_models_per_request {max_models}",
            "raise ensemble.max_models_per_request or list fewer",
        )
    return names


def _address(section: Section, name: str, default: Address) -> Address:
    value = section.get(name, str, "")
    if not value:
        return default
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(section.key(name), f"must be host:port, got {value!r}")
    return Address(host, int(port))


def _listeners(section: Section) -> Listeners:
    defaults = Listeners()
    return Listeners(
        envoy=_address(section, "envoy", defaults.envoy),
        envoy_admin=_address(section, "envoy_admin", defaults.envoy_admin),
        extproc=_address(section, "extproc", defaults.extproc),
        upstream=_address(section, "upstream", defaults.upstream),
    )


def _demo_models(top: Section) -> tuple[DemoModel, ...]:
    demo = Section(top.raw.get("demo"), "demo", frozenset({"models"}))
    return parse_demo_models(demo.raw.get("models") or [], "demo.models")
