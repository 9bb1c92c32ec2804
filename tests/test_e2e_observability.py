"""Metrics and logs of a running gateway: /metrics on the upstream and the processor,
JSON log lines with Envoy's request id, one summary line per ensemble."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from parts import Gateway, chat_json, curl

pytestmark = pytest.mark.e2e


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url) as resp:
        assert resp.headers["content-type"].startswith("text/plain")
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_after_a_few_requests(gateway: Gateway) -> None:
    curl(gateway, "-H", "x-ensemble-models: demo-fast,demo-medium,demo-slow", "-d", chat_json())
    curl(
        gateway,
        "-H",
        "x-ensemble-models: demo-fast,demo-broken",
        "-H",
        "x-ensemble-min-responses: 2",
        "-d",
        chat_json(),
    )
    curl(gateway, "-d", chat_json())
    # The processor refuses a model the config does not name (400 model_not_found).
    curl(gateway, "-H", "x-ensemble-models: demo-fast,no-such-model", "-d", chat_json())
    upstream = scrape(f"{gateway.upstream_url}/metrics")
    assert upstream['ensemble_requests_total{outcome="ok",strategy="voting"}'] >= 1
    assert upstream['ensemble_requests_total{outcome="quorum_not_met",strategy="voting"}'] >= 1
    assert upstream['ensemble_cancelled_calls_total{endpoint="demo-slow"}'] >= 1  # early stop
    assert any(
        k.startswith('ensemble_endpoint_errors_total{endpoint="demo-broken"') for k in upstream
    )
    assert upstream['ensemble_tokens_total{kind="prompt",model="demo-fast"}'] > 0
    # The circuit's state is a label, one-hot: exactly one state holds 1 per endpoint.
    circuit = {
        state: upstream[f'ensemble_circuit_state{{endpoint="demo-fast",state="{state}"}}']
        for state in ("closed", "half_open", "open")
    }
    assert circuit == {"closed": 1.0, "half_open": 0.0, "open": 0.0}
    assert upstream['ensemble_request_seconds_count{strategy="voting"}'] >= 2
    assert 'ensemble_agreement_ratio_bucket{le="1.0",strategy="voting"}' in upstream
    processor = scrape(gateway.extproc_metrics_url)
    assert processor['extproc_decisions_total{code="",decision="header"}'] >= 2
    assert processor['extproc_decisions_total{code="",decision="none"}'] >= 1
    # A rejected decision carries its error code.
    assert processor['extproc_decisions_total{code="model_not_found",decision="rejected"}'] >= 1
    # Each server exports its own process: CPU, memory, start time, Python.
    for samples in (upstream, processor):
        assert samples["process_cpu_seconds_total"] > 0
        assert samples["process_resident_memory_bytes"] > 0
        assert samples["process_start_time_seconds"] > 0
        assert any(k.startswith("python_info{") for k in samples)


def test_logs_are_json_with_the_request_id_and_one_summary_per_ensemble(
    gateway: Gateway,
) -> None:
    curl(gateway, "-H", "x-ensemble-models: demo-fast,demo-medium", "-d", chat_json("log probe"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [
            json.loads(line)
            for line in gateway.log.read_text().splitlines()
            if line.startswith('{"time"')
        ]
        summaries = [e for e in lines if e.get("component") == "upstream" and "ensemble" in e]
        probe = [
            e
            for e in summaries
            if e["ensemble"]["latency_ms"] >= 0
            and {c["model"] for c in e["ensemble"]["calls"]} == {"demo-fast", "demo-medium"}
        ]
        if probe:
            entry = probe[-1]
            assert entry["request_id"]  # Envoy's x-request-id
            assert entry["ensemble"]["winner"] == "demo-fast"
            assert "log probe" not in json.dumps(entry)  # no prompt text by default
            return
        time.sleep(0.1)
    raise AssertionError("no ensemble summary log line")


def get(url: str, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_trust_report_is_not_served_through_the_gateway(gateway: Gateway) -> None:
    """Asked through Envoy with ensemble headers, GET /admin/trust reaches the upstream on
    the ensemble route, which refuses it: the report is for the upstream's own port."""
    status, text = get(f"{gateway.url}/admin/trust", {"x-ensemble-models": "demo-fast,demo-medium"})
    assert status == 404
    assert json.loads(text)["error"]["code"] == "not_found"
    direct, report = get(f"{gateway.upstream_url}/admin/trust", {})
    assert direct == 200
    assert "keys" in json.loads(report)
