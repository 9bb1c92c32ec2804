"""Tracing in one process: the processor over a real gRPC channel and the upstream over real
HTTP with demo models, their spans caught by the SDK's in-memory exporter; the attribute
names against the semantic conventions package; the switches; Envoy's rendered tracer.
(End to end through Envoy, with an OTLP receiver: test_e2e_tracing.py.)"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as semconv_genai
from opentelemetry.semconv.attributes import error_attributes, http_attributes, server_attributes
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ensemble_extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from ensemble_extproc.config import Address, ConfigError, compile_config
from ensemble_extproc.demo.server import DemoServers
from ensemble_extproc.envoy_bootstrap import bootstrap
from ensemble_extproc.extproc import create_server
from ensemble_extproc.observability import genai
from ensemble_extproc.observability.tracing import Tracing, TracingUnavailable, start_tracing
from ensemble_extproc.upstream import create_app

from helpers import chat, headers_message, make_config, processor_stub, serve_app


@pytest.fixture
def memory() -> Iterator[tuple[Tracing, InMemorySpanExporter]]:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing = Tracing(provider.get_tracer("test"), TraceContextTextMapPropagator(), provider)
    yield tracing, exporter
    provider.shutdown()


def traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def ids(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def parent_id(span: ReadableSpan) -> str:
    return f"{span.parent.span_id:016x}" if span.parent is not None else ""


# ------------------------------------------------------------------- names and switches


def test_attribute_names_are_the_semantic_conventions() -> None:
    """As the installed opentelemetry-semantic-conventions release spells them."""
    assert genai.OPERATION == semconv_genai.GEN_AI_OPERATION_NAME
    assert genai.PROVIDER == semconv_genai.GEN_AI_PROVIDER_NAME
    assert genai.REQUEST_MODEL == semconv_genai.GEN_AI_REQUEST_MODEL
    assert genai.RESPONSE_MODEL == semconv_genai.GEN_AI_RESPONSE_MODEL
    assert genai.INPUT_TOKENS == semconv_genai.GEN_AI_USAGE_INPUT_TOKENS
    assert genai.OUTPUT_TOKENS == semconv_genai.GEN_AI_USAGE_OUTPUT_TOKENS
    assert genai.FINISH_REASONS == semconv_genai.GEN_AI_RESPONSE_FINISH_REASONS
    assert genai.REQUEST_TEMPERATURE == semconv_genai.GEN_AI_REQUEST_TEMPERATURE
    assert genai.REQUEST_MAX_TOKENS == semconv_genai.GEN_AI_REQUEST_MAX_TOKENS
    assert genai.REQUEST_TOP_P == semconv_genai.GEN_AI_REQUEST_TOP_P
    assert semconv_genai.GenAiOperationNameValues.CHAT.value == genai.CHAT
    assert semconv_genai.GenAiProviderNameValues.OPENAI.value == genai.OPENAI
    assert genai.ERROR_TYPE == error_attributes.ERROR_TYPE
    assert genai.SERVER_ADDRESS == server_attributes.SERVER_ADDRESS
    assert genai.SERVER_PORT == server_attributes.SERVER_PORT
    assert genai.RESEND_COUNT == http_attributes.HTTP_REQUEST_RESEND_COUNT
    assert genai.HTTP_STATUS == http_attributes.HTTP_RESPONSE_STATUS_CODE


RAW = {"models": [{"name": "m1", "url": "http://127.0.0.1:9/v1"}]}


@pytest.mark.parametrize(
    ("section", "environ", "enabled"),
    [
        ({}, {}, False),  # off by default
        ({"enabled": True}, {}, True),
        ({}, {"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"enabled": True}, {"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"enabled": True}, {"OTEL_SDK_DISABLED": "true"}, False),
        ({}, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"}, False),
    ],
)
def test_tracing_is_switched_by_config_and_the_otel_variables(
    section: dict[str, Any], environ: dict[str, str], enabled: bool
) -> None:
    config = compile_config({**RAW, "tracing": section}, environ)
    assert config.tracing.enabled is enabled


def test_an_exporter_other_than_otlp_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as error:
        compile_config(RAW, {"OTEL_TRACES_EXPORTER": "zipkin"})
    assert "tracing.enabled" in str(error.value)
    assert "otlp" in str(error.value)


def test_tracing_off_starts_nothing_and_http_protocol_is_refused() -> None:
    config = compile_config(RAW, {})
    assert start_tracing(config.tracing, "processor", {}) is None
    on = compile_config({**RAW, "tracing": {"enabled": True}}, {})
    with pytest.raises(TracingUnavailable, match="OTLP/gRPC only"):
        start_tracing(on.tracing, "processor", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})


def test_tracing_on_exports_with_the_parts_service_name() -> None:
    on = compile_config({**RAW, "tracing": {"enabled": True, "service_name": "gw"}}, {})
    tracing = start_tracing(on.tracing, "upstream", {})
    assert tracing is not None
    try:
        assert tracing.provider.resource.attributes["service.name"] == "gw-upstream"
    finally:
        tracing.shutdown()
    named = start_tracing(on.tracing, "upstream", {"OTEL_SERVICE_NAME": "mine"})
    assert named is not None
    try:
        assert named.provider.resource.attributes["service.name"] == "mine"
    finally:
        named.shutdown()


def _hcm(rendered: dict[str, Any]) -> dict[str, Any]:
    listener = rendered["static_resources"]["listeners"][0]
    config: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def test_envoy_gets_its_opentelemetry_tracer_only_when_tracing_is_on() -> None:
    off = bootstrap(compile_config(RAW, {}))
    assert "tracing" not in _hcm(off)
    assert "otel_collector" not in {c["name"] for c in off["static_resources"]["clusters"]}
    on = bootstrap(
        compile_config(
            {
                **RAW,
                "tracing": {
                    "enabled": True,
                    "collector": "collector.internal:4317",
                    "sample_percent": 10,
                },
            },
            {},
        )
    )
    tracing = _hcm(on)["tracing"]
    assert tracing["provider"]["name"] == "envoy.tracers.opentelemetry"
    exporter = tracing["provider"]["typed_config"]
    assert exporter["grpc_service"]["envoy_grpc"]["cluster_name"] == "otel_collector"
    assert exporter["service_name"] == "ensemble-extproc-envoy"
    assert tracing["random_sampling"] == {"value": 10.0}
    [cluster] = [c for c in on["static_resources"]["clusters"] if c["name"] == "otel_collector"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {
        "address": "collector.internal",
        "port_value": 4317,
    }
    assert cluster["type"] == "STRICT_DNS"
    options = cluster["typed_extension_protocol_options"]
    assert "http2_protocol_options" in json.dumps(options)  # OTLP/gRPC


# ------------------------------------------------------------------------ the processor


PROCESSOR_CONFIG = make_config({n: f"http://127.0.0.1:9/{n}" for n in ("m1", "m2")})


async def test_the_decision_span_continues_envoys_trace_from_the_stream_metadata(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory
    trace_id, envoy_span, header = traceparent()
    _, client_span, client_header = traceparent()
    async with processor_stub(PROCESSOR_CONFIG, tracing=tracing) as stub:
        call = stub.Process(metadata=(("traceparent", header),))
        # The request's own traceparent (a client's) loses to Envoy's metadata.
        await call.write(
            headers_message({"x-ensemble-models": "m1,m2", "traceparent": client_header})
        )
        await call.read()
        await call.done_writing()
        assert await call.read() == grpc.aio.EOF
    [span] = exporter.get_finished_spans()
    assert span.name == "ensemble decision"
    assert span.kind is SpanKind.SERVER
    assert ids(span)[0] == trace_id
    assert parent_id(span) == envoy_span != client_span
    assert span.attributes is not None
    assert span.attributes["ensemble.decision"] == "header"
    assert span.attributes["ensemble.strategy"] == "voting"
    assert span.attributes["ensemble.models"] == ("m1", "m2")
    assert span.attributes["ensemble.decision.phase"] == "headers"


async def test_without_envoys_context_the_requests_traceparent_is_the_parent(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory
    trace_id, client_span, header = traceparent()
    async with processor_stub(PROCESSOR_CONFIG, tracing=tracing) as stub:
        call = stub.Process()
        await call.write(headers_message({"x-ensemble-models": "m1,nope", "traceparent": header}))
        response = await call.read()
        await call.done_writing()
    assert response.immediate_response.status.code == 400
    [span] = exporter.get_finished_spans()
    assert ids(span)[0] == trace_id
    assert parent_id(span) == client_span
    assert span.attributes is not None
    assert span.attributes["ensemble.decision"] == "rejected"
    assert (
        span.attributes["error.type"]
        == json.loads(response.immediate_response.body)["error"]["code"]
    )
    assert span.status.status_code is StatusCode.UNSET  # a client's mistake, not ours


async def test_a_stream_that_ends_before_its_decision_still_ends_its_span(
    memory: tuple[Tracing, InMemorySpanExporter],
) -> None:
    tracing, exporter = memory
    config = compile_config(
        {
            "models": [{"name": n, "url": f"http://127.0.0.1:9/{n}"} for n in ("m1", "m2")],
            "profiles": {"p": {"models": ["m1", "m2"]}},
            "rules": [
                {"name": "r", "profile": "p", "match": {"last_user_message": {"keywords": ["x"]}}}
            ],
        },
        {},
    )
    server, port = create_server(config, Address("127.0.0.1", 0), None, tracing)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = pb_grpc.ExternalProcessorStub(channel).Process()
            await call.write(headers_message({}))  # the rule reads the body: it is awaited
            await call.read()
            await call.done_writing()  # ... and never comes
            assert await call.read() == grpc.aio.EOF
    finally:
        await server.stop(None)
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["ensemble.decision.reason"] == "the stream ended before a decision"


# ------------------------------------------------------------------------- the upstream


@contextlib.asynccontextmanager
async def traced_upstream(
    demo: DemoServers, tracing: Tracing, **ensemble: Any
) -> AsyncIterator[str]:
    app = create_app(make_config(demo.urls, ensemble=ensemble), tracing=tracing)
    async with serve_app(app) as url:
        yield url


async def post(
    url: str, models: str, extra: dict[str, str] | None = None, **body: Any
) -> tuple[int, dict[str, Any]]:
    headers = {"x-ensemble-models": models, **(extra or {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/v1/chat/completions", json=chat(**body), headers=headers) as resp,
    ):
        text = await resp.text()
        return resp.status, json.loads(text) if not body.get("stream") else {"text": text}


def calls_of(exporter: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for span in exporter.get_finished_spans():
        if span.kind is SpanKind.CLIENT:
            assert span.attributes is not None
            out.setdefault(str(span.attributes["ensemble.call.model"]), []).append(span)
    return out


def ensemble_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    [span] = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    return span


async def test_the_ensemble_span_continues_the_requests_trace_and_parents_its_calls(
    demo: DemoServers, memory: tuple[Tracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = memory
    trace_id, router_span, header = traceparent()
    async with traced_upstream(demo, tracing) as url:
        status, body = await post(url, "demo-fast,demo-medium", {"traceparent": header})
    assert status == 200, body
    ensemble = ensemble_span(exporter)
    assert ensemble.name == "ensemble voting"
    assert ids(ensemble)[0] == trace_id
    assert parent_id(ensemble) == router_span
    for [call] in calls_of(exporter).values():
        assert ids(call)[0] == trace_id
        assert parent_id(call) == ids(ensemble)[1]


async def test_a_call_past_its_model_timeout_is_a_timeout_span(
    demo: DemoServers, memory: tuple[Tracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = memory
    async with traced_upstream(demo, tracing, model_timeout_seconds=0.2, retries=False) as url:
        status, body = await post(url, "demo-fast,demo-hang", **{})
    assert status == 502, body  # voting needs two answers
    [hang] = calls_of(exporter)["demo-hang"]
    assert hang.attributes is not None
    assert hang.attributes["ensemble.call.status"] == "timeout"
    assert hang.attributes["error.type"] == "timeout"
    assert "model_timeout_seconds" in str(hang.attributes["ensemble.call.error"])
    assert hang.status.status_code is StatusCode.ERROR
    ensemble = ensemble_span(exporter)
    assert ensemble.attributes is not None
    assert ensemble.attributes["ensemble.outcome"] == "quorum_not_met"
    assert ensemble.attributes["error.type"] == "quorum_not_met"
    assert ensemble.status.status_code is StatusCode.ERROR


async def test_a_call_cut_by_the_ensemble_deadline_says_so(
    demo: DemoServers, memory: tuple[Tracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = memory
    async with traced_upstream(demo, tracing, timeout_seconds=0.3) as url:
        status, body = await post(url, "demo-fast,demo-hang")
    assert status == 504, body
    [hang] = calls_of(exporter)["demo-hang"]
    assert hang.attributes is not None
    assert hang.attributes["ensemble.call.status"] == "timeout"
    assert hang.attributes["ensemble.call.error"] == "ensemble deadline of 0.3 s passed"
    ensemble = ensemble_span(exporter)
    assert ensemble.attributes is not None
    assert ensemble.attributes["ensemble.outcome"] == "deadline_exceeded"


async def test_a_call_skipped_by_an_open_circuit_is_a_span_of_no_length(
    demo: DemoServers, memory: tuple[Tracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = memory
    breaker = {"failures": 1, "window_seconds": 60, "cooldown_seconds": 60}
    async with traced_upstream(demo, tracing, circuit_breaker=breaker, retries=False) as url:
        await post(url, "demo-fast,demo-broken")  # opens demo-broken's circuit
        exporter.clear()
        await post(url, "demo-fast,demo-broken")
    [skipped] = calls_of(exporter)["demo-broken"]
    assert skipped.attributes is not None
    assert skipped.attributes["ensemble.call.status"] == "skipped"
    assert skipped.attributes["error.type"] == "skipped"
    assert skipped.attributes["ensemble.call.attempt"] == 0
    assert skipped.start_time == skipped.end_time
    assert skipped.status.status_code is StatusCode.UNSET


async def test_a_streamed_race_cancels_the_relay_that_lost(
    demo: DemoServers, memory: tuple[Tracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = memory
    async with traced_upstream(demo, tracing) as url:
        status, body = await post(
            url,
            "demo-fast,demo-slow",
            {"x-ensemble-strategy": "first_success"},
            stream=True,
        )
    assert status == 200, body
    calls = calls_of(exporter)
    [fast], [slow] = calls["demo-fast"], calls["demo-slow"]
    assert fast.attributes is not None
    assert slow.attributes is not None
    assert fast.attributes["ensemble.call.status"] == "ok"
    assert slow.attributes["ensemble.call.status"] == "cancelled"
    assert str(slow.attributes["ensemble.call.error"]).startswith("cancelled")
    ensemble = ensemble_span(exporter)
    assert ensemble.attributes is not None
    assert ensemble.name == "ensemble first_success"
    assert ensemble.attributes["ensemble.winner"] == "demo-fast"


async def test_judge_calls_are_spans_with_their_role(
    demo: DemoServers, memory: tuple[Tracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = memory
    async with traced_upstream(demo, tracing, reranking={"judge_model": "demo-judge"}) as url:
        status, body = await post(
            url, "demo-fast,demo-medium", {"x-ensemble-strategy": "reranking"}
        )
    assert status == 200, body
    [judge] = calls_of(exporter)["demo-judge"]
    assert judge.attributes is not None
    assert judge.attributes["ensemble.call.role"] == "judge"
    [member] = calls_of(exporter)["demo-fast"]
    assert member.attributes is not None
    assert member.attributes["ensemble.call.role"] == "member"


async def test_a_request_refused_before_any_ensemble_is_a_span_with_its_status(
    demo: DemoServers, memory: tuple[Tracing, InMemorySpanExporter]
) -> None:
    tracing, exporter = memory
    async with traced_upstream(demo, tracing) as url:
        status, body = await post(url, "demo-fast,no-such-model")
    assert status == 400, body
    ensemble = ensemble_span(exporter)
    assert ensemble.attributes is not None
    assert ensemble.attributes["error.type"] == "400"
    assert ensemble.attributes["http.response.status_code"] == 400
    assert calls_of(exporter) == {}
