"""What ensemble a request asks for: parsed from the ``x-ensemble-*`` headers.

Shared by the processor (which answers bad headers before any model is called) and the
ensemble upstream (which may also be called directly). Pure: headers and config in, a spec
or an ``ApiError`` out. Only model *names* from config are accepted, never URLs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from . import headers as h
from .errors import ApiError, ErrorCode
from .strategies import STRATEGIES

if TYPE_CHECKING:  # config compiles its profiles into EnsembleSpec
    from .config import Config, Endpoint
    from .strategies import StrategySettings

# What a header may give as a decimal number (also the OpenAPI document's pattern).
DECIMAL = r"[0-9]{1,12}(?:\.[0-9]{1,12})?(?:[eE][+-]?[0-9]{1,3})?"
_DECIMAL = re.compile(DECIMAL, re.ASCII)
TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, slots=True)
class EnsembleSpec:
    models: tuple[str, ...]
    strategy: str
    min_responses: int
    # Set when a config profile decided (its name, and its own deadline if it has one).
    profile: str | None = None
    timeout_seconds: float | None = None
    # The most the ensemble may cost, in US dollars: the profile's max_cost_usd or the
    # client's x-ensemble-max-cost-usd, the lower (docs/cost.md).
    max_cost_usd: float | None = None


def parse_enable(headers: Mapping[str, str]) -> bool | None:
    """``x-ensemble-enable`` as a bool; None when absent."""
    value = headers.get(h.ENABLE)
    if value is None:
        return None
    folded = value.strip().lower()
    if folded in TRUE_WORDS:
        return True
    if folded in FALSE_WORDS:
        return False
    raise ApiError(
        ErrorCode.INVALID_HEADER, f"{h.ENABLE} must be true or false, got {value!r}", param=h.ENABLE
    )


def asks_for_ensemble(headers: Mapping[str, str], enable: bool | None) -> bool:
    """True when the headers ask for an ensemble; ``enable`` is ``parse_enable(headers)``."""
    if enable is not None:
        return enable
    return any(name in headers for name in (h.MODELS, h.STRATEGY, h.MIN_RESPONSES))


def spec_from_headers(headers: Mapping[str, str], config: Config) -> EnsembleSpec:
    """The ensemble the headers describe, with config defaults for what they leave out."""
    models = _models(headers.get(h.MODELS), config)
    strategy_name = headers.get(h.STRATEGY, config.ensemble.default_strategy).strip()
    strategy = STRATEGIES.get(strategy_name)
    if strategy is None:
        raise ApiError(
            ErrorCode.UNKNOWN_STRATEGY,
            f"unknown strategy {strategy_name!r}; known strategies: {', '.join(STRATEGIES)}",
            param=h.STRATEGY,
        )
    missing = strategy.missing_setting(config.ensemble)
    if missing is not None:
        raise ApiError(
            ErrorCode.STRATEGY_NOT_CONFIGURED,
            f"strategy {strategy_name!r} needs the config key {missing}, which is not set",
            param=h.STRATEGY,
        )
    min_raw = headers.get(h.MIN_RESPONSES)
    if min_raw is None:
        natural = strategy.natural_min_responses
        default = natural if natural is not None else config.ensemble.default_min_responses
        # A default larger than the request's model list would make every such request fail.
        min_responses = min(default, len(models))
    else:
        min_responses = _min_responses(min_raw, len(models))
    return EnsembleSpec(models=models, strategy=strategy_name, min_responses=min_responses)


def _models(value: str | None, config: Config) -> tuple[str, ...]:
    if value is None:
        if not config.ensemble.default_models:
            raise ApiError(
                ErrorCode.MISSING_MODELS,
                f"{h.MODELS} is required: name the models to ensemble, comma-separated "
                f"(known models: {', '.join(config.endpoints)})",
                param=h.MODELS,
            )
        return config.ensemble.default_models
    names = tuple(name.strip() for name in value.split(","))
    if any(not name for name in names):
        raise ApiError(
            ErrorCode.INVALID_HEADER,
            f"{h.MODELS} has an empty model name: {value!r}",
            param=h.MODELS,
        )
    limit = config.ensemble.max_models_per_request
    if len(names) > limit:
        raise ApiError(
            ErrorCode.TOO_MANY_MODELS,
            f"{h.MODELS} names {len(names)} models; at most {limit} are allowed per request",
            param=h.MODELS,
        )
    unknown = [name for name in names if name not in config.endpoints]
    if unknown:
        raise ApiError(
            ErrorCode.MODEL_NOT_FOUND,
            f"unknown model {unknown[0]!r} in {h.MODELS}; known models: "
            + ", ".join(config.endpoints),
            param=h.MODELS,
        )
    if len(set(names)) != len(names):
        raise ApiError(
            ErrorCode.DUPLICATE_MODEL, f"{h.MODELS} names a model twice: {value!r}", param=h.MODELS
        )
    return names


# Header values are echoed in error messages up to this many characters.
_ECHO = 40


def _min_responses(value: str, model_count: int) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or not text.strip("0"):
        raise ApiError(
            ErrorCode.INVALID_MIN_RESPONSES,
            f"{h.MIN_RESPONSES} must be a positive integer, got {value[:_ECHO]!r}",
            param=h.MIN_RESPONSES,
        )
    # Compared as text first: int() of thousands of digits is slow, then refused by Python.
    digits = text.lstrip("0")
    if len(digits) > len(str(model_count)) or int(digits) > model_count:
        raise ApiError(
            ErrorCode.INVALID_MIN_RESPONSES,
            f"{h.MIN_RESPONSES} is {digits[:_ECHO]}{'...' if len(digits) > _ECHO else ''} "
            f"but only {model_count} model(s) are requested",
            param=h.MIN_RESPONSES,
        )
    return int(digits)


def _decimal(text: str) -> float | None:
    """A finite decimal number (``30``, ``2.5``, ``1e+06`` as the processor's ``%g`` writes
    it, ``1e-07`` as Python's repr does); None for the rest that Python's float() accepts
    (``nan``, ``inf``, ``1e999``, ``1_0``, non-ASCII digits)."""
    if _DECIMAL.fullmatch(text.strip()) is None:
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def upstream_spec(headers: Mapping[str, str], config: Config) -> EnsembleSpec:
    """The spec of a request reaching the upstream (its signature already checked, see
    ``upstream.auth``), with the profile's name and deadline when a profile decided."""
    spec = spec_from_headers(headers, config)
    timeout = None
    raw_timeout = headers.get(h.TIMEOUT, "")
    if raw_timeout:
        seconds = _decimal(raw_timeout)
        if seconds is None or not seconds > 0:
            raise ApiError(
                ErrorCode.INVALID_HEADER,
                f"{h.TIMEOUT} must be a positive number of seconds",
                param=h.TIMEOUT,
            )
        timeout = min(seconds, config.ensemble.timeout_seconds)
    spec = replace(spec, profile=headers.get(h.PROFILE) or None, timeout_seconds=timeout)
    return with_cost_cap(spec, headers, config)


def unpriced_models(
    spec: EnsembleSpec, endpoints: Mapping[str, Endpoint], settings: StrategySettings
) -> list[str]:
    """The models the ensemble may call (members, a judge, an aggregator) without a price."""
    called = dict.fromkeys((*spec.models, *STRATEGIES[spec.strategy].helpers(settings)))
    return [name for name in called if endpoints[name].price is None]


def parse_max_cost(headers: Mapping[str, str]) -> float | None:
    """The client's ``x-ensemble-max-cost-usd`` in US dollars; None when absent. Checked on
    every chat completion, ensembled or not: a mistyped cap is the client's 400, never a
    cap silently ignored."""
    raw = headers.get(h.MAX_COST)
    if raw is None:
        return None
    value = _decimal(raw)
    if value is None:
        raise ApiError(
            ErrorCode.INVALID_MAX_COST,
            f"{h.MAX_COST} must be a non-negative number of US dollars such as 0.05, "
            f"got {raw[:_ECHO]!r}",
            param=h.MAX_COST,
        )
    return value


def with_cost_cap(spec: EnsembleSpec, headers: Mapping[str, str], config: Config) -> EnsembleSpec:
    """The spec with its cost cap: the lower of its own (a profile's) and the client's
    ``x-ensemble-max-cost-usd``. A cap needs the price of every model the ensemble may
    call; either mistake is the client's 400, before any model is called."""
    cap = spec.max_cost_usd
    value = parse_max_cost(headers)
    if value is not None:
        cap = value if cap is None else min(cap, value)
    if cap is None:
        return spec
    unpriced = unpriced_models(spec, config.endpoints, config.ensemble)
    if unpriced:
        raise ApiError(
            ErrorCode.UNPRICED_MODELS,
            f"a cost cap of {cap:g} USD needs the price of every model the ensemble calls, "
            f"and {', '.join(unpriced)} has none (models[].price in the config)",
            param=h.MAX_COST if h.MAX_COST in headers else None,
        )
    return replace(spec, max_cost_usd=cap)


def cap_header(spec: EnsembleSpec) -> str:
    """The cap as the processor signs it for the upstream ("" for none), to 13 significant
    digits in a form ``_decimal`` reads (whatever the digits of a profile's YAML)."""
    return "" if spec.max_cost_usd is None else f"{spec.max_cost_usd:.12e}"
