"""OpenTelemetry traces through the real Envoy: Envoy, the processor and the upstream
export over OTLP/gRPC to a small receiver on loopback (tools/otlp_tree.py), and one
request is one trace: Envoy's span -> its ext_proc call -> the processor's decision;
Envoy's span -> its upstream attempt -> the ensemble -> one span per call, cancelled and
retried ones included, each carrying its own traceparent to the model."""

from __future__ import annotations

import secrets
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tools.otlp_tree import Receiver, Span, tree

from capture import Capture, capture_server
from parts import Gateway, chat_json, curl, gateway_config, running_gateway

pytestmark = pytest.mark.e2e

ENVOY = "ensemble-extproc-envoy"
PROCESSOR = "ensemble-extproc-processor"
UPSTREAM = "ensemble-extproc-upstream"


@dataclass(frozen=True)
class Traced:
    gateway: Gateway
    receiver: Receiver
    provider: Capture


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    with Receiver() as receiver, capture_server(answer="Marseille") as provider:
        raw = gateway_config(
            {
                "tracing": {"enabled": True, "collector": receiver.endpoint},
                # A quick retry, so that the retried call ends before the early stop.
                "models": [
                    {"name": "provider", "url": provider.url(), "upstream_model": "gpt-4o-mini"}
                ],
            }
        )
        raw["ensemble"]["retries"] = {"attempts": 2, "backoff_ms": 1}
        # The SDK's batches leave every 50 ms instead of every 5 s.
        env = {"OTEL_BSP_SCHEDULE_DELAY": "50"}
        with running_gateway(tmp_path_factory.mktemp("traced"), {}, raw=raw, env=env) as gateway:
            # Envoy's tracer flushes every 5 s by default (its runtime keys).
            flush = (
                "tracing.opentelemetry.flush_interval_ms=50&tracing.opentelemetry.min_flush_spans=1"
            )
            request = urllib.request.Request(f"{gateway.admin_url}/runtime_modify?{flush}", b"")
            urllib.request.urlopen(request, timeout=5).read()
            yield Traced(gateway, receiver, provider)


def client_traceparent() -> tuple[str, str]:
    """A client's own trace context: (trace id, the header)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, f"00-{trace_id}-{span_id}-01"


def of_trace(
    receiver: Receiver, trace_id: str, upstream_spans: int, processor: bool = True
) -> dict[str, list[Span]]:
    """The trace's spans by name, once Envoy's root span, ``upstream_spans`` of the
    upstream's and (``processor``) the decision arrived."""

    def complete(spans: list[Span]) -> bool:
        mine = [s for s in spans if s.trace_id == trace_id]
        return (
            any(s.name == "ingress" for s in mine)
            and sum(s.service == UPSTREAM for s in mine) >= upstream_spans
            and (not processor or any(s.service == PROCESSOR for s in mine))
        )

    spans = [s for s in receiver.wait_for(complete) if s.trace_id == trace_id]
    by_name: dict[str, list[Span]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    return by_name


def test_one_trace_per_ensemble_with_a_span_per_call(traced: Traced) -> None:
    trace_id, traceparent = client_traceparent()
    members = "demo-fast,demo-medium,demo-slow,demo-broken"
    status, _, body = curl(
        traced.gateway,
        "-H",
        f"x-ensemble-models: {members}",
        "-H",
        f"traceparent: {traceparent}",
        "-d",
        chat_json(temperature=0.2),
    )
    assert status == 200, body
    # 1 ensemble + fast, medium, slow (cancelled) + broken twice (retried).
    spans = of_trace(traced.receiver, trace_id, upstream_spans=6)
    print(tree(s for group in spans.values() for s in group))  # the closing note's tree

    [ingress] = spans["ingress"]
    assert ingress.service == ENVOY
    assert ingress.parent_id == traceparent.split("-")[2]  # the client's span
    # Envoy -> its ext_proc call -> the processor's decision.
    [ext_proc] = spans["async envoy.service.ext_proc.v3.ExternalProcessor.Process egress"]
    assert ext_proc.parent_id == ingress.span_id
    [decision] = spans["ensemble decision"]
    assert (decision.service, decision.kind) == (PROCESSOR, "server")
    assert decision.parent_id == ext_proc.span_id
    assert decision.attributes["ensemble.decision"] == "header"
    assert decision.attributes["ensemble.strategy"] == "voting"
    assert decision.attributes["ensemble.models"] == members.split(",")
    # Envoy -> its upstream attempt -> the ensemble.
    [router] = [s for s in spans.get("router ensemble_or_default egress", [])]
    assert router.parent_id == ingress.span_id
    [ensemble] = spans["ensemble voting"]
    assert (ensemble.service, ensemble.kind) == (UPSTREAM, "server")
    assert ensemble.parent_id == router.span_id
    attributes = ensemble.attributes
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "gpt-x"  # what the client asked for
    assert attributes["gen_ai.request.temperature"] == 0.2
    assert attributes["ensemble.strategy"] == "voting"
    assert attributes["ensemble.outcome"] == "ok"
    assert attributes["ensemble.winner"] == body["ensemble"]["selected_model"] == "demo-fast"
    assert attributes["gen_ai.response.model"] == "demo-fast"
    assert attributes["ensemble.agreement"] == body["ensemble"]["agreement"]
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attributes["http.response.status_code"] == 200
    assert ensemble.status == "unset"

    calls = [s for s in spans.values() for s in s if s.parent_id == ensemble.span_id]
    assert all((c.service, c.kind) == (UPSTREAM, "client") for c in calls)
    by_model: dict[str, list[Span]] = {}
    for call in sorted(calls, key=lambda c: c.attributes["ensemble.call.attempt"]):
        by_model.setdefault(call.attributes["ensemble.call.model"], []).append(call)
    assert sorted(by_model) == sorted(members.split(","))
    for model in ("demo-fast", "demo-medium"):
        [ok] = by_model[model]
        assert ok.name == f"chat {model}"
        assert ok.attributes["gen_ai.request.model"] == model
        assert ok.attributes["gen_ai.response.model"] == model
        assert ok.attributes["gen_ai.provider.name"] == "openai"
        assert ok.attributes["gen_ai.operation.name"] == "chat"
        assert ok.attributes["ensemble.call.status"] == "ok"
        assert ok.attributes["gen_ai.usage.input_tokens"] > 0
        assert ok.attributes["gen_ai.usage.output_tokens"] > 0
        assert ok.attributes["gen_ai.response.finish_reasons"] == ["stop"]
        assert ok.attributes["server.address"] == "127.0.0.1"
        assert "error.type" not in ok.attributes
        assert ok.status == "unset"
    # The early stop cancelled the slow member: a span that says so, not an error.
    [slow] = by_model["demo-slow"]
    assert slow.attributes["ensemble.call.status"] == "cancelled"
    assert slow.attributes["error.type"] == "cancelled"
    [reported] = [c for c in body["ensemble"]["candidates"] if c["model"] == "demo-slow"]
    assert reported["status"] == "cancelled"
    assert slow.attributes["ensemble.call.error"] == reported["error"]  # the same reason
    assert slow.status == "unset"
    # The broken member was tried twice: two spans, the second a resend.
    [broken] = [c for c in body["ensemble"]["candidates"] if c["model"] == "demo-broken"]
    assert broken["attempts"] == 2
    first, second = by_model["demo-broken"]
    assert [
        first.attributes["ensemble.call.attempt"],
        second.attributes["ensemble.call.attempt"],
    ] == [1, 2]
    assert "http.request.resend_count" not in first.attributes
    assert second.attributes["http.request.resend_count"] == 1
    for attempt in (first, second):
        assert attempt.attributes["error.type"] == "500"
        assert attempt.attributes["http.response.status_code"] == 500
        assert attempt.status == "error"
    assert second.start_ns >= first.end_ns
    # The ensemble's usage is the sum of its calls' usage (what the request cost).
    for kind in ("input_tokens", "output_tokens"):
        key = f"gen_ai.usage.{kind}"
        assert attributes[key] == sum(c.attributes.get(key, 0) for c in calls)


def test_each_call_carries_its_own_span_as_traceparent(traced: Traced) -> None:
    trace_id, traceparent = client_traceparent()
    traced.provider.clear()
    status, _, body = curl(
        traced.gateway,
        "-H",
        "x-ensemble-models: provider,demo-fast",
        "-H",
        "x-ensemble-strategy: first_success",
        "-H",
        f"traceparent: {traceparent}",
        "-d",
        chat_json(),
    )
    assert status == 200, body
    spans = of_trace(traced.receiver, trace_id, upstream_spans=2)
    [provider_call] = spans["chat gpt-4o-mini"]  # the name the endpoint is sent
    assert provider_call.attributes["ensemble.call.model"] == "provider"
    assert provider_call.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    [seen] = traced.provider.requests
    assert seen.headers["traceparent"] == f"00-{trace_id}-{provider_call.span_id}-01"


def test_a_plain_request_is_a_trace_of_envoy_alone(traced: Traced) -> None:
    """No header the processor reads: Envoy routes it alone (issue 14), so the trace has
    Envoy's spans and no decision."""
    trace_id, traceparent = client_traceparent()
    status, _, body = curl(traced.gateway, "-H", f"traceparent: {traceparent}", "-d", chat_json())
    assert status == 200, body
    spans = of_trace(traced.receiver, trace_id, upstream_spans=0, processor=False)
    assert "ingress" in spans
    assert not any(s.service in (PROCESSOR, UPSTREAM) for g in spans.values() for s in g)


def decided(traced: Traced, header: str) -> tuple[int, Any, Span]:
    """A chat request with ``header`` and the client's traceparent: its status, body and
    the processor's decision span (no upstream span expected)."""
    trace_id, traceparent = client_traceparent()
    status, _, body = curl(
        traced.gateway, "-H", header, "-H", f"traceparent: {traceparent}", "-d", chat_json()
    )
    spans = of_trace(traced.receiver, trace_id, upstream_spans=0)
    assert not any(s.service == UPSTREAM for group in spans.values() for s in group)
    [decision] = spans["ensemble decision"]
    return status, body, decision


def test_a_request_the_processor_passes_is_a_trace_of_envoy_and_the_decision(
    traced: Traced,
) -> None:
    status, body, decision = decided(traced, "x-ensemble-enable: false")
    assert status == 200, body
    assert decision.attributes["ensemble.decision"] == "none"


def test_a_rejected_request_says_why(traced: Traced) -> None:
    status, body, decision = decided(traced, "x-ensemble-models: demo-fast,no-such-model")
    assert status == 400, body
    assert decision.attributes["ensemble.decision"] == "rejected"
    assert decision.attributes["error.type"] == body["error"]["code"]
    assert decision.attributes["http.response.status_code"] == 400


def test_the_span_tree_printer_shows_the_parent_links(tmp_path: Path) -> None:
    """tools/otlp_tree.py's tree, on spans made up here: children under their parent."""
    root = Span("t", "a", "", "ingress", "server", ENVOY, {}, "unset", 0, 10)
    child = Span("t", "b", "a", "ensemble voting", "server", UPSTREAM, {}, "unset", 1, 9)
    call = Span("t", "c", "b", "chat x", "client", UPSTREAM, {"error.type": "500"}, "error", 2, 3)
    assert tree([call, child, root]).splitlines() == [
        "trace t",
        f"└─ {ENVOY}: ingress [server] 0.0 ms",
        f"   └─ {UPSTREAM}: ensemble voting [server] 0.0 ms",
        f"      └─ {UPSTREAM}: chat x [client] 0.0 ms ERROR  error.type=500",
    ]
