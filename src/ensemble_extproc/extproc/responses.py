"""Builders of ProcessingResponse messages: the only place that knows their shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from google.protobuf import struct_pb2

from .._pb.envoy.config.core.v3 import base_pb2 as core
from .._pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as modes
from .._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from .._pb.envoy.type.v3 import http_status_pb2 as http_status
from ..envoy_names import PROCESSOR_REPLY
from ..errors import ApiError

Mode = modes.ProcessingMode
OVERWRITE = core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
Phase = Literal["headers", "body"]

# Headers decided everything: skip the request body and the whole response direction.
HEADERS_ONLY = Mode(
    request_body_mode=Mode.NONE,
    response_header_mode=Mode.SKIP,
    response_body_mode=Mode.NONE,
    request_trailer_mode=Mode.SKIP,
    response_trailer_mode=Mode.SKIP,
)


def _set(key: str, value: str) -> core.HeaderValueOption:
    # Overwrite, never append: a client-sent copy must not survive beside ours.
    return core.HeaderValueOption(
        header=core.HeaderValue(key=key, raw_value=value.encode()), append_action=OVERWRITE
    )


def metadata(namespace: str, facts: Mapping[str, str]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update({namespace: dict(facts)})
    return struct


def _respond(
    phase: Phase, common: pb.CommonResponse, facts: struct_pb2.Struct | None
) -> pb.ProcessingResponse:
    response = pb.ProcessingResponse(dynamic_metadata=facts)
    if phase == "headers":
        response.request_headers.response.CopyFrom(common)
        # Only honoured in a headers response: nothing more to send for this request.
        response.mode_override.CopyFrom(HEADERS_ONLY)
    else:
        response.request_body.response.CopyFrom(common)
    return response


def _removing(spoofed: Sequence[str]) -> pb.CommonResponse:
    """Go on without the client's copies of internal headers."""
    common = pb.CommonResponse()
    if spoofed:
        common.header_mutation.remove_headers.extend(spoofed)
        # The route was chosen with the client's headers: recompute it without them.
        common.clear_route_cache = True
    return common


def passthrough(
    phase: Phase, spoofed: Sequence[str], facts: struct_pb2.Struct | None
) -> pb.ProcessingResponse:
    """Continue to the default route; remove client copies of internal headers."""
    return _respond(phase, _removing(spoofed), facts)


def await_body(spoofed: Sequence[str]) -> pb.ProcessingResponse:
    """Headers answered, the body is still wanted: no mode override."""
    return pb.ProcessingResponse(request_headers=pb.HeadersResponse(response=_removing(spoofed)))


def reroute(
    phase: Phase,
    internal: Mapping[str, str],
    spoofed: Sequence[str],
    facts: struct_pb2.Struct | None,
) -> pb.ProcessingResponse:
    """Route to the ensemble: set the internal headers, drop the other client copies."""
    mutation = pb.HeaderMutation(
        set_headers=[_set(key, value) for key, value in internal.items()],
        remove_headers=[name for name in spoofed if name not in internal],
    )
    common = pb.CommonResponse(header_mutation=mutation, clear_route_cache=True)
    return _respond(phase, common, facts)


def reject(error: ApiError) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=http_status.HttpStatus(code=error.status),  # type: ignore[arg-type]
            headers=pb.HeaderMutation(
                set_headers=[
                    _set("content-type", "application/json"),
                    # e.g. Accept-Encoding with a 415, Retry-After with a 429.
                    *(_set(key.lower(), value) for key, value in error.headers.items()),
                ]
            ),
            body=error.body_bytes(),
            details=f"{PROCESSOR_REPLY}{error.code}",
        )
    )


# Answers for the phases the processor lets pass (its processing mode skips all but a body
# it no longer waits for): built once, as grpc serialises a message afresh for each write.
CONTINUE: Mapping[str, pb.ProcessingResponse] = {
    "request_body": pb.ProcessingResponse(
        request_body=pb.BodyResponse(response=pb.CommonResponse())
    ),
    "request_trailers": pb.ProcessingResponse(request_trailers=pb.TrailersResponse()),
    "response_headers": pb.ProcessingResponse(
        response_headers=pb.HeadersResponse(response=pb.CommonResponse())
    ),
    "response_body": pb.ProcessingResponse(
        response_body=pb.BodyResponse(response=pb.CommonResponse())
    ),
    "response_trailers": pb.ProcessingResponse(response_trailers=pb.TrailersResponse()),
}
