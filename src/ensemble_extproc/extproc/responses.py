"""Builders of ProcessingResponse messages: the only place that knows their shape."""

from __future__ import annotations

from .. import headers as h
from .._pb.envoy.config.core.v3 import base_pb2 as core
from .._pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as modes
from .._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from .._pb.envoy.type.v3 import http_status_pb2 as http_status
from ..errors import ApiError
from ..spec import EnsembleSpec

Mode = modes.ProcessingMode
OVERWRITE = core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

# Headers decided everything: skip the request body and the whole response direction.
HEADERS_ONLY = Mode(
    request_body_mode=Mode.NONE,
    response_header_mode=Mode.SKIP,
    response_body_mode=Mode.NONE,
    request_trailer_mode=Mode.SKIP,
    response_trailer_mode=Mode.SKIP,
)


def _set(key: str, value: str) -> core.HeaderValueOption:
    return core.HeaderValueOption(
        header=core.HeaderValue(key=key, raw_value=value.encode()), append_action=OVERWRITE
    )


def passthrough(strip_route_header: bool) -> pb.ProcessingResponse:
    common = pb.CommonResponse()
    if strip_route_header:
        # The route was chosen with the client's copy of the header: remove it, re-route.
        common.header_mutation.remove_headers.append(h.ROUTE)
        common.clear_route_cache = True
    return pb.ProcessingResponse(
        request_headers=pb.HeadersResponse(response=common), mode_override=HEADERS_ONLY
    )


def reroute(spec: EnsembleSpec) -> pb.ProcessingResponse:
    # Overwrite, never append: a client-sent copy must not survive beside ours. The spec
    # headers are normalised so the upstream reads exactly what the processor decided.
    mutation = pb.HeaderMutation(
        set_headers=[
            _set(h.ROUTE, h.ROUTE_VALUE),
            _set(h.MODELS, ",".join(spec.models)),
            _set(h.STRATEGY, spec.strategy),
            _set(h.MIN_RESPONSES, str(spec.min_responses)),
        ]
    )
    common = pb.CommonResponse(header_mutation=mutation, clear_route_cache=True)
    return pb.ProcessingResponse(
        request_headers=pb.HeadersResponse(response=common), mode_override=HEADERS_ONLY
    )


def reject(error: ApiError) -> pb.ProcessingResponse:
    return pb.ProcessingResponse(
        immediate_response=pb.ImmediateResponse(
            status=http_status.HttpStatus(code=error.status),  # type: ignore[arg-type]
            headers=pb.HeaderMutation(set_headers=[_set("content-type", "application/json")]),
            body=error.body_bytes(),
            details=f"ensemble_extproc_{error.code}",
        )
    )


def continue_request_body() -> pb.ProcessingResponse:
    return pb.ProcessingResponse(request_body=pb.BodyResponse(response=pb.CommonResponse()))


def continue_response_headers() -> pb.ProcessingResponse:
    return pb.ProcessingResponse(response_headers=pb.HeadersResponse(response=pb.CommonResponse()))


def continue_response_body() -> pb.ProcessingResponse:
    return pb.ProcessingResponse(response_body=pb.BodyResponse(response=pb.CommonResponse()))


def continue_request_trailers() -> pb.ProcessingResponse:
    return pb.ProcessingResponse(request_trailers=pb.TrailersResponse())


def continue_response_trailers() -> pb.ProcessingResponse:
    return pb.ProcessingResponse(response_trailers=pb.TrailersResponse())
