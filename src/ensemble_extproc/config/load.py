"""Compile a YAML config file (ours, or the semantic-router ensemble shape) into ``Config``."""

from __future__ import annotations

import logging
import os
import re
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ..adaptive.difficulty import DifficultyWeights
from ..demo.models import DemoModel, parse_demo_models
from ..errors import ConfigError
from ..rules import Rule, compile_condition
from ..strategies import STRATEGIES, StrategySettings
from ..trust.model import TrustSettings
from .model import (
    AdaptiveSettings,
    Address,
    BreakerPolicy,
    Config,
    Endpoint,
    EnsembleSettings,
    EnvoySettings,
    HeaderControl,
    Listeners,
    Profile,
    RetryPolicy,
    SignalConfig,
)
from .reader import Section, type_name

log = logging.getLogger(__name__)

# Envoy reads model keys from its environment by these names (%ENVIRONMENT(NAME)%, Lua).
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

TOP_KEYS = frozenset(
    {
        "models",
        "default_model",
        "ensemble",
        "listen",
        "demo",
        "profiles",
        "rules",
        "header_control",
        "adaptive",
        "security",
        "metadata_namespace",
        "logging",
        "envoy",
    }
)
ENVOY_KEYS = frozenset(
    {
        "failure_mode",
        "message_timeout_ms",
        "fallback_to_default",
        "request_headers_timeout_seconds",
        "request_timeout_seconds",
        "stream_idle_timeout_seconds",
        "idle_timeout_seconds",
    }
)
PROFILE_KEYS = frozenset({"models", "strategy", "min_responses", "timeout_seconds"})
RULE_KEYS = frozenset({"name", "profile", "match"})
HEADER_CONTROL_KEYS = frozenset({"enabled", "api_keys_env", "require_header"})
ADAPTIVE_KEYS = frozenset(
    {"enabled", "profile", "threshold", "signals", "combine", "sample_rate", "max_per_second"}
)
SIGNAL_KEYS = frozenset({"type", "weight", "headers", "weights"})
SECURITY_KEYS = frozenset({"internal_secret_env", "signature_lifetime_seconds"})
# Where the key signing internal headers comes from, unless security.internal_secret_env says.
DEFAULT_SECRET_ENV = "ENSEMBLE_INTERNAL_SECRET"
# The vLLM semantic router's confidence header.
DEFAULT_CONFIDENCE_HEADERS = ("x-vsr-selected-confidence",)
MODEL_KEYS = frozenset(
    {
        "name",
        "url",
        "upstream_model",
        "weight",
        "api_key_env",
        "accuracy",
        "forward_client_auth",
        "retries",
        "ca_file",
    }
)
RETRY_KEYS = frozenset({"attempts", "backoff_ms", "max_backoff_ms"})
BREAKER_KEYS = frozenset({"failures", "window_seconds", "cooldown_seconds"})
STRATEGY_KEYS = {
    "weighted": frozenset({"use_confidence", "alternatives", "weights"}),
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
        "stream_keepalive_seconds",
        "max_in_flight",
        "body_timeout_seconds",
        "retries",
        "circuit_breaker",
        "trust",
        *STRATEGY_KEYS,
    }
)
TRUST_KEYS = frozenset(
    {
        "enabled",
        "correlation",
        "sample_share",
        "half_life",
        "min_evidence",
        "prior_strength",
        "default_accuracy",
        "alternatives",
        "flag_z",
        "min_excess",
        "max_client_share",
        "change_threshold",
        "max_keys",
        "max_clients",
        "refit_every",
        "snapshot_dir",
        "snapshot_interval_seconds",
        "replica_id",
        "peer_max_age_seconds",
    }
)
LISTEN_KEYS = frozenset({"envoy", "envoy_admin", "extproc", "upstream", "extproc_metrics"})
LOGGING_KEYS = frozenset({"format", "include_text"})


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
    settings = _ensemble_settings(ensemble, endpoints)
    profiles = _profiles(top, endpoints, settings)
    logging_section = Section(top.raw.get("logging"), "logging", LOGGING_KEYS)
    namespace = top.get("metadata_namespace", str, "ensemble_extproc")
    if not namespace.replace("_", "").replace(".", "").isalnum():
        raise ConfigError(
            "metadata_namespace",
            f"{namespace!r} is not a usable namespace",
            "use letters, digits, '_' and '.'",
        )
    return Config(
        endpoints=endpoints,
        default_model=default_model,
        ensemble=settings,
        listen=_listeners(Section(top.raw.get("listen"), "listen", LISTEN_KEYS)),
        demo_models=demo_models,
        profiles=profiles,
        rules=_rules(top, profiles),
        header_control=_header_control(top, environ),
        adaptive=_adaptive(top, profiles),
        internal_secret=_internal_secret(top, environ),
        signature_lifetime_seconds=_security(top).positive(
            "signature_lifetime_seconds", float, 10.0
        ),
        metadata_namespace=namespace,
        envoy=_envoy(Section(top.raw.get("envoy"), "envoy", ENVOY_KEYS), settings),
        log_format=_choice(logging_section, "format", ("json", "text")),
        log_include_text=logging_section.get("include_text", bool, False),
    )


def _envoy(section: Section, ensemble: EnsembleSettings) -> EnvoySettings:
    defaults = EnvoySettings()
    stream_idle = section.positive(
        "stream_idle_timeout_seconds", float, defaults.stream_idle_timeout_seconds
    )
    if stream_idle <= ensemble.timeout_seconds:
        raise ConfigError(
            section.key("stream_idle_timeout_seconds"),
            f"{stream_idle:g} s would cut non-streamed ensembles, which send nothing until "
            f"their answer (ensemble.timeout_seconds is {ensemble.timeout_seconds:g} s)",
            "raise it above ensemble.timeout_seconds",
        )
    return EnvoySettings(
        failure_mode=_choice(section, "failure_mode", ("closed", "open")),
        message_timeout_seconds=section.positive("message_timeout_ms", float, 500.0) / 1000,
        fallback_to_default=section.get("fallback_to_default", bool, True),
        request_headers_timeout_seconds=section.positive(
            "request_headers_timeout_seconds", float, defaults.request_headers_timeout_seconds
        ),
        request_timeout_seconds=section.positive(
            "request_timeout_seconds", float, defaults.request_timeout_seconds
        ),
        stream_idle_timeout_seconds=stream_idle,
        idle_timeout_seconds=section.positive(
            "idle_timeout_seconds", float, defaults.idle_timeout_seconds
        ),
    )


def _profiles(
    top: Section, endpoints: Mapping[str, Endpoint], settings: EnsembleSettings
) -> dict[str, Profile]:
    raw = top.get("profiles", dict, {})
    profiles: dict[str, Profile] = {}
    for name, body in raw.items():
        section = Section(body, f"profiles.{name}", PROFILE_KEYS)
        if name in endpoints:
            raise ConfigError(
                section.path,
                f"profile {name!r} has the name of a model",
                "a request's model field must name one or the other: rename it",
            )
        models = tuple(str(m) for m in section.require("models", list))
        if not models:
            raise ConfigError(section.key("models"), "must name at least one model")
        for model in models:
            if model not in endpoints:
                raise ConfigError(
                    section.key("models"), f"unknown model {model!r}", _known(endpoints)
                )
        strategy = section.get("strategy", str, settings.default_strategy)
        if strategy not in STRATEGIES:
            raise ConfigError(
                section.key("strategy"),
                f"unknown strategy {strategy!r}",
                "one of: " + ", ".join(STRATEGIES),
            )
        missing = STRATEGIES[strategy].missing_setting(settings.strategy)
        if missing is not None:
            raise ConfigError(
                section.key("strategy"), f"{strategy} needs {missing}", f"set {missing}"
            )
        natural = STRATEGIES[strategy].natural_min_responses
        default_min = min(natural or settings.default_min_responses, len(models))
        min_responses = section.positive("min_responses", int, default_min)
        if min_responses > len(models):
            raise ConfigError(
                section.key("min_responses"),
                f"{min_responses} is more than the {len(models)} model(s)",
            )
        timeout = section.positive("timeout_seconds", float, settings.timeout_seconds)
        if timeout > settings.timeout_seconds:
            raise ConfigError(
                section.key("timeout_seconds"),
                f"{timeout} is longer than ensemble.timeout_seconds",
                "raise ensemble.timeout_seconds or lower this",
            )
        profiles[str(name)] = Profile(
            str(name),
            models,
            strategy,
            min_responses,
            timeout if section.has("timeout_seconds") else None,
        )
    return profiles


def _rules(top: Section, profiles: Mapping[str, Profile]) -> tuple[Rule, ...]:
    raw = top.get("rules", list, [])
    rules = []
    names: set[str] = set()
    for i, item in enumerate(raw):
        section = Section(item, f"rules[{i}]", RULE_KEYS)
        name = section.require("name", str)
        if name in names:
            raise ConfigError(section.key("name"), f"rule {name!r} is defined twice")
        names.add(name)
        profile = section.require("profile", str)
        if profile not in profiles:
            raise ConfigError(
                section.key("profile"),
                f"unknown profile {profile!r}",
                "known profiles: " + (", ".join(profiles) or "none"),
            )
        match = section.require("match", dict)
        conditions = tuple(
            compile_condition(str(field), spec, f"{section.key('match')}.{field}")
            for field, spec in match.items()
        )
        if not conditions:
            raise ConfigError(section.key("match"), "is empty", "a rule needs a condition")
        rules.append(Rule(name, profile, conditions))
    return tuple(rules)


def _header_control(top: Section, environ: Mapping[str, str]) -> HeaderControl:
    section = Section(top.raw.get("header_control"), "header_control", HEADER_CONTROL_KEYS)
    keys: frozenset[str] = frozenset()
    keys_env = section.get("api_keys_env", str, "")
    if keys_env:
        value = environ.get(keys_env, "")
        keys = frozenset(k.strip() for k in value.split(",") if k.strip())
        if not keys:
            raise ConfigError(
                section.key("api_keys_env"),
                f"environment variable {keys_env} is not set or empty",
                "export it (comma-separated keys) or remove api_keys_env",
            )
    require = section.raw.get("require_header")
    header, values = None, frozenset[str]()
    if require is not None:
        required = Section(require, section.key("require_header"), frozenset({"name", "values"}))
        header = required.require("name", str).lower()
        values = frozenset(str(v) for v in required.require("values", list))
        if not values:
            raise ConfigError(required.key("values"), "must list at least one value")
    return HeaderControl(section.get("enabled", bool, True), keys, header, values)


def _adaptive(top: Section, profiles: Mapping[str, Profile]) -> AdaptiveSettings:
    section = Section(top.raw.get("adaptive"), "adaptive", ADAPTIVE_KEYS)
    enabled = section.get("enabled", bool, False)
    if not enabled:
        return AdaptiveSettings()
    profile = section.require("profile", str)
    if profile not in profiles:
        raise ConfigError(
            section.key("profile"),
            f"unknown profile {profile!r}",
            "known profiles: " + (", ".join(profiles) or "none"),
        )
    raw_signals = section.get("signals", list, [{"type": "header"}, {"type": "difficulty"}])
    signals = tuple(_signal(item, f"adaptive.signals[{i}]") for i, item in enumerate(raw_signals))
    if not signals:
        raise ConfigError(section.key("signals"), "is empty", "list at least one signal")
    max_rate = section.get("max_per_second", float, 0.0)
    if section.has("max_per_second") and max_rate <= 0:
        raise ConfigError(section.key("max_per_second"), f"must be > 0, got {max_rate}")
    return AdaptiveSettings(
        enabled=True,
        profile=profile,
        threshold=_fraction(section, "threshold", 0.5),
        signals=signals,
        combine=_choice(section, "combine", ("min", "mean")),
        sample_rate=_fraction(section, "sample_rate", 1.0),
        max_per_second=max_rate if section.has("max_per_second") else None,
    )


def _signal(item: object, key: str) -> SignalConfig:
    section = Section(item, key, SIGNAL_KEYS)
    kind = section.require("type", str)
    if kind not in ("header", "difficulty") and not kind.startswith("python:"):
        raise ConfigError(
            section.key("type"),
            f"unknown signal {kind!r}",
            "header, difficulty, or python:<module>:<factory> for your own",
        )
    weight = section.positive("weight", float, 1.0)
    if kind == "header":
        names = tuple(
            str(n).lower() for n in section.get("headers", list, list(DEFAULT_CONFIDENCE_HEADERS))
        )
        return SignalConfig(kind, weight, header_names=names)
    if kind != "difficulty":
        return SignalConfig(kind, weight)
    raw_weights = section.get("weights", dict, {})
    allowed = set(DifficultyWeights.__dataclass_fields__)
    weights: dict[str, float] = {}
    for name, value in raw_weights.items():
        if name not in allowed:
            raise ConfigError(
                f"{key}.weights.{name}", "unknown feature", "one of: " + ", ".join(sorted(allowed))
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}.weights.{name}", f"must be a number, got {value!r}")
        weights[str(name)] = float(value)
    return SignalConfig(kind, weight, difficulty_weights=weights)


def _security(top: Section) -> Section:
    return Section(top.raw.get("security"), "security", SECURITY_KEYS)


def _internal_secret(top: Section, environ: Mapping[str, str]) -> bytes | None:
    section = _security(top)
    name = section.get("internal_secret_env", str, DEFAULT_SECRET_ENV)
    value = environ.get(name, "")
    if section.has("internal_secret_env") and not value:
        raise ConfigError(
            section.key("internal_secret_env"),
            f"environment variable {name} is not set",
            "export a random secret, shared by the processor and the upstream",
        )
    if value and len(value) < 16:
        raise ConfigError(
            section.key("internal_secret_env"),
            f"{name} is shorter than 16 characters",
            "use a longer random secret",
        )
    return value.encode() if value else None


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
    if api_key_env and not ENV_NAME.fullmatch(api_key_env):
        raise ConfigError(
            section.key("api_key_env"),
            f"{api_key_env!r} is not an environment variable name",
            "letters, digits and _, not starting with a digit",
        )
    if api_key_env and section.get("forward_client_auth", bool, False):
        raise ConfigError(
            section.key("forward_client_auth"),
            "cannot be combined with api_key_env",
            "choose one credential",
        )
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
    url = chat_completions_url(section.require("url", str), section.key("url"))
    return Endpoint(
        name=name,
        url=url,
        upstream_model=section.get("upstream_model", str, name),
        weight=section.positive("weight", float, 1.0),
        api_key=api_key,
        api_key_env=api_key_env or None,
        ca_file=_ca_file(section, url),
        accuracy=accuracy if section.has("accuracy") else None,
        forward_client_auth=section.get("forward_client_auth", bool, False),
        retry=_retry(section.raw.get("retries"), section.key("retries"), None),
    )


def _ca_file(section: Section, url: str) -> str | None:
    """An absolute path to a PEM file of CAs that loads (checked now, not at the first call)."""
    value = section.get("ca_file", str, "")
    if not value:
        return None
    key = section.key("ca_file")
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


def _retry(raw: object, key: str, default: RetryPolicy | None) -> RetryPolicy | None:
    """``retries: false`` (no retry), a mapping, or absent (``default``)."""
    if raw is None:
        return default
    if raw is False:
        return RetryPolicy(attempts=1)
    section = Section(raw, key, RETRY_KEYS)
    base = default or RetryPolicy()
    backoff = section.positive("backoff_ms", float, base.backoff_seconds * 1000) / 1000
    return RetryPolicy(
        attempts=section.positive("attempts", int, base.attempts),
        backoff_seconds=backoff,
        max_backoff_seconds=section.positive(
            "max_backoff_ms", float, base.max_backoff_seconds * 1000
        )
        / 1000,
    )


def _breaker(raw: object) -> BreakerPolicy | None:
    if raw is False:
        return None
    section = Section(raw, "ensemble.circuit_breaker", BREAKER_KEYS)
    base = BreakerPolicy()
    return BreakerPolicy(
        failures=section.positive("failures", int, base.failures),
        window_seconds=section.positive("window_seconds", float, base.window_seconds),
        cooldown_seconds=section.positive("cooldown_seconds", float, base.cooldown_seconds),
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
    trust = _trust(Section(section.raw.get("trust"), "ensemble.trust", TRUST_KEYS))
    if strategy_settings.weighted_weights == "learned" and not trust.enabled:
        raise ConfigError(
            "ensemble.weighted.weights",
            "is learned, but nothing is learned: ensemble.trust.enabled is false",
            "set ensemble.trust.enabled: true, or weights: configured",
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
        stream_keepalive_seconds=section.positive("stream_keepalive_seconds", float, 5.0),
        max_in_flight=section.positive("max_in_flight", int, defaults.max_in_flight),
        body_timeout_seconds=section.positive(
            "body_timeout_seconds", float, defaults.body_timeout_seconds
        ),
        retry=_retry(section.raw.get("retries"), "ensemble.retries", RetryPolicy())
        or RetryPolicy(),
        breaker=_breaker(section.raw.get("circuit_breaker")),
        strategy=strategy_settings,
        trust=trust,
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


def _alternatives(section: Section) -> int | None:
    """ensemble.weighted.alternatives: a number k >= 1, or auto (unset): votes first."""
    value = section.raw.get("alternatives")
    if value is None or value == "auto":
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            section.key("alternatives"),
            f"must be a whole number >= 1 or auto, got {value!r}",
            "the number of plausible wrong answers per question, e.g. 3 for four options",
        )
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
        weighted_alternatives=_alternatives(block("weighted")),
        weighted_weights=_choice(block("weighted"), "weights", ("configured", "learned")),
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
        extproc_metrics=_address(section, "extproc_metrics", defaults.extproc_metrics),
    )


def _demo_models(top: Section) -> tuple[DemoModel, ...]:
    demo = Section(top.raw.get("demo"), "demo", frozenset({"models"}))
    return parse_demo_models(demo.raw.get("models") or [], "demo.models")


def _trust(section: Section) -> TrustSettings:
    """``ensemble.trust``: learned accuracies and correlated members (docs/trust.md)."""
    base = TrustSettings()
    alternatives = section.raw.get("alternatives", "auto")
    if alternatives != "auto" and (
        isinstance(alternatives, bool) or not isinstance(alternatives, int) or alternatives < 1
    ):
        raise ConfigError(
            section.key("alternatives"),
            f"must be auto or a whole number >= 1, got {alternatives!r}",
            "the number of plausible wrong answers per question (3 for 4-option quizzes), "
            "or auto to learn it",
        )
    change = section.raw.get("change_threshold", base.change_threshold)
    if change is not False and (
        isinstance(change, bool) or not isinstance(change, int | float) or change <= 0
    ):
        raise ConfigError(
            section.key("change_threshold"),
            f"must be a number > 0 or false, got {change!r}",
            "false turns change detection off (decay alone then follows model updates)",
        )
    default_accuracy = section.get("default_accuracy", float, base.default_accuracy)
    if not 0 < default_accuracy < 1:
        raise ConfigError(
            section.key("default_accuracy"), f"must be between 0 and 1, got {default_accuracy}"
        )
    min_excess = section.get("min_excess", float, base.min_excess)
    if not 0 <= min_excess < 1:
        raise ConfigError(section.key("min_excess"), f"must be in [0, 1), got {min_excess}")
    min_evidence = section.get("min_evidence", float, base.min_evidence)
    if min_evidence < 0:
        raise ConfigError(section.key("min_evidence"), f"must be >= 0, got {min_evidence}")
    interval = section.positive("snapshot_interval_seconds", float, base.snapshot_interval_seconds)
    max_age = section.positive("peer_max_age_seconds", float, base.peer_max_age_seconds)
    if max_age <= interval:
        raise ConfigError(
            section.key("peer_max_age_seconds"),
            f"{max_age:g} is not longer than snapshot_interval_seconds {interval:g}",
            "peers write a snapshot every interval: allow several intervals",
        )
    snapshot_dir = section.get("snapshot_dir", str, "")
    if section.has("snapshot_dir") and not snapshot_dir.strip():
        raise ConfigError(section.key("snapshot_dir"), "is empty", "name a directory, or remove it")
    return TrustSettings(
        enabled=section.get("enabled", bool, base.enabled),
        correlation=section.get("correlation", bool, base.correlation),
        sample_share=_fraction(section, "sample_share", base.sample_share),
        half_life=section.positive("half_life", float, base.half_life),
        min_evidence=min_evidence,
        prior_strength=section.positive("prior_strength", float, base.prior_strength),
        default_accuracy=default_accuracy,
        alternatives=None if alternatives == "auto" else int(alternatives),
        flag_z=section.positive("flag_z", float, base.flag_z),
        min_excess=min_excess,
        max_client_share=_fraction(section, "max_client_share", base.max_client_share),
        change_threshold=None if change is False else float(change),
        max_keys=section.positive("max_keys", int, base.max_keys),
        max_clients=section.positive("max_clients", int, base.max_clients),
        refit_every=section.positive("refit_every", int, base.refit_every),
        snapshot_dir=snapshot_dir or None,
        snapshot_interval_seconds=interval,
        replica_id=section.get("replica_id", str, ""),
        peer_max_age_seconds=max_age,
    )
