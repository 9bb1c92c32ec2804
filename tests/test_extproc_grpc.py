"""The processor over a real gRPC channel, speaking the ext_proc protocol as Envoy does."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from prometheus_client import CollectorRegistry

from ensemble_extproc._pb.envoy.config.core.v3 import base_pb2 as core
from ensemble_extproc._pb.envoy.extensions.filters.http.ext_proc.v3 import (
    processing_mode_pb2 as modes,
)
from ensemble_extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from ensemble_extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from ensemble_extproc.config import compile_config
from ensemble_extproc.internal import Binding, verify
from ensemble_extproc.observability.metrics import ProcessorMetrics

from helpers import headers_message, make_config, processor_stub

CONFIG = make_config({n: f"http://127.0.0.1:9/{n}" for n in ("m1", "m2", "m3")})
OVERWRITE = core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
Mode = modes.ProcessingMode


@pytest.fixture
async def stub() -> AsyncIterator[pb_grpc.ExternalProcessorStub]:
    async with processor_stub(CONFIG) as client:
        yield client


async def exchange(
    stub: pb_grpc.ExternalProcessorStub, *requests: pb.ProcessingRequest
) -> list[pb.ProcessingResponse]:
    call = stub.Process()
    responses = []
    for request in requests:
        await call.write(request)
        responses.append(await call.read())
    await call.done_writing()
    assert await call.read() == grpc.aio.EOF
    assert await call.code() == grpc.StatusCode.OK
    return responses


def set_headers(response: pb.ProcessingResponse) -> dict[str, tuple[bytes, int]]:
    mutation = response.request_headers.response.header_mutation
    return {o.header.key: (o.header.raw_value, o.append_action) for o in mutation.set_headers}


async def test_ensemble_headers_reroute_with_overwrite_and_route_clear(
    stub: pb_grpc.ExternalProcessorStub,
) -> None:
    [response] = await exchange(
        stub,
        headers_message({"x-ensemble-models": "m1, m2", "x-ensemble-route": "spoofed"}),
    )
    assert response.WhichOneof("response") == "request_headers"
    common = response.request_headers.response
    assert common.clear_route_cache is True
    assert set_headers(response) == {
        "x-ensemble-route": (b"ensemble", OVERWRITE),
        "x-ensemble-models": (b"m1,m2", OVERWRITE),
        "x-ensemble-strategy": (b"voting", OVERWRITE),
        "x-ensemble-min-responses": (b"2", OVERWRITE),
        "x-ensemble-decision": (b"header", OVERWRITE),
    }
    # Headers decided: no body round trip, no response-direction messages.
    assert response.mode_override.request_body_mode == Mode.NONE
    assert response.mode_override.response_header_mode == Mode.SKIP


async def test_plain_request_passes_untouched(stub: pb_grpc.ExternalProcessorStub) -> None:
    [response] = await exchange(stub, headers_message({"content-type": "application/json"}))
    common = response.request_headers.response
    assert not common.HasField("header_mutation")
    assert common.clear_route_cache is False
    assert response.mode_override.request_body_mode == Mode.NONE


async def test_spoofed_route_header_is_removed_and_route_recomputed(
    stub: pb_grpc.ExternalProcessorStub,
) -> None:
    [response] = await exchange(stub, headers_message({"x-ensemble-route": "ensemble"}))
    common = response.request_headers.response
    assert list(common.header_mutation.remove_headers) == ["x-ensemble-route"]
    assert not common.header_mutation.set_headers
    assert common.clear_route_cache is True


async def test_bad_header_gets_an_immediate_openai_error(
    stub: pb_grpc.ExternalProcessorStub,
) -> None:
    [response] = await exchange(stub, headers_message({"x-ensemble-models": "m1,unknown"}))
    immediate = response.immediate_response
    assert immediate.status.code == 400
    body = json.loads(immediate.body)
    assert body["error"]["code"] == "model_not_found"
    assert "unknown" in body["error"]["message"]
    assert {(o.header.key, o.header.raw_value) for o in immediate.headers.set_headers} == {
        ("content-type", b"application/json")
    }
    assert immediate.details == "ensemble_extproc_model_not_found"


async def test_every_phase_gets_exactly_one_answer(stub: pb_grpc.ExternalProcessorStub) -> None:
    """If Envoy sends the body (no mode override honoured), the processor still answers."""
    requests = [
        headers_message({}),
        pb.ProcessingRequest(request_body=pb.HttpBody(body=b"{}", end_of_stream=True)),
        pb.ProcessingRequest(response_headers=pb.HttpHeaders()),
        pb.ProcessingRequest(response_body=pb.HttpBody(body=b"x", end_of_stream=True)),
    ]
    responses = await exchange(stub, *requests)
    kinds = [r.WhichOneof("response") for r in responses]
    assert kinds == ["request_headers", "request_body", "response_headers", "response_body"]


async def test_many_streams_on_one_channel(stub: pb_grpc.ExternalProcessorStub) -> None:
    for i in range(20):
        headers = {"x-ensemble-models": "m1,m2,m3"} if i % 2 else {}
        [response] = await exchange(stub, headers_message(headers))
        assert response.request_headers.response.clear_route_cache is bool(i % 2)


# ------------------------------------------------------------- body-based decisions

SECRET = b"0123456789abcdef-test-secret"
POLICY_CONFIG = compile_config(
    {
        "models": [{"name": n, "url": f"http://127.0.0.1:9/{n}"} for n in ("m1", "m2", "m3")],
        "profiles": {"critical": {"models": ["m1", "m2", "m3"], "timeout_seconds": 7}},
        "rules": [
            {
                "name": "medical",
                "profile": "critical",
                "match": {"last_user_message": {"keywords": ["dosage"]}},
            }
        ],
    },
    environ={"ENSEMBLE_INTERNAL_SECRET": SECRET.decode()},
)


@pytest.fixture
async def policy_stub() -> AsyncIterator[pb_grpc.ExternalProcessorStub]:
    async with processor_stub(POLICY_CONFIG) as client:
        yield client


def body_message(payload: bytes) -> pb.ProcessingRequest:
    return pb.ProcessingRequest(request_body=pb.HttpBody(body=payload, end_of_stream=True))


async def test_a_rule_on_the_body_reroutes_in_the_body_response(
    policy_stub: pb_grpc.ExternalProcessorStub,
) -> None:
    chat = {"model": "x", "messages": [{"role": "user", "content": "Max dosage?"}]}
    first, second = await exchange(
        policy_stub,
        headers_message({"x-ensemble-profile": "spoofed", "x-request-id": "rid-1"}),
        body_message(json.dumps(chat).encode()),
    )
    # Headers: the body is wanted (no mode override), the spoofed header goes.
    assert not first.HasField("mode_override")
    assert list(first.request_headers.response.header_mutation.remove_headers) == [
        "x-ensemble-profile"
    ]
    # Body: the rule decided; headers are set in the body response, route recomputed.
    common = second.request_body.response
    assert common.clear_route_cache is True
    values = {o.header.key: o.header.raw_value.decode() for o in common.header_mutation.set_headers}
    assert values["x-ensemble-route"] == "ensemble"
    assert values["x-ensemble-profile"] == "critical"
    assert values["x-ensemble-decision"] == "rule:medical"
    assert values["x-ensemble-timeout"] == "7"
    # Signed for this request: its Envoy request id, method and path.
    binding = Binding("rid-1", "POST", "/v1/chat/completions")
    assert verify(SECRET, values, binding, time.time(), 10).ok
    assert not verify(b"another-secret-entirely", values, binding, time.time(), 10).ok
    other = Binding("rid-2", "POST", "/v1/chat/completions")
    assert not verify(SECRET, values, other, time.time(), 10).ok
    facts = second.dynamic_metadata.fields["ensemble_extproc"].struct_value.fields
    assert facts["decision"].string_value == "rule:medical"
    assert facts["profile"].string_value == "critical"


async def test_a_body_that_is_not_json_is_a_400(
    policy_stub: pb_grpc.ExternalProcessorStub,
) -> None:
    _, second = await exchange(policy_stub, headers_message({}), body_message(b"{nope"))
    assert second.immediate_response.status.code == 400
    assert json.loads(second.immediate_response.body)["error"]["code"] == "invalid_json"


async def test_a_request_without_a_body_is_decided_on_headers(
    policy_stub: pb_grpc.ExternalProcessorStub,
) -> None:
    [response] = await exchange(policy_stub, headers_message({}, end_of_stream=True))
    assert response.HasField("mode_override")
    facts = response.dynamic_metadata.fields["ensemble_extproc"].struct_value.fields
    assert facts["decision"].string_value == "none"


# ------------------------------------------------------- prebuilt answers and metrics


async def test_prebuilt_answers_never_carry_another_requests_part(
    policy_stub: pb_grpc.ExternalProcessorStub,
) -> None:
    """The plain pass-through and the wait for the body are built once and reused: a
    request with headers to remove, or a confidence, gets its own, and the next plain
    one is plain again."""
    chat = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    plain = await exchange(policy_stub, headers_message({}), body_message(chat))
    spoofed = await exchange(
        policy_stub, headers_message({"x-ensemble-route": "ensemble"}), body_message(chat)
    )
    again = await exchange(policy_stub, headers_message({}), body_message(chat))
    assert again == plain
    assert list(spoofed[0].request_headers.response.header_mutation.remove_headers) == [
        "x-ensemble-route"
    ]
    assert list(spoofed[1].request_body.response.header_mutation.remove_headers) == [
        "x-ensemble-route"
    ]
    for response in (plain[0], again[0]):
        assert not response.request_headers.response.HasField("header_mutation")
    facts = plain[1].dynamic_metadata.fields["ensemble_extproc"].struct_value.fields
    assert {k: v.string_value for k, v in facts.items()} == {"decision": "none", "reason": "none"}


async def test_metrics_count_streams_and_decisions_and_time_one_message_in_sixteen() -> None:
    metrics = ProcessorMetrics(CollectorRegistry(), sample_every=16)
    async with processor_stub(CONFIG, metrics) as stub:
        for i in range(32):
            headers = {"x-ensemble-models": "m1,nope"} if i % 4 == 0 else {}
            await exchange(stub, headers_message(headers))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
    }
    assert samples[("extproc_streams_total", ())] == 32
    assert samples[("extproc_open_streams", ())] == 0
    assert samples[("extproc_decisions_total", (("code", ""), ("decision", "none")))] == 24
    rejected = (("code", "model_not_found"), ("decision", "rejected"))
    assert samples[("extproc_decisions_total", rejected)] == 8
    timed = ("extproc_message_seconds_count", (("phase", "request_headers"),))
    assert samples[timed] == 2
