"""What ensembles cost, through the real Envoy: each call and the total in the ``ensemble``
object, the ``x-ensemble-cost-usd`` header, the metric by model and the summary log line;
and the cost cap (``x-ensemble-max-cost-usd``): checked, a cascade and hedging stop at it
and say so, a cap no call fits is the client's 400 before any model is called.

The models are declared as real endpoints are (``models[]`` with a URL, a key from the
environment and a price); demo backends answer behind them."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from parts import Gateway, chat_json, curl, running_gateway

from helpers import demo_stats, free_port, listen_block

pytestmark = pytest.mark.e2e

# US dollars per million tokens (input, output), in the range of real prices.
PRICES = {"cheap": (0.15, 0.60), "mid": (2.50, 10.00), "slow": (0.15, 0.60)}
BACKENDS: dict[str, dict[str, Any]] = {
    # Unsure of itself (confidence 0.5 < the cascade's 0.8): a cascade escalates past it.
    "cheap": {"latency_ms": 5, "answers": ["Paris"], "confidence_correct": 0.5},
    "mid": {"latency_ms": 10, "answers": ["Paris"]},
    "unpriced": {"latency_ms": 5, "answers": ["Paris"]},
    # Slower than the hedge delay: first_success hedges to the next model.
    "slow": {"latency_ms": 600, "answers": ["Paris"]},
}
ENV = {"PROVIDER_KEY": "sk-test-provider"}
# The estimate a cap is checked against, for chat_json(max_tokens=16): about 20 prompt
# tokens (the messages' 58 bytes of JSON at 3 bytes a token) and 16 completion tokens:
# cheap (and slow) ~0.0000126 USD, mid ~0.00021 USD. A cap of 0.0001 fits cheap, not mid.
BETWEEN = "0.0001"
ASK = chat_json(max_tokens=16)


def config(hedge_delay_ms: float | None = None) -> dict[str, Any]:
    ports = {name: free_port() for name in BACKENDS}
    return {
        "listen": listen_block(),
        "default_model": "cheap",
        "demo": {
            "models": [
                {"name": f"{name}-backend", "port": ports[name], **spec}
                for name, spec in BACKENDS.items()
            ]
        },
        "models": [
            {
                "name": name,
                "url": f"http://127.0.0.1:{ports[name]}/v1",
                "api_key_env": "PROVIDER_KEY",
                **(
                    {
                        "price": {
                            "input_per_million": PRICES[name][0],
                            "output_per_million": PRICES[name][1],
                        }
                    }
                    if name in PRICES
                    else {}
                ),
            }
            for name in BACKENDS
        ],
        "ensemble": {
            "default_strategy": "voting",
            "default_min_responses": 1,
            "timeout_seconds": 5,
            "retries": False,
            "cascade": {"order": ["cheap", "mid"]},
            "first_success": {"hedge_delay_ms": hedge_delay_ms},
        },
        "profiles": {
            "thrifty": {"models": ["cheap", "mid"], "strategy": "cascade", "max_cost_usd": 0.0001},
        },
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with running_gateway(tmp_path_factory.mktemp("cost"), {}, raw=config(), env=ENV) as running:
        yield running


def usd(model: str, usage: dict[str, int]) -> float:
    price_in, price_out = PRICES[model]
    return (usage["prompt_tokens"] * price_in + usage["completion_tokens"] * price_out) / 1e6


def ask(
    gateway: Gateway, headers: dict[str, str], body: str = ASK
) -> tuple[int, dict[str, str], Any]:
    args = [a for name, value in headers.items() for a in ("-H", f"{name}: {value}")]
    return curl(gateway, *args, "-d", body)


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url) as resp:
        text = resp.read().decode()
    return {
        name: float(value)
        for name, _, value in (line.rpartition(" ") for line in text.splitlines())
        if name and not name.startswith("#")
    }


def test_a_response_reports_each_calls_cost_and_the_total(gateway: Gateway) -> None:
    before = scrape(f"{gateway.upstream_url}/metrics")
    status, headers, body = ask(
        gateway, {"x-ensemble-models": "cheap,mid", "x-ensemble-min-responses": "2"}
    )
    assert status == 200
    calls = {c["model"]: c for c in body["ensemble"]["candidates"]}
    for model in ("cheap", "mid"):
        assert calls[model]["usage"]["total_tokens"] > 0
        assert calls[model]["cost_usd"] == pytest.approx(usd(model, calls[model]["usage"]))
    cost = body["ensemble"]["cost"]
    total = usd("cheap", calls["cheap"]["usage"]) + usd("mid", calls["mid"]["usage"])
    assert cost["total_usd"] == pytest.approx(total)
    assert cost["complete"] is True
    assert cost["unknown"] == []
    assert float(headers["x-ensemble-cost-usd"]) == pytest.approx(total)
    assert "e" not in headers["x-ensemble-cost-usd"]  # a plain decimal
    assert "x-ensemble-cost-unknown" not in headers
    # The metric by model grew by each call's cost.
    after = scrape(f"{gateway.upstream_url}/metrics")
    for model in ("cheap", "mid"):
        key = f'ensemble_cost_usd_total{{model="{model}"}}'
        assert after[key] - before.get(key, 0.0) == pytest.approx(calls[model]["cost_usd"])


def test_a_model_without_a_price_is_reported_unknown_never_free(gateway: Gateway) -> None:
    status, headers, body = ask(
        gateway, {"x-ensemble-models": "cheap,unpriced", "x-ensemble-min-responses": "2"}
    )
    assert status == 200
    cost = body["ensemble"]["cost"]
    assert cost["complete"] is False
    assert cost["unknown"] == ["unpriced"]
    [unpriced] = [c for c in body["ensemble"]["candidates"] if c["model"] == "unpriced"]
    assert unpriced["cost_usd"] is None
    assert unpriced["cost_unknown"] == "no price declared for this model"
    assert headers["x-ensemble-cost-unknown"] == "unpriced"
    # The header is what is known: a lower bound.
    assert float(headers["x-ensemble-cost-usd"]) == pytest.approx(cost["total_usd"])
    metrics = scrape(f"{gateway.upstream_url}/metrics")
    assert metrics['ensemble_cost_unknown_calls_total{model="unpriced",reason="no_price"}'] >= 1


def test_the_summary_log_line_carries_the_cost(gateway: Gateway) -> None:
    _, headers, _ = ask(
        gateway, {"x-ensemble-models": "mid,cheap", "x-ensemble-min-responses": "2"}
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        summaries = [
            json.loads(line)["ensemble"]
            for line in gateway.log.read_text().splitlines()
            if line.startswith('{"time"') and '"ensemble": {' in line
        ]
        ours = [s for s in summaries if [c["model"] for c in s["calls"]] == ["mid", "cheap"]]
        if ours:
            entry = ours[-1]
            assert entry["cost_usd"] == pytest.approx(float(headers["x-ensemble-cost-usd"]))
            assert entry["cost_complete"] is True
            assert all(c["cost_usd"] > 0 for c in entry["calls"])
            return
        time.sleep(0.1)
    raise AssertionError("no summary log line for the probe")


def test_a_stream_reports_its_cost_in_the_final_chunk(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-ensemble-models": "cheap,mid", "x-ensemble-min-responses": "2"},
    )
    chunks = list(stream)
    [final] = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    ensemble: dict[str, Any] = final.model_extra["ensemble"]  # type: ignore[index]
    calls = {c["model"]: c for c in ensemble["candidates"]}
    assert ensemble["cost"]["total_usd"] == pytest.approx(
        usd("cheap", calls["cheap"]["usage"]) + usd("mid", calls["mid"]["usage"])
    )


# --- the cap ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["-0.01", "five cents", "nan", "1e999", "0,05"])
@pytest.mark.parametrize("ensembled", [True, False], ids=["ensembled", "not-ensembled"])
def test_a_bad_cap_is_the_clients_400(gateway: Gateway, value: str, ensembled: bool) -> None:
    headers = {"x-ensemble-max-cost-usd": value}
    if ensembled:
        headers["x-ensemble-models"] = "cheap,mid"
    status, _, body = ask(gateway, headers)
    assert status == 400
    assert body["error"]["code"] == "invalid_max_cost"
    assert body["error"]["param"] == "x-ensemble-max-cost-usd"


def test_a_cap_over_a_model_without_a_price_is_the_clients_400(gateway: Gateway) -> None:
    status, _, body = ask(
        gateway, {"x-ensemble-models": "cheap,unpriced", "x-ensemble-max-cost-usd": "1"}
    )
    assert status == 400
    assert body["error"]["code"] == "unpriced_models"
    assert "unpriced" in body["error"]["message"]


async def test_a_cap_no_call_fits_is_a_400_before_any_call(gateway: Gateway) -> None:
    url = gateway.demo_urls["cheap-backend"]
    before = await demo_stats(url)
    status, _, body = ask(
        gateway, {"x-ensemble-models": "cheap,mid", "x-ensemble-max-cost-usd": "0.000001"}
    )
    assert status == 400
    assert body["error"]["code"] == "max_cost_exceeded"
    assert "cheap 0.0000126" in body["error"]["message"]  # the estimate, per model
    assert (await demo_stats(url))["requests"] == before["requests"]


def cascade(gateway: Gateway, cap: str | None) -> tuple[dict[str, str], Any]:
    headers = {"x-ensemble-models": "cheap,mid", "x-ensemble-strategy": "cascade"}
    if cap is not None:
        headers["x-ensemble-max-cost-usd"] = cap
    status, resp_headers, body = ask(gateway, headers)
    assert status == 200
    return resp_headers, body


def test_a_cascade_stops_escalating_at_the_cap_and_says_so(gateway: Gateway) -> None:
    # Baseline: cheap is unsure, the cascade escalates to mid.
    headers, body = cascade(gateway, None)
    assert headers["x-ensemble-cascade-depth"] == "2"
    assert headers["x-ensemble-selected-model"] == "mid"
    assert "x-ensemble-cost-capped" not in headers
    # A cap that fits both: the same.
    headers, body = cascade(gateway, "1")
    assert headers["x-ensemble-cascade-depth"] == "2"
    assert body["ensemble"]["cost"]["max_usd"] == 1
    # A cap that fits cheap, not mid: the cascade stops at cheap's answer, and says so.
    headers, body = cascade(gateway, BETWEEN)
    ensemble = body["ensemble"]
    assert headers["x-ensemble-selected-model"] == "cheap"
    assert headers["x-ensemble-cascade-depth"] == "1"
    assert headers["x-ensemble-cost-capped"] == "mid"
    assert ensemble["cost"]["not_started"] == ["mid"]
    assert ensemble["details"]["cost_capped"] == ["mid"]
    assert "stopped at the cost cap: mid not started" in ensemble["reason"]
    [mid] = [c for c in ensemble["candidates"] if c["model"] == "mid"]
    assert mid["status"] == "over_budget"
    assert mid["cost_usd"] == 0
    assert "would pass the cost cap of 0.0001 USD" in mid["error"]
    assert ensemble["calls"]["started"] == 1
    assert ensemble["cost"]["total_usd"] <= float(BETWEEN)
    metrics = scrape(f"{gateway.upstream_url}/metrics")
    assert metrics['ensemble_cost_capped_calls_total{model="mid"}'] >= 1


def test_a_profiles_cap_applies_and_a_client_may_only_lower_it(gateway: Gateway) -> None:
    status, headers, body = ask(
        gateway, {}, chat_json(max_tokens=16).replace('"gpt-x"', '"thrifty"')
    )
    assert status == 200
    assert body["ensemble"]["cost"]["max_usd"] == pytest.approx(0.0001)
    assert headers["x-ensemble-cost-capped"] == "mid"
    # A client's higher cap does not raise it.
    status, headers, body = ask(
        gateway,
        {"x-ensemble-max-cost-usd": "5"},
        chat_json(max_tokens=16).replace('"gpt-x"', '"thrifty"'),
    )
    assert status == 200
    assert body["ensemble"]["cost"]["max_usd"] == pytest.approx(0.0001)


def test_hedging_stops_at_the_cap_and_says_so(tmp_path: Path) -> None:
    """first_success hedged after 100 ms: slow (600 ms) starts alone, then mid would hedge.
    Without a cap, mid's fast answer wins; under a cap that has no room for mid, the
    hedge is not started and slow's answer is the one."""
    with running_gateway(tmp_path, {}, raw=config(hedge_delay_ms=100), env=ENV) as gateway:
        headers = {"x-ensemble-models": "slow,mid", "x-ensemble-strategy": "first_success"}
        _, baseline, body = ask(gateway, headers)
        assert baseline["x-ensemble-selected-model"] == "mid"
        assert body["ensemble"]["calls"]["started"] == 2
        status, capped, body = ask(gateway, {**headers, "x-ensemble-max-cost-usd": BETWEEN})
    assert status == 200
    ensemble = body["ensemble"]
    assert capped["x-ensemble-selected-model"] == "slow"
    assert capped["x-ensemble-cost-capped"] == "mid"
    assert ensemble["calls"]["started"] == 1
    assert ensemble["details"]["cost_capped"] == ["mid"]
    assert "hedging stopped at the cost cap (mid)" in ensemble["reason"]
