"""What each endpoint receives: the client's fields, its own model name and credentials."""

from __future__ import annotations

import pytest

from ensemble_extproc.config import Endpoint
from ensemble_extproc.strategies.base import Call
from ensemble_extproc.upstream.client import HttpEndpointClient, forwardable
from ensemble_extproc.upstream.orchestrator import call_body

ENDPOINT = Endpoint("small", "http://127.0.0.1:9/v1/chat/completions", "org/small-7b")
REQUEST = {
    "model": "ensemble",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0.2,
    "max_tokens": 50,
    "max_completion_tokens": 60,
    "seed": 7,
    "response_format": {"type": "json_object"},
    "stop": ["\n\n"],
    "user": "u-1",
    "metadata": {"tier": "gold"},
    "x_vendor_field": {"keep": True},
    "stream": True,
    "stream_options": {"include_usage": True},
}


def test_fields_pass_through_with_the_model_rewritten() -> None:
    body = call_body(REQUEST, Call("small"), ENDPOINT, streaming=False)
    expected = {k: v for k, v in REQUEST.items() if k not in ("stream", "stream_options")}
    assert body == {**expected, "model": "org/small-7b"}


def test_a_relayed_call_streams_and_asks_for_usage() -> None:
    body = call_body(REQUEST, Call("small", relay=True), ENDPOINT, streaming=True)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_helper_calls_drop_fields_and_replace_messages() -> None:
    call = Call(
        "small",
        extra={"response_format": None, "logprobs": True},
        messages=({"role": "user", "content": "judge this"},),
    )
    body = call_body(REQUEST, call, ENDPOINT, streaming=False)
    assert "response_format" not in body
    assert body["logprobs"] is True
    assert body["messages"] == [{"role": "user", "content": "judge this"}]


@pytest.mark.parametrize(
    ("endpoint", "auth", "expected"),
    [
        (ENDPOINT, "Bearer client-key", None),
        (Endpoint("e", "http://h/v1", "m", api_key="sk-own"), "Bearer client-key", "Bearer sk-own"),
        (
            Endpoint("e", "http://h/v1", "m", forward_client_auth=True),
            "Bearer client-key",
            "Bearer client-key",
        ),
        (Endpoint("e", "http://h/v1", "m", forward_client_auth=True), None, None),
    ],
)
def test_credentials(endpoint: Endpoint, auth: str | None, expected: str | None) -> None:
    client = {"authorization": auth} if auth else {}
    headers = HttpEndpointClient._headers(endpoint, client)
    assert headers.get("authorization") == expected


def test_trace_context_goes_to_every_endpoint() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    client = forwardable({"traceparent": traceparent, "authorization": "Bearer k", "x-other": "1"})
    assert client == {"traceparent": traceparent, "authorization": "Bearer k"}
    headers = HttpEndpointClient._headers(ENDPOINT, client)
    assert headers["traceparent"] == traceparent
    assert "authorization" not in headers


def test_a_relayed_helper_call_streams_although_helpers_drop_stream() -> None:
    from ensemble_extproc.strategies.judging import HELPER_CALL_DROPS

    call = Call("small", extra=HELPER_CALL_DROPS, relay=True)
    body = call_body(REQUEST, call, ENDPOINT, streaming=True)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
