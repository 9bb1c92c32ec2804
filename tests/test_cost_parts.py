"""Cost, the pure parts: a call's cost at its model's price, the ensemble's total (never a
silent 0), the estimate a cap is checked against, the cap header and the config keys."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ensemble_extproc import headers as h
from ensemble_extproc.config import compile_config
from ensemble_extproc.cost import CostEstimate, Price
from ensemble_extproc.cost.account import NO_PRICE, call_cost, format_usd, summary
from ensemble_extproc.cost.estimate import call_estimate, completion_tokens, prompt_tokens
from ensemble_extproc.errors import ApiError, ConfigError, ErrorCode
from ensemble_extproc.spec import EnsembleSpec, cap_header, upstream_spec, with_cost_cap
from ensemble_extproc.strategies import Candidate, Failure, Status, Usage

# $1 per million prompt tokens, $4 per million completion tokens.
PRICE = Price(input_per_million=1.0, output_per_million=4.0)
OK = Candidate(
    "a", Status.OK, {"role": "assistant", "content": "Paris"}, "stop", Usage(100, 50, 150)
)


def test_a_call_costs_its_usage_at_its_price() -> None:
    cost = call_cost(OK, PRICE)
    assert cost.usd == pytest.approx((100 * 1.0 + 50 * 4.0) / 1_000_000)
    assert cost.unknown is None
    assert not cost.estimated


@pytest.mark.parametrize(
    ("candidate", "price", "usd", "unknown"),
    [
        # Never sent (circuit open, over the cap): nothing to pay, whatever the price.
        (Candidate("a", Status.SKIPPED, sent=False), None, 0.0, None),
        (Candidate("a", Status.OVER_BUDGET, sent=False), PRICE, 0.0, None),
        # Refused with an error status: providers bill answers, not refusals.
        (Candidate("a", Status.ERROR, failure=Failure.HTTP, http_status=429), PRICE, 0.0, None),
        # A model without a price: unknown, and why.
        (OK, None, None, NO_PRICE),
        # Sent, but no usage came back: unknown (it may still be billed).
        (
            Candidate("a", Status.CANCELLED),
            PRICE,
            None,
            "cancelled before the model reported usage",
        ),
        (Candidate("a", Status.TIMEOUT), PRICE, None, "timed out before the model reported usage"),
        (
            Candidate("a", Status.OK, {"content": "x"}, "stop"),
            PRICE,
            None,
            "the model reported no usage",
        ),
        (
            Candidate("a", Status.ERROR, failure=Failure.CONNECTION),
            PRICE,
            None,
            "failed before the model reported usage",
        ),
    ],
)
def test_what_a_call_costs_when_it_is_not_a_plain_answer(
    candidate: Candidate, price: Price | None, usd: float | None, unknown: str | None
) -> None:
    cost = call_cost(candidate, price)
    assert cost.usd == usd
    assert cost.unknown == unknown


def test_counted_usage_makes_an_estimated_cost() -> None:
    counted = Candidate("a", Status.ERROR, usage=Usage(10, 6, 16), usage_counted=True)
    cost = call_cost(counted, PRICE)
    assert cost.usd == pytest.approx((10 + 24) / 1_000_000)
    assert cost.estimated


def priced(candidate: Candidate, price: Price | None) -> Candidate:
    return Candidate(
        candidate.model,
        candidate.status,
        candidate.message,
        candidate.finish_reason,
        candidate.usage,
        sent=candidate.sent,
        cost=call_cost(candidate, price),
    )


def test_the_total_is_complete_only_when_every_call_is_known() -> None:
    known = priced(OK, PRICE)
    free = priced(Candidate("b", Status.OVER_BUDGET, sent=False), PRICE)
    unpriced = priced(Candidate("c", Status.OK, usage=Usage(1, 1, 2)), None)
    whole = summary([known, free], max_usd=0.01)
    assert whole.complete
    assert whole.total_usd == pytest.approx(0.0003)
    assert whole.not_started == ("b",)
    assert whole.max_usd == 0.01
    part = summary([known, unpriced, free], max_usd=None)
    # A lower bound, and which calls are missing from it.
    assert not part.complete
    assert part.total_usd == pytest.approx(0.0003)
    assert part.unknown == ("c",)


@given(st.floats(0, 1000, allow_nan=False))
def test_format_usd_is_a_plain_decimal_that_reads_back(value: float) -> None:
    text = format_usd(value)
    assert "e" not in text.lower()
    assert not text.startswith("-")
    assert float(text) == pytest.approx(value, abs=1e-10)


def test_format_usd_examples() -> None:
    assert format_usd(0.0) == "0"
    assert format_usd(4.05e-6) == "0.00000405"
    assert format_usd(12.5) == "12.5"


BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "x" * 296}]}


def test_the_estimate_reads_the_prompt_size_and_the_token_limit() -> None:
    settings = CostEstimate(bytes_per_token=3.0, output_tokens=1000)
    size = len(b'[{"role":"user","content":"' + b"x" * 296 + b'"}]')
    assert prompt_tokens(BODY, settings) == math.ceil(size / 3)
    # No limit: the assumed output; a limit: the stricter of the two fields.
    assert completion_tokens(BODY, settings) == 1000
    assert (
        completion_tokens({**BODY, "max_tokens": 50, "max_completion_tokens": 80}, settings) == 50
    )
    # Tools are part of the prompt too.
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert prompt_tokens({**BODY, "tools": tools}, settings) > prompt_tokens(BODY, settings)
    usd = call_estimate({**BODY, "max_tokens": 50}, PRICE, settings)
    assert usd == pytest.approx((prompt_tokens(BODY, settings) * 1.0 + 50 * 4.0) / 1e6)
    # Nothing bounds a model without a price.
    assert call_estimate(BODY, None, settings) == math.inf


# --- the cap: header, profile, config ---------------------------------------------------

MODELS: list[dict[str, Any]] = [
    {
        "name": "cheap",
        "url": "http://127.0.0.1:1/v1",
        "price": {"input_per_million": 0.15, "output_per_million": 0.6},
    },
    {
        "name": "dear",
        "url": "http://127.0.0.1:2/v1",
        "price": {"input_per_million": 2.5, "output_per_million": 10},
    },
    {"name": "free-text", "url": "http://127.0.0.1:3/v1"},
]


def config(**extra: Any) -> Any:
    return compile_config({"models": MODELS, "default_model": "cheap", **extra})


SPEC = EnsembleSpec(("cheap", "dear"), "cascade", 1)


@pytest.mark.parametrize("raw", ["0.05", " 0.05 ", "5e-2", "0", "1e-07"])
def test_a_cap_header_is_read_as_dollars(raw: str) -> None:
    spec = with_cost_cap(SPEC, {h.MAX_COST: raw}, config())
    assert spec.max_cost_usd == pytest.approx(float(raw))


@pytest.mark.parametrize(
    "raw", ["", "-1", "abc", "nan", "inf", "1e999", "$0.05", "0,05", "0x10", "1_0"]
)
def test_a_bad_cap_header_is_the_clients_400(raw: str) -> None:
    with pytest.raises(ApiError) as raised:
        with_cost_cap(SPEC, {h.MAX_COST: raw}, config())
    assert raised.value.status == 400
    assert raised.value.error_code is ErrorCode.INVALID_MAX_COST
    assert raised.value.param == h.MAX_COST


def test_a_cap_over_a_model_without_a_price_is_the_clients_400() -> None:
    spec = EnsembleSpec(("cheap", "free-text"), "voting", 1)
    with pytest.raises(ApiError) as raised:
        with_cost_cap(spec, {h.MAX_COST: "1"}, config())
    assert raised.value.error_code is ErrorCode.UNPRICED_MODELS
    assert "free-text" in raised.value.message
    # Without a cap, an unpriced model is fine: its cost is reported as unknown.
    assert with_cost_cap(spec, {}, config()).max_cost_usd is None


def test_the_lower_of_the_profiles_cap_and_the_clients_applies() -> None:
    cfg = config(
        profiles={
            "thrifty": {"models": ["cheap", "dear"], "strategy": "cascade", "max_cost_usd": 0.02}
        }
    )
    profile = cfg.profiles["thrifty"]
    assert profile.max_cost_usd == 0.02
    assert with_cost_cap(profile, {h.MAX_COST: "0.5"}, cfg).max_cost_usd == 0.02
    assert with_cost_cap(profile, {h.MAX_COST: "0.005"}, cfg).max_cost_usd == 0.005


def test_a_profile_cap_over_a_model_without_a_price_names_the_key() -> None:
    with pytest.raises(ConfigError) as raised:
        config(profiles={"p": {"models": ["cheap", "free-text"], "max_cost_usd": 1}})
    assert "profiles.p.max_cost_usd" in str(raised.value)
    assert "free-text" in str(raised.value)


@given(st.floats(0, 1e6, allow_nan=False, allow_infinity=False))
def test_the_signed_cap_reads_back_on_the_upstream(cap: float) -> None:
    """What the processor writes (cap_header) is what the upstream reads (upstream_spec)."""
    cfg = config()
    spec = EnsembleSpec(("cheap", "dear"), "cascade", 1, max_cost_usd=cap)
    headers = {h.MODELS: "cheap,dear", h.STRATEGY: "cascade", h.MIN_RESPONSES: "1"}
    back = upstream_spec({**headers, h.MAX_COST: cap_header(spec)}, cfg)
    assert back.max_cost_usd == pytest.approx(cap, rel=1e-12)
