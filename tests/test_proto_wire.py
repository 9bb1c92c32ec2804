"""Wire compatibility of our protos/ subset with Envoy's ext_proc v3 API.

envoy-data-plane (betterproto2 classes generated from Envoy's own api/ protos) stands in for
Envoy. Each case builds the same message twice, once with envoy-data-plane and once with our
generated *_pb2 modules. Bytes from one side are decoded by the other and compared with that
side's own construction: message equality covers every field value, field presence and oneof
choice, and unknown fields are checked to be absent, so a field number, type or enum value
that differs from Envoy's fails the comparison. Across the cases, fields of the same type get
different values, so two of them swapped in numbering cannot go unnoticed.

A structural test also compares every field number, type and enum value of our descriptors
with envoy-data-plane's metadata, and the gRPC method path is checked both statically and over
a real loopback gRPC call made with envoy-data-plane's client stub.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import warnings
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import betterproto2
import grpc
import pytest
from google.protobuf import descriptor, duration_pb2, json_format, struct_pb2
from google.protobuf.message import Message

from ensemble_extproc._pb.envoy.config.core.v3 import base_pb2
from ensemble_extproc._pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from ensemble_extproc._pb.envoy.service.ext_proc.v3 import (
    external_processor_pb2,
    external_processor_pb2_grpc,
)
from ensemble_extproc._pb.envoy.type.v3 import http_status_pb2

# Defining envoy-data-plane's classes trips pydantic's PydanticDeprecatedSince212 warning,
# attributed to envoy_data_plane's modules, which the pyproject filters do not cover.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import envoy_data_plane.envoy.config.core.v3 as e_core
    import envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 as e_mode
    import envoy_data_plane.envoy.service.ext_proc.v3 as e_ext
    import envoy_data_plane.envoy.type.v3 as e_type
    from envoy_data_plane.google.protobuf import Struct as EStruct

EXT_PROC_NS = "envoy.filters.http.ext_proc"
PROCESS_PATH = "/envoy.service.ext_proc.v3.ExternalProcessor/Process"

OUR_FILES = (
    base_pb2.DESCRIPTOR,
    http_status_pb2.DESCRIPTOR,
    processing_mode_pb2.DESCRIPTOR,
    external_processor_pb2.DESCRIPTOR,
)

# Parts of Envoy's messages that our subset leaves out on purpose.
OMITTED_FIELDS = {
    "envoy.config.core.v3.Metadata.typed_filter_metadata",
    "envoy.service.ext_proc.v3.BodyMutation.streamed_response",
    "envoy.service.ext_proc.v3.ProcessingResponse.streamed_immediate_response",
}

# ---------------------------------------------------------------------------------------------
# Builders: one per library, same shape, so the cases below read side by side.


def pb_struct(value: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def e_struct(value: dict[str, Any]) -> EStruct:
    struct: EStruct = EStruct.from_dict(value)
    return struct


def pb_headers(*pairs: tuple[str, bytes]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v) for k, v in pairs])


def e_headers(*pairs: tuple[str, bytes]) -> e_core.HeaderMap:
    return e_core.HeaderMap(headers=[e_core.HeaderValue(key=k, raw_value=v) for k, v in pairs])


REQUEST_HEADERS = (
    (":method", b"POST"),
    (":path", b"/v1/chat/completions"),
    ("content-type", b"application/json"),
    ("x-binary", b"\x00\xff\xfe\x80 not utf-8"),
)
ATTRIBUTES = {"request.path": "/v1/chat/completions", "xds.route_name": "llm"}
FILTER_METADATA = {"tenant": "acme", "budget": 12.5, "tags": ["a", "b"], "flags": {"on": True}}
DYNAMIC_METADATA = {"ensemble": {"members": 3.0, "strategy": "vote", "cached": False}}
CHAT_BODY = b'{"model":"ensemble","messages":[{"role":"user","content":"hi"}]}'
NEW_BODY = b'{"model":"gpt-x","messages":[]}'
ERROR_BODY = b'{"error":{"message":"model is required","type":"invalid_request_error"}}'
GRPC_FRAME = b"\x01\x00\x00\x00\x02\x08\x01"
TIMEOUT = datetime.timedelta(seconds=2, milliseconds=500)

_E_OVERWRITE = e_core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD
_PB_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _case(envoy: betterproto2.Message, ours: Message, case_id: str) -> Any:
    return pytest.param(envoy, ours, id=case_id)


CASES = [
    _case(
        e_ext.ProcessingRequest(
            request_headers=e_ext.HttpHeaders(
                headers=e_headers(*REQUEST_HEADERS), end_of_stream=True
            ),
            metadata_context=e_core.Metadata(filter_metadata={"acme": e_struct(FILTER_METADATA)}),
            attributes={EXT_PROC_NS: e_struct(ATTRIBUTES)},
            observability_mode=True,
            protocol_config=e_ext.ProtocolConfiguration(
                request_body_mode=e_mode.ProcessingModeBodySendMode.BUFFERED,
                response_body_mode=e_mode.ProcessingModeBodySendMode.STREAMED,
                send_body_without_waiting_for_header_response=True,
            ),
        ),
        external_processor_pb2.ProcessingRequest(
            request_headers=external_processor_pb2.HttpHeaders(
                headers=pb_headers(*REQUEST_HEADERS), end_of_stream=True
            ),
            metadata_context=base_pb2.Metadata(
                filter_metadata={"acme": pb_struct(FILTER_METADATA)}
            ),
            attributes={EXT_PROC_NS: pb_struct(ATTRIBUTES)},
            observability_mode=True,
            protocol_config=external_processor_pb2.ProtocolConfiguration(
                request_body_mode=processing_mode_pb2.ProcessingMode.BUFFERED,
                response_body_mode=processing_mode_pb2.ProcessingMode.STREAMED,
                send_body_without_waiting_for_header_response=True,
            ),
        ),
        "request-request_headers",
    ),
    _case(
        e_ext.ProcessingRequest(
            request_headers=e_ext.HttpHeaders(
                headers=e_core.HeaderMap(headers=[e_core.HeaderValue(key="x-str", value="text")])
            )
        ),
        external_processor_pb2.ProcessingRequest(
            request_headers=external_processor_pb2.HttpHeaders(
                headers=base_pb2.HeaderMap(
                    headers=[base_pb2.HeaderValue(key="x-str", value="text")]
                )
            )
        ),
        "request-header_string_value",
    ),
    _case(
        e_ext.ProcessingRequest(request_body=e_ext.HttpBody(body=CHAT_BODY, end_of_stream=True)),
        external_processor_pb2.ProcessingRequest(
            request_body=external_processor_pb2.HttpBody(body=CHAT_BODY, end_of_stream=True)
        ),
        "request-request_body",
    ),
    _case(
        e_ext.ProcessingRequest(
            response_headers=e_ext.HttpHeaders(
                headers=e_headers((":status", b"200"), ("content-type", b"text/event-stream"))
            )
        ),
        external_processor_pb2.ProcessingRequest(
            response_headers=external_processor_pb2.HttpHeaders(
                headers=pb_headers((":status", b"200"), ("content-type", b"text/event-stream"))
            )
        ),
        "request-response_headers",
    ),
    _case(
        e_ext.ProcessingRequest(
            response_body=e_ext.HttpBody(
                body=b"", end_of_stream=True, end_of_stream_without_message=True
            )
        ),
        external_processor_pb2.ProcessingRequest(
            response_body=external_processor_pb2.HttpBody(
                body=b"", end_of_stream=True, end_of_stream_without_message=True
            )
        ),
        "request-response_body_grpc_end_without_message",
    ),
    _case(
        e_ext.ProcessingRequest(
            response_body=e_ext.HttpBody(body=GRPC_FRAME, grpc_message_compressed=True)
        ),
        external_processor_pb2.ProcessingRequest(
            response_body=external_processor_pb2.HttpBody(
                body=GRPC_FRAME, grpc_message_compressed=True
            )
        ),
        "request-response_body_grpc_compressed",
    ),
    _case(
        e_ext.ProcessingRequest(
            request_trailers=e_ext.HttpTrailers(trailers=e_headers(("x-req-trailer", b"1")))
        ),
        external_processor_pb2.ProcessingRequest(
            request_trailers=external_processor_pb2.HttpTrailers(
                trailers=pb_headers(("x-req-trailer", b"1"))
            )
        ),
        "request-request_trailers",
    ),
    _case(
        e_ext.ProcessingRequest(
            response_trailers=e_ext.HttpTrailers(trailers=e_headers(("grpc-status", b"0")))
        ),
        external_processor_pb2.ProcessingRequest(
            response_trailers=external_processor_pb2.HttpTrailers(
                trailers=pb_headers(("grpc-status", b"0"))
            )
        ),
        "request-response_trailers",
    ),
    _case(
        e_ext.ProcessingResponse(
            request_headers=e_ext.HeadersResponse(
                response=e_ext.CommonResponse(
                    header_mutation=e_ext.HeaderMutation(
                        set_headers=[
                            e_core.HeaderValueOption(
                                header=e_core.HeaderValue(key="x-ensemble-route", raw_value=b"b"),
                                append_action=_E_OVERWRITE,
                            ),
                            e_core.HeaderValueOption(
                                header=e_core.HeaderValue(key="x-empty", raw_value=b""),
                                append_action=e_core.HeaderValueOptionHeaderAppendAction.ADD_IF_ABSENT,
                                keep_empty_value=True,
                            ),
                        ],
                        remove_headers=["content-length", "x-api-key"],
                    ),
                    clear_route_cache=True,
                )
            ),
            mode_override=e_mode.ProcessingMode(
                request_body_mode=e_mode.ProcessingModeBodySendMode.NONE,
                response_header_mode=e_mode.ProcessingModeHeaderSendMode.SKIP,
            ),
        ),
        external_processor_pb2.ProcessingResponse(
            request_headers=external_processor_pb2.HeadersResponse(
                response=external_processor_pb2.CommonResponse(
                    header_mutation=external_processor_pb2.HeaderMutation(
                        set_headers=[
                            base_pb2.HeaderValueOption(
                                header=base_pb2.HeaderValue(key="x-ensemble-route", raw_value=b"b"),
                                append_action=_PB_OVERWRITE,
                            ),
                            base_pb2.HeaderValueOption(
                                header=base_pb2.HeaderValue(key="x-empty", raw_value=b""),
                                append_action=base_pb2.HeaderValueOption.ADD_IF_ABSENT,
                                keep_empty_value=True,
                            ),
                        ],
                        remove_headers=["content-length", "x-api-key"],
                    ),
                    clear_route_cache=True,
                )
            ),
            mode_override=processing_mode_pb2.ProcessingMode(
                request_body_mode=processing_mode_pb2.ProcessingMode.NONE,
                response_header_mode=processing_mode_pb2.ProcessingMode.SKIP,
            ),
        ),
        "response-request_headers_mutation_mode_override",
    ),
    _case(
        e_ext.ProcessingResponse(
            request_body=e_ext.BodyResponse(
                response=e_ext.CommonResponse(
                    status=e_ext.CommonResponseResponseStatus.CONTINUE_AND_REPLACE,
                    header_mutation=e_ext.HeaderMutation(
                        set_headers=[
                            e_core.HeaderValueOption(
                                header=e_core.HeaderValue(
                                    key="content-length", raw_value=str(len(NEW_BODY)).encode()
                                ),
                                append_action=_E_OVERWRITE,
                            )
                        ]
                    ),
                    body_mutation=e_ext.BodyMutation(body=NEW_BODY),
                )
            )
        ),
        external_processor_pb2.ProcessingResponse(
            request_body=external_processor_pb2.BodyResponse(
                response=external_processor_pb2.CommonResponse(
                    status=external_processor_pb2.CommonResponse.CONTINUE_AND_REPLACE,
                    header_mutation=external_processor_pb2.HeaderMutation(
                        set_headers=[
                            base_pb2.HeaderValueOption(
                                header=base_pb2.HeaderValue(
                                    key="content-length", raw_value=str(len(NEW_BODY)).encode()
                                ),
                                append_action=_PB_OVERWRITE,
                            )
                        ]
                    ),
                    body_mutation=external_processor_pb2.BodyMutation(body=NEW_BODY),
                )
            )
        ),
        "response-request_body_mutation",
    ),
    _case(
        e_ext.ProcessingResponse(
            response_body=e_ext.BodyResponse(
                response=e_ext.CommonResponse(
                    body_mutation=e_ext.BodyMutation(clear_body=True),
                    trailers=e_headers(("x-trailer", b"t")),
                )
            )
        ),
        external_processor_pb2.ProcessingResponse(
            response_body=external_processor_pb2.BodyResponse(
                response=external_processor_pb2.CommonResponse(
                    body_mutation=external_processor_pb2.BodyMutation(clear_body=True),
                    trailers=pb_headers(("x-trailer", b"t")),
                )
            )
        ),
        "response-response_body_clear_and_trailers",
    ),
    _case(
        e_ext.ProcessingResponse(
            response_headers=e_ext.HeadersResponse(response=e_ext.CommonResponse())
        ),
        external_processor_pb2.ProcessingResponse(
            response_headers=external_processor_pb2.HeadersResponse(
                response=external_processor_pb2.CommonResponse()
            )
        ),
        "response-response_headers_empty_common",
    ),
    _case(
        e_ext.ProcessingResponse(
            request_trailers=e_ext.TrailersResponse(
                header_mutation=e_ext.HeaderMutation(remove_headers=["x-req-trailer"])
            )
        ),
        external_processor_pb2.ProcessingResponse(
            request_trailers=external_processor_pb2.TrailersResponse(
                header_mutation=external_processor_pb2.HeaderMutation(
                    remove_headers=["x-req-trailer"]
                )
            )
        ),
        "response-request_trailers",
    ),
    _case(
        e_ext.ProcessingResponse(
            response_trailers=e_ext.TrailersResponse(
                header_mutation=e_ext.HeaderMutation(remove_headers=["grpc-message"])
            )
        ),
        external_processor_pb2.ProcessingResponse(
            response_trailers=external_processor_pb2.TrailersResponse(
                header_mutation=external_processor_pb2.HeaderMutation(
                    remove_headers=["grpc-message"]
                )
            )
        ),
        "response-response_trailers",
    ),
    _case(
        e_ext.ProcessingResponse(
            immediate_response=e_ext.ImmediateResponse(
                status=e_type.HttpStatus(code=e_type.StatusCode.BadRequest),
                headers=e_ext.HeaderMutation(
                    set_headers=[
                        e_core.HeaderValueOption(
                            header=e_core.HeaderValue(
                                key="content-type", raw_value=b"application/json"
                            ),
                            append_action=_E_OVERWRITE,
                        )
                    ],
                    remove_headers=["x-upstream"],
                ),
                body=ERROR_BODY,
                grpc_status=e_ext.GrpcStatus(status=3),
                details="ensemble_invalid_request",
            )
        ),
        external_processor_pb2.ProcessingResponse(
            immediate_response=external_processor_pb2.ImmediateResponse(
                status=http_status_pb2.HttpStatus(code=http_status_pb2.BadRequest),
                headers=external_processor_pb2.HeaderMutation(
                    set_headers=[
                        base_pb2.HeaderValueOption(
                            header=base_pb2.HeaderValue(
                                key="content-type", raw_value=b"application/json"
                            ),
                            append_action=_PB_OVERWRITE,
                        )
                    ],
                    remove_headers=["x-upstream"],
                ),
                body=ERROR_BODY,
                grpc_status=external_processor_pb2.GrpcStatus(status=3),
                details="ensemble_invalid_request",
            )
        ),
        "response-immediate_response_400",
    ),
    _case(
        e_ext.ProcessingResponse(
            response_headers=e_ext.HeadersResponse(response=e_ext.CommonResponse()),
            dynamic_metadata=e_struct(DYNAMIC_METADATA),
            override_message_timeout=TIMEOUT,
            request_drain=True,
        ),
        external_processor_pb2.ProcessingResponse(
            response_headers=external_processor_pb2.HeadersResponse(
                response=external_processor_pb2.CommonResponse()
            ),
            dynamic_metadata=pb_struct(DYNAMIC_METADATA),
            override_message_timeout=duration_pb2.Duration(seconds=2, nanos=500_000_000),
            request_drain=True,
        ),
        "response-dynamic_metadata_timeout_drain",
    ),
    _case(
        e_mode.ProcessingMode(
            request_header_mode=e_mode.ProcessingModeHeaderSendMode.SEND,
            response_header_mode=e_mode.ProcessingModeHeaderSendMode.SKIP,
            request_body_mode=e_mode.ProcessingModeBodySendMode.BUFFERED,
            response_body_mode=e_mode.ProcessingModeBodySendMode.STREAMED,
            request_trailer_mode=e_mode.ProcessingModeHeaderSendMode.SKIP,
            response_trailer_mode=e_mode.ProcessingModeHeaderSendMode.SEND,
        ),
        processing_mode_pb2.ProcessingMode(
            request_header_mode=processing_mode_pb2.ProcessingMode.SEND,
            response_header_mode=processing_mode_pb2.ProcessingMode.SKIP,
            request_body_mode=processing_mode_pb2.ProcessingMode.BUFFERED,
            response_body_mode=processing_mode_pb2.ProcessingMode.STREAMED,
            request_trailer_mode=processing_mode_pb2.ProcessingMode.SKIP,
            response_trailer_mode=processing_mode_pb2.ProcessingMode.SEND,
        ),
        "mode-all_fields",
    ),
    _case(
        e_mode.ProcessingMode(
            request_header_mode=e_mode.ProcessingModeHeaderSendMode.SKIP,
            request_body_mode=e_mode.ProcessingModeBodySendMode.FULL_DUPLEX_STREAMED,
            response_body_mode=e_mode.ProcessingModeBodySendMode.GRPC,
            request_trailer_mode=e_mode.ProcessingModeHeaderSendMode.SEND,
        ),
        processing_mode_pb2.ProcessingMode(
            request_header_mode=processing_mode_pb2.ProcessingMode.SKIP,
            request_body_mode=processing_mode_pb2.ProcessingMode.FULL_DUPLEX_STREAMED,
            response_body_mode=processing_mode_pb2.ProcessingMode.GRPC,
            request_trailer_mode=processing_mode_pb2.ProcessingMode.SEND,
        ),
        "mode-other_values",
    ),
    _case(
        e_mode.ProcessingMode(
            response_body_mode=e_mode.ProcessingModeBodySendMode.BUFFERED_PARTIAL
        ),
        processing_mode_pb2.ProcessingMode(
            response_body_mode=processing_mode_pb2.ProcessingMode.BUFFERED_PARTIAL
        ),
        "mode-buffered_partial",
    ),
]

CASES_BY_ID: dict[str, Any] = {case.id: case.values for case in CASES}


@pytest.mark.parametrize(("envoy_msg", "our_msg"), CASES)
def test_envoy_bytes_decode_with_our_stubs(
    envoy_msg: betterproto2.Message, our_msg: Message
) -> None:
    data = bytes(envoy_msg)
    assert data, "case must put something on the wire"
    decoded = type(our_msg).FromString(data)
    # Equality covers every field value and presence; unknown fields also make it differ.
    assert decoded == our_msg
    assert decoded.SerializeToString(deterministic=True) == our_msg.SerializeToString(
        deterministic=True
    )


@pytest.mark.parametrize(("envoy_msg", "our_msg"), CASES)
def test_our_bytes_decode_with_envoy_classes(
    envoy_msg: betterproto2.Message, our_msg: Message
) -> None:
    data = our_msg.SerializeToString()
    assert data, "case must put something on the wire"
    decoded = type(envoy_msg).parse(data)
    assert decoded == envoy_msg
    assert decoded._unknown_fields == b"", "fields Envoy does not know were sent"


# ---------------------------------------------------------------------------------------------
# Spelled-out checks of the messages the processor depends on most, field by field.


def test_request_headers_from_envoy_field_by_field() -> None:
    envoy_msg, _ = CASES_BY_ID["request-request_headers"]
    msg = external_processor_pb2.ProcessingRequest.FromString(bytes(envoy_msg))

    assert msg.WhichOneof("request") == "request_headers"
    assert [(h.key, h.value, h.raw_value) for h in msg.request_headers.headers.headers] == [
        (k, "", v) for k, v in REQUEST_HEADERS
    ]
    assert msg.request_headers.end_of_stream is True
    assert list(msg.attributes) == [EXT_PROC_NS]
    assert json_format.MessageToDict(msg.attributes[EXT_PROC_NS]) == ATTRIBUTES
    assert list(msg.metadata_context.filter_metadata) == ["acme"]
    acme = msg.metadata_context.filter_metadata["acme"]
    assert json_format.MessageToDict(acme) == FILTER_METADATA
    assert msg.observability_mode is True
    assert msg.protocol_config.request_body_mode == processing_mode_pb2.ProcessingMode.BUFFERED
    assert msg.protocol_config.response_body_mode == processing_mode_pb2.ProcessingMode.STREAMED
    assert msg.protocol_config.send_body_without_waiting_for_header_response is True


def test_header_mutation_response_to_envoy_field_by_field() -> None:
    _, our_msg = CASES_BY_ID["response-request_headers_mutation_mode_override"]
    msg = e_ext.ProcessingResponse.parse(our_msg.SerializeToString())

    assert betterproto2.which_one_of(msg, "response")[0] == "request_headers"
    assert msg.request_headers is not None
    common = msg.request_headers.response
    assert common is not None
    assert common.status == e_ext.CommonResponseResponseStatus.CONTINUE
    assert common.clear_route_cache is True
    assert common.body_mutation is None
    assert common.header_mutation is not None
    first, second = common.header_mutation.set_headers
    assert first.header == e_core.HeaderValue(key="x-ensemble-route", raw_value=b"b")
    assert first.append_action == _E_OVERWRITE
    assert first.keep_empty_value is False
    assert second.header == e_core.HeaderValue(key="x-empty", raw_value=b"")
    assert second.append_action == e_core.HeaderValueOptionHeaderAppendAction.ADD_IF_ABSENT
    assert second.keep_empty_value is True
    assert common.header_mutation.remove_headers == ["content-length", "x-api-key"]
    assert msg.mode_override is not None
    assert msg.mode_override.request_body_mode == e_mode.ProcessingModeBodySendMode.NONE
    assert msg.mode_override.response_header_mode == e_mode.ProcessingModeHeaderSendMode.SKIP
    assert msg.mode_override.request_header_mode == e_mode.ProcessingModeHeaderSendMode.DEFAULT


def test_immediate_response_and_metadata_to_envoy_field_by_field() -> None:
    _, our_immediate = CASES_BY_ID["response-immediate_response_400"]
    immediate = e_ext.ProcessingResponse.parse(our_immediate.SerializeToString())
    assert betterproto2.which_one_of(immediate, "response")[0] == "immediate_response"
    ir = immediate.immediate_response
    assert ir is not None
    assert ir.status == e_type.HttpStatus(code=e_type.StatusCode.BadRequest)
    assert int(ir.status.code) == 400
    assert ir.body == ERROR_BODY
    assert ir.details == "ensemble_invalid_request"
    assert ir.grpc_status == e_ext.GrpcStatus(status=3)
    assert ir.headers is not None
    assert [(o.header.key, o.header.raw_value) for o in ir.headers.set_headers if o.header] == [
        ("content-type", b"application/json")
    ]
    assert ir.headers.remove_headers == ["x-upstream"]

    _, our_with_meta = CASES_BY_ID["response-dynamic_metadata_timeout_drain"]
    with_meta = e_ext.ProcessingResponse.parse(our_with_meta.SerializeToString())
    assert with_meta.dynamic_metadata is not None
    assert with_meta.dynamic_metadata.to_dict() == DYNAMIC_METADATA
    assert with_meta.override_message_timeout == TIMEOUT
    assert with_meta.request_drain is True


# ---------------------------------------------------------------------------------------------
# Every field number, type and enum value against envoy-data-plane (i.e. Envoy's api/ protos).

_SCALAR_TYPES = {
    descriptor.FieldDescriptor.TYPE_BOOL: betterproto2.TYPE_BOOL,
    descriptor.FieldDescriptor.TYPE_BYTES: betterproto2.TYPE_BYTES,
    descriptor.FieldDescriptor.TYPE_STRING: betterproto2.TYPE_STRING,
    descriptor.FieldDescriptor.TYPE_UINT32: betterproto2.TYPE_UINT32,
    descriptor.FieldDescriptor.TYPE_ENUM: betterproto2.TYPE_ENUM,
    descriptor.FieldDescriptor.TYPE_MESSAGE: betterproto2.TYPE_MESSAGE,
}


def _walk_messages(
    containers: Iterator[descriptor.Descriptor],
) -> Iterator[descriptor.Descriptor]:
    for msg in containers:
        if msg.GetOptions().map_entry:
            continue
        yield msg
        yield from _walk_messages(iter(msg.nested_types))


def _our_messages() -> list[descriptor.Descriptor]:
    return [m for f in OUR_FILES for m in _walk_messages(iter(f.message_types_by_name.values()))]


def _our_enums() -> list[descriptor.EnumDescriptor]:
    enums = [e for f in OUR_FILES for e in f.enum_types_by_name.values()]
    enums += [e for m in _our_messages() for e in m.enum_types]
    return enums


def _envoy_class(desc: descriptor.Descriptor | descriptor.EnumDescriptor) -> Any:
    """envoy-data-plane's class for a message/enum: nested names are concatenated."""
    package = desc.file.package
    module = importlib.import_module(f"envoy_data_plane.{package}")
    return getattr(module, desc.full_name[len(package) + 1 :].replace(".", ""))


def _betterproto_type(field: descriptor.FieldDescriptor) -> str:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        return betterproto2.TYPE_MAP
    return _SCALAR_TYPES[field.type]


@pytest.mark.parametrize("msg", _our_messages(), ids=lambda m: m.full_name)
def test_message_fields_match_envoy(msg: descriptor.Descriptor) -> None:
    envoy_cls = _envoy_class(msg)
    envoy_fields = {
        f.name: betterproto2.FieldMetadata.get(f) for f in dataclasses.fields(envoy_cls)
    }
    for field in msg.fields:
        assert field.name in envoy_fields, f"{field.full_name} is not in Envoy's API"
        meta = envoy_fields[field.name]
        assert (field.number, _betterproto_type(field)) == (meta.number, meta.proto_type), (
            field.full_name
        )
        is_map = _betterproto_type(field) == betterproto2.TYPE_MAP
        assert bool(meta.repeated) == (field.is_repeated and not is_map), field.full_name
        assert bool(meta.optional) == field.has_presence, field.full_name
        oneof = field.containing_oneof
        assert (oneof.name if oneof else None) == meta.group, field.full_name
        if meta.unwrap is not None:  # wrapper types, e.g. google.protobuf.BoolValue
            assert field.message_type is not None
            assert field.message_type.full_name == f"google.protobuf.{meta.unwrap().__name__}"
    missing = {f"{msg.full_name}.{name}" for name in envoy_fields} - {
        f.full_name for f in msg.fields
    }
    assert missing <= OMITTED_FIELDS, f"fields of Envoy's {msg.full_name} we lack: {missing}"


def test_omitted_fields_are_really_envoy_fields() -> None:
    known = {
        f"{m.full_name}.{f.name}"
        for m in _our_messages()
        for f in dataclasses.fields(_envoy_class(m))
    }
    assert known >= OMITTED_FIELDS


@pytest.mark.parametrize("enum", _our_enums(), ids=lambda e: e.full_name)
def test_enum_values_match_envoy(enum: descriptor.EnumDescriptor) -> None:
    envoy_enum = _envoy_class(enum)
    ours = {v.name: v.number for v in enum.values}
    envoy = {(member.proto_name or member.name): member.value for member in envoy_enum}
    assert ours == envoy


def test_every_enum_is_covered() -> None:
    names = {e.full_name for e in _our_enums()}
    assert names == {
        "envoy.config.core.v3.HeaderValueOption.HeaderAppendAction",
        "envoy.type.v3.StatusCode",
        "envoy.extensions.filters.http.ext_proc.v3.ProcessingMode.HeaderSendMode",
        "envoy.extensions.filters.http.ext_proc.v3.ProcessingMode.BodySendMode",
        "envoy.service.ext_proc.v3.CommonResponse.ResponseStatus",
    }


# ---------------------------------------------------------------------------------------------
# gRPC service and method path.


def test_service_descriptor_method_path() -> None:
    file = external_processor_pb2.DESCRIPTOR
    assert file.package == "envoy.service.ext_proc.v3"
    service = file.services_by_name["ExternalProcessor"]
    method = service.methods_by_name["Process"]
    assert method.full_name == "envoy.service.ext_proc.v3.ExternalProcessor.Process"
    assert f"/{service.full_name}/{method.name}" == PROCESS_PATH
    assert method.input_type is external_processor_pb2.ProcessingRequest.DESCRIPTOR
    assert method.output_type is external_processor_pb2.ProcessingResponse.DESCRIPTOR
    assert method.client_streaming is True
    assert method.server_streaming is True


def test_generated_client_stub_uses_envoy_method_path() -> None:
    calls: list[str] = []

    class RecordingChannel:
        def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> object:
            calls.append(method)
            return object()

    external_processor_pb2_grpc.ExternalProcessorStub(RecordingChannel())  # type: ignore[call-overload]
    assert calls == [PROCESS_PATH]


class _EchoProcessor(external_processor_pb2_grpc.ExternalProcessorServicer):
    """Answers request_headers with a header mutation naming the first request header."""

    def Process(
        self,
        request_iterator: Iterator[external_processor_pb2.ProcessingRequest],
        context: grpc.ServicerContext,
    ) -> Iterator[external_processor_pb2.ProcessingResponse]:
        for request in request_iterator:
            first = request.request_headers.headers.headers[0]
            yield external_processor_pb2.ProcessingResponse(
                request_headers=external_processor_pb2.HeadersResponse(
                    response=external_processor_pb2.CommonResponse(
                        header_mutation=external_processor_pb2.HeaderMutation(
                            set_headers=[
                                base_pb2.HeaderValueOption(
                                    header=base_pb2.HeaderValue(
                                        key="x-seen", raw_value=first.key.encode() + first.raw_value
                                    ),
                                    append_action=_PB_OVERWRITE,
                                )
                            ]
                        )
                    )
                )
            )


def test_envoy_client_stub_reaches_our_servicer_over_grpc() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(_EchoProcessor(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = e_ext.ExternalProcessorSyncStub(channel)
            request = e_ext.ProcessingRequest(
                request_headers=e_ext.HttpHeaders(headers=e_headers((":path", b"/v1/models")))
            )
            responses = list(stub.process([request]))
    finally:
        server.stop(grace=None).wait()

    assert responses == [
        e_ext.ProcessingResponse(
            request_headers=e_ext.HeadersResponse(
                response=e_ext.CommonResponse(
                    header_mutation=e_ext.HeaderMutation(
                        set_headers=[
                            e_core.HeaderValueOption(
                                header=e_core.HeaderValue(
                                    key="x-seen", raw_value=b":path/v1/models"
                                ),
                                append_action=_E_OVERWRITE,
                            )
                        ]
                    )
                )
            )
        )
    ]
