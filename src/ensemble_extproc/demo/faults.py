"""Fault modes of the demo models (``DemoModel.fault``), to test clients against bad backends.

A fault applies to every valid request that a seeded failure (``failure_rate``) spared,
after ``latency_ms``; bad requests are still answered 400. The kinds:

``status_500``
    HTTP 500 with an OpenAI error body.
``rate_limit``
    HTTP 429 with an OpenAI error body and ``Retry-After: <fault_retry_after_s>``.
``malformed_json``
    HTTP 200, ``application/json``, and a body cut off in the middle of the JSON.
``reset``
    The connection is dropped (TCP reset) without any response.
``hang``
    No response ever; the request ends when the client gives up.
``drip``
    A valid answer, sent one byte every ``fault_drip_ms`` (chunked), after its headers.
``stream_stop``
    Streaming: the role chunk and ``fault_after_pieces`` pieces (default: about half),
    then the connection is closed (no final chunk, no ``[DONE]``). Not streaming: like
    ``reset``.
``stream_error``
    Streaming: the role chunk and ``fault_after_pieces`` pieces (default: about half),
    then an error event (as a provider that fails mid-answer) and ``[DONE]``. Not
    streaming: no fault.
``no_done``
    Streaming: every chunk including the finish_reason one, but never ``[DONE]``; the
    connection stays open until the client gives up. Not streaming: no fault.
``malformed_sse``
    Streaming: a ``data:`` line that is not JSON after the first piece, then the rest
    of the stream as usual. Not streaming: no fault.
``echo_headers``
    A careless provider: HTTP ``failure_status`` (default 500) with an OpenAI error body
    whose message lists every request header it received, credentials included, and each
    of them back as an ``x-echo-<name>`` response header. Streaming: a 200 stream whose
    first event after the role chunk is such an error event, then ``[DONE]``.

In ``/demo/stats`` a request is counted under ``faults`` when its fault applied, and
under its outcome as any other: ``failed`` for an error status, ``cancelled`` when the
client went away first (always, for ``hang`` and ``no_done``), ``completed`` otherwise.
"""

from __future__ import annotations

import json
import uuid
from typing import Final

from aiohttp import web

from ensemble_extproc.config.demo import DemoModel, FaultKind
from ensemble_extproc.demo.payloads import JSONObject, error_body
from ensemble_extproc.demo.streaming import (
    DONE_EVENT,
    Outcome,
    reset_connection,
    send_bytes,
    send_dripping,
    send_json,
    sse_event,
    wait_forever,
)

__all__ = ["STREAM_ONLY_FAULTS", "applies", "drip_json", "serve_fault"]

# Faults about the SSE framing: a non-streamed answer is sent as usual.
STREAM_ONLY_FAULTS: Final[frozenset[FaultKind]] = frozenset(
    {"no_done", "malformed_sse", "stream_error"}
)


def applies(fault: FaultKind | None, stream: bool) -> bool:
    """Whether the fault changes the answer to a request (streamed or not)."""
    return fault is not None and (stream or fault not in STREAM_ONLY_FAULTS)


async def serve_fault(
    request: web.Request, model: DemoModel, fault: FaultKind, stream: bool
) -> tuple[web.StreamResponse, Outcome] | None:
    """Misbehave instead of answering; None for a fault that bends the answer itself
    (``drip``, and the stream faults of a streamed answer), which the senders apply."""
    if fault == "status_500":
        error = error_body(_message(model, fault), "server_error", "demo_fault")
        return await send_json(request, error, 500, Outcome.FAILED)
    if fault == "rate_limit":
        seconds = f"{model.fault_retry_after_s:g}"
        message = f"{_message(model, fault)}; retry after {seconds} s"
        error = error_body(message, "rate_limit_error", "rate_limit_exceeded")
        headers = {"Retry-After": seconds}
        return await send_json(request, error, 429, Outcome.FAILED, headers)
    if fault == "malformed_json":
        return await send_bytes(
            request, _truncated_completion(model), 200, Outcome.COMPLETED, "application/json"
        )
    if fault == "reset" or (fault == "stream_stop" and not stream):
        reset_connection(request)
        # Nothing can be sent any more: aiohttp's attempt to send this fails quietly.
        return web.Response(status=500), Outcome.COMPLETED
    if fault == "hang":
        await wait_forever()
    if fault == "echo_headers":
        return await _echo_headers(request, model, stream)
    return None


async def _echo_headers(
    request: web.Request, model: DemoModel, stream: bool
) -> tuple[web.StreamResponse, Outcome]:
    received = json.dumps(dict(request.headers))
    message = f"demo model {model.name} received these headers: {received}"
    kind = "server_error" if model.failure_status >= 500 else "invalid_request_error"
    error = error_body(message, kind)
    if not stream:
        echoed = {f"x-echo-{name.lower()}": value for name, value in request.headers.items()}
        return await send_json(request, error, model.failure_status, Outcome.FAILED, echoed)
    head = {"object": "chat.completion.chunk", "model": model.name}
    role = {**head, "choices": [{"index": 0, "delta": {"role": "assistant"}}]}
    events = sse_event(role) + sse_event(error) + DONE_EVENT
    return await send_bytes(request, events, 200, Outcome.FAILED, "text/event-stream")


async def drip_json(
    request: web.Request, body: JSONObject, drip_ms: float
) -> tuple[web.StreamResponse, Outcome]:
    """A non-streamed answer, one byte of its JSON every ``drip_ms``."""
    headers = {"Content-Type": "application/json; charset=utf-8"}
    return await send_dripping(request, json.dumps(body).encode(), headers, drip_ms)


def _message(model: DemoModel, fault: FaultKind) -> str:
    return f"demo model {model.name}: simulated fault {fault}"


def _truncated_completion(model: DemoModel) -> bytes:
    # The start of a chat completion, cut off where its choices begin.
    head = {
        "id": f"chatcmpl-demo-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "model": model.name,
    }
    return json.dumps(head).encode()[:-1] + b', "choices": ['
