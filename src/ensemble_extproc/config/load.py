"""Compile a YAML config file (ours, or the semantic-router ensemble shape) into ``Config``.

``config.model`` declares every key; this step keeps only what spans sections: references
between models, profiles and rules, secrets from the environment, the semantic router's
shape, and values derived from others.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import yaml

from ..errors import ConfigError
from ..rules import Rule, compile_condition
from ..spec import EnsembleSpec, unpriced_models
from ..strategies import STRATEGIES
from .decode import decode
from .demo import check_unique
from .model import (
    DEFAULT_SECRET_ENV,
    AdaptiveSettings,
    Config,
    ConfigFile,
    Endpoint,
    EnsembleSettings,
    Model,
    Profile,
    RuleConfig,
    TracingSettings,
)

log = logging.getLogger(__name__)

TOP_KEYS = frozenset(f.encode_name for f in msgspec.structs.fields(ConfigFile))


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
        raise ConfigError("<file>", f"must be a YAML mapping, got {type(raw).__name__}")
    file = decode(_drop_foreign_keys(raw), ConfigFile)
    dialect = file.semantic_router.dialect
    check_unique(file.demo.models, "demo.models")
    endpoints = _endpoints(file, environ)
    if not endpoints:
        raise ConfigError("models", "no model endpoints configured", "add at least one model")
    default_model = file.default_model or next(iter(endpoints))
    if default_model not in endpoints:
        raise ConfigError("default_model", f"unknown model {default_model!r}", _known(endpoints))
    _check_ensemble(file.ensemble, endpoints)
    envoy = file.envoy
    if envoy.stream_idle_timeout_seconds <= file.ensemble.timeout_seconds:
        raise ConfigError(
            "envoy.stream_idle_timeout_seconds",
            f"{envoy.stream_idle_timeout_seconds:g} s would cut non-streamed ensembles, which "
            f"send nothing until their answer (ensemble.timeout_seconds is "
            f"{file.ensemble.timeout_seconds:g} s)",
            "raise it above ensemble.timeout_seconds",
        )
    profiles = {
        name: _profile(name, profile, endpoints, file.ensemble)
        for name, profile in file.profiles.items()
    }
    _check_adaptive(file.adaptive, profiles)
    return Config(
        endpoints=endpoints,
        default_model=default_model,
        ensemble=file.ensemble,
        listen=file.listen,
        demo_models=file.demo.models,
        profiles=profiles,
        rules=_rules(file.rules, profiles),
        header_control=file.header_control,
        client_api_keys=_client_api_keys(file.header_control.api_keys_env, environ),
        adaptive=file.adaptive,
        security=file.security,
        internal_secret=_internal_secret(file, environ),
        metadata_namespace=file.metadata_namespace,
        envoy=envoy,
        logging=file.logging,
        semantic_router=file.semantic_router,
        seed_dialect=_seed_shape(raw) if dialect == "auto" else dialect,
        tracing=_tracing(file.tracing, environ),
    )


def _seed_shape(raw: Mapping[str, Any]) -> bool:
    """A file of the semantic router's ensemble service: its models in
    ``ensemble.endpoint_mappings``."""
    ensemble = raw.get("ensemble")
    return isinstance(ensemble, Mapping) and "endpoint_mappings" in ensemble


def _drop_foreign_keys(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    """A semantic-router config carries many sections of its own: keep only ours."""
    if not _seed_shape(raw):
        return raw
    foreign = sorted(str(key) for key in raw if key not in TOP_KEYS)
    if foreign:
        log.info("semantic-router config: ignoring sections %s", ", ".join(foreign))
    return {key: value for key, value in raw.items() if key in TOP_KEYS}


def _known(endpoints: Mapping[str, Endpoint]) -> str:
    return "known models: " + ", ".join(endpoints)


def _check_model(name: str | None, key: str, endpoints: Mapping[str, Endpoint]) -> None:
    if name is not None and name not in endpoints:
        raise ConfigError(key, f"unknown model {name!r}", _known(endpoints))


def _check_strategy(name: str, key: str, settings: EnsembleSettings, fix: str = "") -> None:
    if name not in STRATEGIES:
        raise ConfigError(key, f"unknown strategy {name!r}", "one of: " + ", ".join(STRATEGIES))
    missing = STRATEGIES[name].missing_setting(settings)
    if missing is not None:
        raise ConfigError(key, f"{name} needs {missing}", f"set {missing}{fix}")


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


def _endpoints(file: ConfigFile, environ: Mapping[str, str]) -> dict[str, Endpoint]:
    """Demo models, then ``models``, then the semantic router's ``endpoint_mappings``."""
    endpoints: dict[str, Endpoint] = {}
    found: list[tuple[Endpoint, str]] = []
    for i, demo in enumerate(file.demo.models):
        key = f"demo.models[{i}]"
        if demo.port == 0:
            raise ConfigError(f"{key}.port", "a demo model used as an endpoint needs a fixed port")
        url = f"http://127.0.0.1:{demo.port}/v1/chat/completions"
        endpoint = Endpoint(
            demo.name,
            url,
            demo.name,
            demo=True,
            price=demo.price,
            continuation=demo.continuation,
        )
        found.append((endpoint, key))
    for i, model in enumerate(file.models):
        found.append((_endpoint(model, f"models[{i}]", environ), f"models[{i}].name"))
    for name, url in file.ensemble.endpoint_mappings.items():
        key = f"ensemble.endpoint_mappings.{name}"
        found.append((Endpoint(name, chat_completions_url(url, key), name), key))
    for endpoint, key in found:
        if endpoint.name in endpoints:
            raise ConfigError(key, f"model {endpoint.name!r} is defined twice", "rename one")
        endpoints[endpoint.name] = endpoint
    return endpoints


def _endpoint(model: Model, key: str, environ: Mapping[str, str]) -> Endpoint:
    api_key = None
    if model.api_key_env is not None:
        if model.forward_client_auth:
            raise ConfigError(
                f"{key}.forward_client_auth",
                "cannot be combined with api_key_env",
                "choose one credential",
            )
        api_key = environ.get(model.api_key_env)
        if not api_key:
            raise ConfigError(
                f"{key}.api_key_env",
                f"environment variable {model.api_key_env} is not set",
                "export it before start-up, or remove api_key_env",
            )
    url = chat_completions_url(model.url, f"{key}.url")
    fields = msgspec.structs.asdict(model)
    return Endpoint(
        **fields
        | {
            "url": url,
            "upstream_model": model.upstream_model or model.name,
            "ca_file": _ca_file(model.ca_file, url, f"{key}.ca_file"),
            "api_key": api_key,
        }
    )


def _ca_file(value: str | None, url: str, key: str) -> str | None:
    """An absolute path to a PEM file of CAs that loads (checked now, not at the first call)."""
    if not value:
        return None
    if not url.startswith("https:"):
        raise ConfigError(key, "applies to https URLs only", "remove it, or use an https URL")
    path = os.path.abspath(value)
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise ConfigError(key, f"no such file: {path}", "give the path of a PEM CA file") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            key, f"{path} is not a readable PEM file of CA certificates ({exc})"
        ) from None
    return path


def _check_ensemble(settings: EnsembleSettings, endpoints: Mapping[str, Endpoint]) -> None:
    _check_strategy(
        settings.default_strategy,
        "ensemble.default_strategy",
        settings,
        ", or choose another default strategy",
    )
    model_timeout = settings.model_timeout_seconds
    if model_timeout is not None and model_timeout > settings.timeout_seconds:
        raise ConfigError(
            "ensemble.model_timeout_seconds",
            f"{model_timeout:g} is longer than timeout_seconds {settings.timeout_seconds:g}",
            "a model call cannot outlive its ensemble; lower it",
        )
    key, names = "ensemble.default_models", settings.default_models
    for name in names:
        _check_model(name, key, endpoints)
    if len(set(names)) != len(names):
        raise ConfigError(key, "lists a model twice", "list each model once")
    if len(names) > settings.max_models_per_request:
        raise ConfigError(
            key,
            f"has {len(names)} models, more than max_models_per_request "
            f"{settings.max_models_per_request}",
            "raise ensemble.max_models_per_request or list fewer",
        )
    _check_model(settings.reranking.judge_model, "ensemble.reranking.judge_model", endpoints)
    _check_model(settings.fusion.aggregator_model, "ensemble.fusion.aggregator_model", endpoints)
    for name in settings.cascade.order:
        _check_model(name, "ensemble.cascade.order", endpoints)
    trust = settings.trust
    if trust.peer_max_age_seconds <= trust.snapshot_interval_seconds:
        raise ConfigError(
            "ensemble.trust.peer_max_age_seconds",
            f"{trust.peer_max_age_seconds:g} is not longer than snapshot_interval_seconds "
            f"{trust.snapshot_interval_seconds:g}",
            "peers write a snapshot every interval: allow several intervals",
        )
    if settings.weighted.weights == "learned" and not trust.enabled:
        raise ConfigError(
            "ensemble.weighted.weights",
            "is learned, but nothing is learned: ensemble.trust.enabled is false",
            "set ensemble.trust.enabled: true, or weights: configured",
        )


def _profile(
    name: str, profile: Profile, endpoints: Mapping[str, Endpoint], settings: EnsembleSettings
) -> EnsembleSpec:
    key = f"profiles.{name}"
    if name in endpoints:
        raise ConfigError(
            key,
            f"profile {name!r} has the name of a model",
            "a request's model field must name one or the other: rename it",
        )
    for model in profile.models:
        _check_model(model, f"{key}.models", endpoints)
    strategy = profile.strategy or settings.default_strategy
    _check_strategy(strategy, f"{key}.strategy", settings)
    count = len(profile.models)
    natural = STRATEGIES[strategy].natural_min_responses
    min_responses = profile.min_responses or min(natural or settings.default_min_responses, count)
    if min_responses > count:
        raise ConfigError(
            f"{key}.min_responses", f"{min_responses} is more than the {count} model(s)"
        )
    timeout = profile.timeout_seconds
    if timeout is not None and timeout > settings.timeout_seconds:
        raise ConfigError(
            f"{key}.timeout_seconds",
            f"{timeout:g} is longer than ensemble.timeout_seconds",
            "raise ensemble.timeout_seconds or lower this",
        )
    spec = EnsembleSpec(profile.models, strategy, min_responses, name, timeout)
    if profile.max_cost_usd is not None:
        unpriced = unpriced_models(spec, endpoints, settings)
        if unpriced:
            raise ConfigError(
                f"{key}.max_cost_usd",
                f"a cost cap needs the price of every model it calls; {', '.join(unpriced)} "
                "has none",
                "declare models[].price for them, or remove the cap",
            )
        spec = replace(spec, max_cost_usd=profile.max_cost_usd)
    return spec


def _known_profile(name: str, key: str, profiles: Mapping[str, EnsembleSpec]) -> None:
    if name not in profiles:
        raise ConfigError(
            key, f"unknown profile {name!r}", "known profiles: " + (", ".join(profiles) or "none")
        )


def _rules(
    configs: tuple[RuleConfig, ...], profiles: Mapping[str, EnsembleSpec]
) -> tuple[Rule, ...]:
    rules: dict[str, Rule] = {}
    for i, rule in enumerate(configs):
        key = f"rules[{i}]"
        if rule.name in rules:
            raise ConfigError(f"{key}.name", f"rule {rule.name!r} is defined twice")
        _known_profile(rule.profile, f"{key}.profile", profiles)
        conditions = tuple(
            compile_condition(str(field), spec, f"{key}.match.{field}")
            for field, spec in rule.match.items()
        )
        rules[rule.name] = Rule(rule.name, rule.profile, conditions)
    return tuple(rules.values())


def _check_adaptive(settings: AdaptiveSettings, profiles: Mapping[str, EnsembleSpec]) -> None:
    if not settings.enabled:
        return
    if not settings.profile:
        raise ConfigError("adaptive.profile", "is required", "the profile that ensembles")
    _known_profile(settings.profile, "adaptive.profile", profiles)


def _client_api_keys(name: str | None, environ: Mapping[str, str]) -> frozenset[str]:
    if name is None:
        return frozenset()
    keys = frozenset(k.strip() for k in environ.get(name, "").split(",") if k.strip())
    if not keys:
        raise ConfigError(
            "header_control.api_keys_env",
            f"environment variable {name} is not set or empty",
            "export it (comma-separated keys) or remove api_keys_env",
        )
    return keys


def _internal_secret(file: ConfigFile, environ: Mapping[str, str]) -> bytes | None:
    """Named: required; unnamed: ENSEMBLE_INTERNAL_SECRET, when it is set."""
    key, name = "security.internal_secret_env", file.security.internal_secret_env
    value = environ.get(name or DEFAULT_SECRET_ENV, "")
    if name is not None and not value:
        raise ConfigError(
            key,
            f"environment variable {name} is not set",
            "export a random secret, shared by the processor and the upstream",
        )
    if value and len(value) < 16:
        name = name or DEFAULT_SECRET_ENV
        raise ConfigError(
            key, f"{name} is shorter than 16 characters", "use a longer random secret"
        )
    return value.encode() if value else None


def _tracing(settings: TracingSettings, environ: Mapping[str, str]) -> TracingSettings:
    """The standard OTEL_* switches over tracing.enabled: OTEL_SDK_DISABLED=true or
    OTEL_TRACES_EXPORTER=none turn traces off, OTEL_TRACES_EXPORTER=otlp turns them on."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return msgspec.structs.replace(settings, enabled=False)
    exporters = {e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "").split(",")}
    exporters.discard("")
    if not exporters:
        return settings
    if exporters == {"none"}:
        return msgspec.structs.replace(settings, enabled=False)
    if exporters != {"otlp"}:
        raise ConfigError(
            "tracing.enabled",
            f"OTEL_TRACES_EXPORTER={environ['OTEL_TRACES_EXPORTER']!r} is not supported",
            "use otlp (OTLP/gRPC) or none, or unset it and set tracing.enabled",
        )
    return msgspec.structs.replace(settings, enabled=True)
