"""Sending demo answers: JSON bodies, paced SSE streams and the stream-level faults.

Every sender reports how the exchange ended (``Outcome``) for ``/demo/stats``: a write
that fails because the client went away is ``CANCELLED``; so is a handler cancelled by
aiohttp on disconnect (the ``CancelledError`` propagates to the caller, which counts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import socket
import struct
from collections.abc import Mapping
from typing import Final, NoReturn

from aiohttp import web

from ensemble_extproc.config.demo import FaultKind
from ensemble_extproc.demo.payloads import JSONObject, StreamPlan, error_body

__all__ = [
    "DONE_EVENT",
    "MALFORMED_EVENT",
    "SSE_HEADERS",
    "STREAM_ERROR_EVENT",
    "Outcome",
    "close_connection",
    "reset_connection",
    "send_bytes",
    "send_dripping",
    "send_json",
    "send_stream",
    "sleep_ms",
    "sse_event",
    "wait_forever",
]

SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
DONE_EVENT: Final = b"data: [DONE]\n\n"
# What the malformed_sse fault sends in the middle of a stream.
MALFORMED_EVENT: Final = b"data: {not json\n\n"
# Events sent before the malformed one: the role chunk and the first piece.
_MALFORMED_AFTER: Final = 2


class Outcome(enum.Enum):
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


async def sleep_ms(milliseconds: float) -> None:
    if milliseconds > 0:  # no needless trip through the event loop for 0
        await asyncio.sleep(milliseconds / 1000)


async def wait_forever() -> NoReturn:
    """Block until cancelled (aiohttp cancels the handler when the client goes away)."""
    await asyncio.Event().wait()
    raise AssertionError("unreachable: nothing sets this event")


def sse_event(chunk: JSONObject) -> bytes:
    return f"data: {json.dumps(chunk)}\n\n".encode()


# What the stream_error fault sends where it breaks the answer.
STREAM_ERROR_EVENT: Final = sse_event(
    error_body("demo model: simulated fault stream_error", "server_error", "demo_fault")
)


async def send_json(
    request: web.Request,
    body: JSONObject,
    status: int,
    outcome: Outcome,
    headers: Mapping[str, str] | None = None,
) -> tuple[web.StreamResponse, Outcome]:
    return await _send(request, web.json_response(body, status=status, headers=headers), outcome)


async def send_bytes(
    request: web.Request, body: bytes, status: int, outcome: Outcome, content_type: str
) -> tuple[web.StreamResponse, Outcome]:
    response = web.Response(body=body, status=status, content_type=content_type)
    return await _send(request, response, outcome)


async def _send(
    request: web.Request, response: web.Response, outcome: Outcome
) -> tuple[web.StreamResponse, Outcome]:
    # Sent here rather than by aiohttp after return, so "completed" means fully sent.
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionResetError:
        return response, Outcome.CANCELLED
    return response, outcome


async def send_stream(
    request: web.Request,
    plan: StreamPlan,
    *,
    token_delay_ms: float,
    fault: FaultKind | None = None,
    drip_ms: float = 0,
    break_after: int | None = None,
) -> tuple[web.StreamResponse, Outcome]:
    """Stream the plan as SSE: the head, then the pieces ``token_delay_ms`` apart; with
    ``fault``, bent as ``demo.faults`` describes (``break_after``: its
    ``fault_after_pieces``)."""
    events = [(0.0, sse_event(plan.head))]
    events += [
        (token_delay_ms if index else 0.0, sse_event(chunk))
        for index, chunk in enumerate(plan.body)
    ]
    kept = (len(plan.body) + 1) // 2 if break_after is None else min(break_after, len(plan.body))
    if fault == "stream_stop":
        events = events[: 1 + kept]
    elif fault == "stream_error":
        events = [*events[: 1 + kept], (0.0, STREAM_ERROR_EVENT), (0.0, DONE_EVENT)]
    else:
        events += [(0.0, sse_event(chunk)) for chunk in plan.tail]
        if fault == "malformed_sse":
            events.insert(min(_MALFORMED_AFTER, len(events)), (0.0, MALFORMED_EVENT))
        if fault != "no_done":
            events.append((0.0, DONE_EVENT))
    if fault == "drip":
        data = b"".join(event for _, event in events)
        return await send_dripping(request, data, SSE_HEADERS, drip_ms)

    response = web.StreamResponse(headers=SSE_HEADERS)
    try:
        await response.prepare(request)
        for delay_ms, event in events:
            await sleep_ms(delay_ms)
            await response.write(event)
        if fault == "stream_stop":
            close_connection(request)
            return response, Outcome.COMPLETED
        if fault == "no_done":
            await wait_forever()
        await response.write_eof()
    except ConnectionResetError:
        # aiohttp finishes a response on a closed connection quietly; just count it.
        return response, Outcome.CANCELLED
    return response, Outcome.COMPLETED


async def send_dripping(
    request: web.Request, data: bytes, headers: Mapping[str, str], drip_ms: float
) -> tuple[web.StreamResponse, Outcome]:
    """Send the headers at once, then the body one byte every ``drip_ms`` (chunked)."""
    response = web.StreamResponse(headers=headers)
    response.enable_chunked_encoding()
    try:
        await response.prepare(request)  # a StreamResponse sends its headers right away
        for index in range(len(data)):
            if index:
                await sleep_ms(drip_ms)
            await response.write(data[index : index + 1])
        await response.write_eof()
    except ConnectionResetError:
        return response, Outcome.CANCELLED
    return response, Outcome.COMPLETED


def close_connection(request: web.Request) -> None:
    """Close the connection after what was written so far (FIN): a cut-off answer."""
    if request.transport is not None:
        request.transport.close()


def reset_connection(request: web.Request) -> None:
    """Drop the connection at once with a TCP reset (RST), sending nothing more."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        # SO_LINGER on with a zero timeout: closing sends RST instead of FIN.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
