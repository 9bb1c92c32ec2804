"""The Envoy bootstrap as envoy-data-plane's typed messages (Envoy's v3 API).

Every message is a pydantic dataclass: a misspelt field, a value of the wrong type or two
members of one ``oneof`` fail here, when the bootstrap is built, rather than when Envoy
loads it (and mypy checks the field names too). ``envoy_bootstrap`` imports this module
only when it builds a bootstrap, and serialises the result.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import os
from datetime import timedelta
from urllib.parse import urlsplit

from envoy_data_plane.envoy.config.accesslog import v3 as al
from envoy_data_plane.envoy.config.bootstrap import v3 as bs
from envoy_data_plane.envoy.config.cluster import v3 as cl
from envoy_data_plane.envoy.config.common.mutation_rules.v3 import (
    HeaderMutation as HeaderMutationRule,
)
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.endpoint import v3 as ep
from envoy_data_plane.envoy.config.listener import v3 as lis
from envoy_data_plane.envoy.config.route import v3 as rt
from envoy_data_plane.envoy.config.trace.v3 import OpenTelemetryConfig, TracingHttp
from envoy_data_plane.envoy.extensions.access_loggers.filters.cel.v3 import ExpressionFilter
from envoy_data_plane.envoy.extensions.access_loggers.stream.v3 import StdoutAccessLog
from envoy_data_plane.envoy.extensions.bootstrap.internal_listener.v3 import InternalListener
from envoy_data_plane.envoy.extensions.clusters.aggregate.v3 import ClusterConfig
from envoy_data_plane.envoy.extensions.filters.http.ext_proc import v3 as xp
from envoy_data_plane.envoy.extensions.filters.http.lua.v3 import Lua
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager import v3 as hcm
from envoy_data_plane.envoy.extensions.http.early_header_mutation.header_mutation.v3 import (
    HeaderMutation as EarlyHeaderMutation,
)
from envoy_data_plane.envoy.extensions.retry.host.previous_hosts.v3 import (
    PreviousHostsPredicate,
)
from envoy_data_plane.envoy.extensions.transport_sockets.tls import v3 as tls
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions,
    HttpProtocolOptionsExplicitHttpConfig,
)
from envoy_data_plane.envoy.type import v3 as envoy_type
from envoy_data_plane.envoy.type.matcher import v3 as matcher
from envoy_data_plane.google.protobuf import Any, Struct

from . import headers as h
from . import paths
from .config import Address, Config
from .config.model import EnvoySettings, RouterProcessor
from .envoy_names import (
    DEFAULT_CLUSTER,
    ENSEMBLE_CLUSTER,
    EXTPROC_CLUSTER,
    FALLBACK_CLUSTER,
    FALLBACK_DEFAULT_CLUSTER,
    FALLBACK_LISTENER,
    HTTP_PROTOCOL_OPTIONS,
    LOCAL_REPLIES,
    LOCAL_REPLY_OTHER_4XX,
    LOCAL_REPLY_OTHER_5XX,
    OTEL_CLUSTER,
    PROCESSOR_REPLY,
    ROUTER_CLUSTER,
    ROUTER_FILTER,
    RUNTIME_FLAGS,
    SERVED_BY_NS,
    SYSTEM_CA_BUNDLES,
    LocalReply,
    replica_addresses,
)
from .envoy_redact import lua_source
from .scope import Scope, scope

# Retry on another replica than the one that failed.
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"
_OTHER_HOST = Any.pack(PreviousHostsPredicate())
_ROUTE_OTHER_HOST = [
    rt.RetryPolicyRetryHostPredicate(name=PREVIOUS_HOSTS, typed_config=_OTHER_HOST)
]
_ROUTER = hcm.HttpFilter(name="envoy.filters.http.router", typed_config=Any.pack(Router()))
EXT_PROC_FILTER = "envoy.filters.http.ext_proc"
# What x-ensemble-decision and the access log say for a request the processor never saw.
NOT_ASKED = "none"
Append = core.HeaderValueOptionHeaderAppendAction
OVERWRITE = Append.OVERWRITE_IF_EXISTS_OR_ADD


def _header(key: str, value: str, action: Append = OVERWRITE) -> core.HeaderValueOption:
    return core.HeaderValueOption(
        header=core.HeaderValue(key=key, value=value), append_action=action
    )


def _address(address: Address) -> core.Address:
    return core.Address(
        socket_address=core.SocketAddress(address=address.host, port_value=address.port)
    )


def _replicas(name: str, addresses: list[Address], *, grpc: bool = False) -> cl.Cluster:
    """The cluster of our replicas (the processor's over gRPC), with active checks
    (/healthz, or gRPC health), so that a replica that drains (SIGTERM) or is down gets no
    new requests; plus ejection after one failure to connect, for a replica that died
    without draining."""
    check = core.HealthCheck(
        timeout=timedelta(seconds=0.5),
        interval=timedelta(seconds=0.5),
        # Also while no traffic flows (Envoy's default then is one check a minute).
        no_traffic_interval=timedelta(seconds=1),
        unhealthy_threshold=1,
        healthy_threshold=1,
        http_health_check=None if grpc else core.HealthCheckHttpHealthCheck(path="/healthz"),
        grpc_health_check=core.HealthCheckGrpcHealthCheck() if grpc else None,
    )
    # A new message (replace calls the constructor), so the added fields are validated too.
    return dataclasses.replace(
        _cluster(name, addresses, http2=grpc),
        health_checks=[check],
        # Envoy allows 3 retries in flight per cluster by default: a replica dying under
        # load fails many requests at once, and each needs its retry.
        circuit_breakers=cl.CircuitBreakers(
            thresholds=[cl.CircuitBreakersThresholds(max_retries=256)]
        ),
        outlier_detection=cl.OutlierDetection(
            split_external_local_origin_errors=True,
            consecutive_local_origin_failure=1,
            interval=timedelta(seconds=1),
            base_ejection_time=timedelta(seconds=5),
            max_ejection_percent=50,
        ),
        # Unhealthy means unhealthy: no panic routing to the hosts that failed.
        # (Percent's value 0 is proto3's default, so the YAML shows an empty Percent.)
        common_lb_config=cl.ClusterCommonLbConfig(
            healthy_panic_threshold=envoy_type.Percent(value=0)
        ),
    )


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _endpoints(
    name: str, addresses: list[core.Address], served_by: str
) -> ep.ClusterLoadAssignment:
    # Read back by x-ensemble-served-by: which cluster answered, also through the fallback
    # (aggregate) cluster.
    metadata = core.Metadata(
        filter_metadata={SERVED_BY_NS: Struct.from_dict({"served_by": served_by})}
    )
    endpoints = [
        ep.LbEndpoint(endpoint=ep.Endpoint(address=a), metadata=metadata) for a in addresses
    ]
    return ep.ClusterLoadAssignment(
        cluster_name=name, endpoints=[ep.LocalityLbEndpoints(lb_endpoints=endpoints)]
    )


def system_ca_bundle() -> str:
    return next((path for path in SYSTEM_CA_BUNDLES if os.path.exists(path)), SYSTEM_CA_BUNDLES[0])


def _tls_socket(host: str, ca_file: str | None) -> core.TransportSocket:
    """Verified TLS, as a client library would do it: the chain against the system CAs (or
    the model's ca_file only), the certificate must name the host, and SNI names it too.
    (Envoy checks neither the chain nor the name without a validation context.)"""
    ip = _is_ip(host)
    kind = tls.SubjectAltNameMatcherSanType
    san = tls.SubjectAltNameMatcher(
        san_type=kind.IP_ADDRESS if ip else kind.DNS, matcher=matcher.StringMatcher(exact=host)
    )
    validation = tls.CertificateValidationContext(
        trusted_ca=core.DataSource(filename=ca_file or system_ca_bundle()),
        match_typed_subject_alt_names=[san],
    )
    context = tls.UpstreamTlsContext(
        # SNI carries host names only (RFC 6066).
        sni="" if ip else host,
        common_tls_context=tls.CommonTlsContext(validation_context=validation),
    )
    return core.TransportSocket(name="envoy.transport_sockets.tls", typed_config=Any.pack(context))


def _cluster(
    name: str,
    address: Address | list[Address],
    *,
    http2: bool = False,
    transport_socket: core.TransportSocket | None = None,
) -> cl.Cluster:
    addresses = address if isinstance(address, list) else [address]
    dns = not _is_ip(addresses[0].host)
    http2_only = HttpProtocolOptionsExplicitHttpConfig(
        http2_protocol_options=core.Http2ProtocolOptions()
    )
    options = {
        HTTP_PROTOCOL_OPTIONS: Any.pack(HttpProtocolOptions(explicit_http_config=http2_only))
    }
    return cl.Cluster(
        name=name,
        type=cl.ClusterDiscoveryType.STRICT_DNS if dns else cl.ClusterDiscoveryType.STATIC,
        # Envoy's default (AUTO) takes only the IPv6 answer when there is one: "localhost"
        # became ::1 alone, and a server listening on 127.0.0.1 got no request at all.
        dns_lookup_family=(
            cl.ClusterDnsLookupFamily.V4_PREFERRED if dns else cl.ClusterDnsLookupFamily.AUTO
        ),
        connect_timeout=timedelta(seconds=1),
        load_assignment=_endpoints(name, [_address(each) for each in addresses], name),
        transport_socket=transport_socket,
        typed_extension_protocol_options=options if http2 else {},
    )


def _ext_proc(
    name: str,
    cluster: str,
    settings: EnvoySettings | RouterProcessor,
    bodies: tuple[str, bool, str],
    *,
    retry_policy: core.RetryPolicy | None = None,
    stat_prefix: str = "",
    metadata_options: xp.MetadataOptions | None = None,
    disabled: bool = False,
) -> hcm.HttpFilter:
    """An ext_proc filter. ``bodies``: the request body mode, whether response headers are
    sent, the response body mode; request headers always are, trailers never."""
    request_body, response_headers, response_body = bodies
    header_mode, body_mode = xp.ProcessingModeHeaderSendMode, xp.ProcessingModeBodySendMode
    processor = xp.ExternalProcessor(
        grpc_service=core.GrpcService(
            envoy_grpc=core.GrpcServiceEnvoyGrpc(cluster_name=cluster), retry_policy=retry_policy
        ),
        stat_prefix=stat_prefix,
        # Ours is closed by default: with the processor down, a spoofed routing header must
        # not pass. (False is proto3's default, so a closed filter's YAML omits the field.)
        failure_mode_allow=settings.failure_mode == "open",
        message_timeout=timedelta(seconds=settings.message_timeout_ms / 1000),
        # The processor skips the body round trip when the headers decide.
        allow_mode_override=True,
        metadata_options=metadata_options,
        processing_mode=xp.ProcessingMode(
            request_header_mode=header_mode.SEND,
            response_header_mode=header_mode.SEND if response_headers else header_mode.SKIP,
            request_body_mode=body_mode[request_body.upper()],
            response_body_mode=body_mode[response_body.upper()],
            request_trailer_mode=header_mode.SKIP,
            response_trailer_mode=header_mode.SKIP,
        ),
    )
    return hcm.HttpFilter(name=name, disabled=disabled, typed_config=Any.pack(processor))


def _http_filters(config: Config, every_request: bool) -> list[hcm.HttpFilter]:
    """The semantic router's ext_proc ahead of ours (ours sees the request as the router
    left it, its x-vsr-* headers set, and has the last word on the route), ours, the
    masking of model keys, and the router."""
    filters = []
    router = config.semantic_router.extproc
    if router is not None:
        bodies = (router.request_body, router.response_headers, router.response_body)
        filters.append(
            _ext_proc(ROUTER_FILTER, ROUTER_CLUSTER, router, bodies, stat_prefix="semantic_router")
        )
    ours = _ext_proc(
        EXT_PROC_FILTER,
        EXTPROC_CLUSTER,
        config.envoy,
        ("buffered", False, "none"),
        # A stream that cannot be opened on one processor replica opens on another.
        retry_policy=core.RetryPolicy(
            retry_on="connect-failure,refused-stream,unavailable",
            num_retries=2,
            retry_back_off=core.BackoffStrategy(
                base_interval=timedelta(seconds=0.01), max_interval=timedelta(seconds=0.05)
            ),
            retry_host_predicate=[
                core.RetryPolicyRetryHostPredicate(name=PREVIOUS_HOSTS, typed_config=_OTHER_HOST)
            ],
        ),
        # The processor's decision facts, read by response headers and access logs.
        metadata_options=xp.MetadataOptions(
            receiving_namespaces=xp.MetadataOptionsMetadataNamespaces(
                untyped=[config.metadata_namespace]
            )
        ),
        # Off by default, on where a route says so (``_with_processor``): on the other
        # routes Envoy does not even create the filter.
        disabled=not every_request,
    )
    filters.append(ours)
    # Model keys masked in what Envoy relays (envoy_redact): only when a model has one.
    names = sorted({e.api_key_env for e in config.endpoints.values() if e.api_key_env})
    if names:
        source = core.DataSource(inline_string=lua_source(names))
        lua = Lua(default_source_code=source)
        filters.append(hcm.HttpFilter(name="envoy.filters.http.lua", typed_config=Any.pack(lua)))
    return [*filters, _ROUTER]


def _status_is(op: al.ComparisonFilterOp, status: int) -> al.AccessLogFilter:
    comparison = al.ComparisonFilter(
        op=op, value=core.RuntimeUInt32(default_value=status, runtime_key=f"lr_{status}")
    )
    return al.AccessLogFilter(status_code_filter=al.StatusCodeFilter(comparison=comparison))


def _cel(expression: str) -> al.AccessLogFilter:
    return al.AccessLogFilter(
        extension_filter=al.ExtensionFilter(
            name="envoy.access_loggers.extension_filters.cel",
            typed_config=Any.pack(ExpressionFilter(expression=expression)),
        )
    )


def _error_mapper(
    when: al.AccessLogFilter, reply: LocalReply, message: str = "", status: int | None = None
) -> hcm.ResponseMapper:
    # By default: what happened, then Envoy's response code details.
    message = message or f"{reply.what} (%RESPONSE_CODE_DETAILS%)"
    error = {"message": message, "type": reply.type, "param": None, "code": reply.code}
    return hcm.ResponseMapper(
        filter=when,
        status_code=status,
        body_format_override=core.SubstitutionFormatString(
            json_format=Struct.from_dict({"error": error}), content_type="application/json"
        ),
    )


def _local_reply_config() -> hcm.LocalReplyConfig:
    """Every reply Envoy makes itself (a request it cannot parse, HTTP/1.0, headers too
    large, no such path, the processor or an upstream failing, a timeout) is an
    OpenAI-style JSON error whose message says what happened, then Envoy's response code
    details, so it is never empty. The first mapper that matches wins."""
    # The processor's replies are JSON already: kept as they are.
    mappers = [
        hcm.ResponseMapper(filter=_cel(f"response.code_details.startsWith('{PROCESSOR_REPLY}')"))
    ]
    # Those matched by their details first, whatever their status (a stable sort).
    for reply in sorted(LOCAL_REPLIES, key=lambda reply: reply.details_contain is None):
        if reply.details_contain is not None:
            when = _cel(f"response.code_details.contains('{reply.details_contain}')")
            mappers.append(_error_mapper(when, reply, status=reply.status))
            continue
        status = _status_is(al.ComparisonFilterOp.EQ, reply.status)
        if reply.status in (404, 405):
            # The gateway's own 404/405 routes say which paths and methods it serves.
            direct = al.AccessLogFilter(
                and_filter=al.AndFilter(
                    filters=[status, _cel("response.code_details == 'direct_response'")]
                )
            )
            message = "%REQ(:METHOD)% %REQ(:PATH):200%: %LOCAL_REPLY_BODY%"
            mappers.append(_error_mapper(direct, reply, message))
        mappers.append(_error_mapper(status, reply))
    for other, floor in ((LOCAL_REPLY_OTHER_5XX, 500), (LOCAL_REPLY_OTHER_4XX, 400)):
        when = _status_is(al.ComparisonFilterOp.GE, floor)
        mappers.append(_error_mapper(when, other))
    return hcm.LocalReplyConfig(mappers=mappers)


def _falls_back(config: Config, upstream_replicas: int) -> bool:
    """The default-model fallback is for a single upstream: through the aggregate cluster,
    retries do not reliably pick another upstream replica (measured), and with several
    replicas the others take over anyway."""
    return config.envoy.fallback_to_default and upstream_replicas == 1


def _facts(config: Config, key: str) -> str:
    return f"%DYNAMIC_METADATA({config.metadata_namespace}:{key})%"


def _decision_headers(config: Config) -> list[core.HeaderValueOption]:
    """Every response says who decided (header, rule:<name>, adaptive, none), and which
    cluster served it."""
    values = [
        (h.RESP_DECISION, _facts(config, "decision")),
        (h.RESP_CONFIDENCE, _facts(config, "confidence")),
        (h.RESP_SERVED_BY, f"%UPSTREAM_METADATA({SERVED_BY_NS}:served_by)%"),
    ]
    return [_header(key, value) for key, value in values]


def _decision_or_route(config: Config) -> str:
    """The processor's decision, or, on a route where it is not asked, the route's own
    (``none``): a CEL expression, as one command operator cannot fall back to another."""
    ns = config.metadata_namespace
    return (
        f"%CEL('{ns}' in metadata.filter_metadata"
        f" ? metadata.filter_metadata['{ns}']['decision']"
        f" : xds.route_metadata.filter_metadata['{ns}']['decision'])%"
    )


def _access_log(config: Config) -> list[al.AccessLog]:
    fields = {
        "time": "%START_TIME%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%",
        "status": "%RESPONSE_CODE%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "route": "%ROUTE_NAME%",
        "duration_ms": "%DURATION%",
        "decision": _decision_or_route(config),
        **{key: _facts(config, key) for key in ("confidence", "profile", "strategy", "models")},
    }
    stdout = StdoutAccessLog(
        log_format=core.SubstitutionFormatString(json_format=Struct.from_dict(fields))
    )
    return [al.AccessLog(name="envoy.access_loggers.stdout", typed_config=Any.pack(stdout))]


def _header_is(name: str, value: str) -> rt.HeaderMatcher:
    return rt.HeaderMatcher(name=name, string_match=matcher.StringMatcher(exact=value))


def _not_served(
    name: str, match: rt.RouteMatch, status: int, body: str, allow: str = ""
) -> rt.Route:
    return rt.Route(
        name=name,
        match=match,
        direct_response=rt.DirectResponseAction(
            status=status, body=core.DataSource(inline_string=body)
        ),
        response_headers_to_add=(
            [_header("allow", allow, Append.APPEND_IF_EXISTS_OR_ADD)] if allow else []
        ),
    )


def _absent(name: str) -> rt.HeaderMatcher:
    # Absent in any spelling: Envoy lower-cases names, and an empty value is present too.
    return rt.HeaderMatcher(name=name, present_match=True, invert_match=True)


def _with_processor(route: rt.Route) -> rt.Route:
    """``route`` with the ext_proc filter, which is off by default, turned on: a per-route
    config of the filter does that (one that overrides nothing)."""
    turned_on = xp.ExtProcPerRoute(overrides=xp.ExtProcOverrides())
    return dataclasses.replace(
        route, typed_per_filter_config={EXT_PROC_FILTER: Any.pack(turned_on)}
    )


def _without_processor(config: Config, route: rt.Route) -> rt.Route:
    """``route`` as it is, without ext_proc: Envoy alone routes its requests. Its answers
    still say that nobody decided (the header and the access log), as the processor's
    would."""
    return dataclasses.replace(
        route,
        response_headers_to_add=[
            *route.response_headers_to_add,
            _header(h.RESP_DECISION, NOT_ASKED),
        ],
        metadata=core.Metadata(
            filter_metadata={config.metadata_namespace: Struct.from_dict({"decision": NOT_ASKED})}
        ),
    )


def _default_model_routes(config: Config, processor: Scope | None = None) -> list[rt.Route]:
    """The OpenAI paths served for plain traffic, to the default model with its policy:
    ``POST /v1/chat/completions`` and ``GET /v1/models[/{model}]``, at the endpoint's own
    path prefix. The other methods on them get a 405, every other path a 404.

    ``processor``: which requests the ext_proc filter in front of these routes must see
    (None: there is no such filter). Only chat completions can be ensembled; the others
    never need it, and a chat completion only when ``processor`` says so."""
    endpoint = config.endpoints[config.default_model]
    url = urlsplit(endpoint.url)
    # The endpoint's own path: /v1, or with a prefix, e.g. /base/v1 for http://host/base/v1.
    chat_path = url.path.removesuffix("/chat/completions") + "/chat/completions"
    # Every request Envoy sends the model gets the configured key (which Envoy reads from
    # its environment, so the bootstrap never holds it), and no x-ensemble-* header (the
    # processor's signed copies of the client's ones included) nor client credential (but
    # the client's Authorization where forward_client_auth says so).
    key = f"Bearer %ENVIRONMENT({endpoint.api_key_env})%"
    keep = {h.AUTHORIZATION} if endpoint.forward_client_auth else set()
    chat_match = rt.RouteMatch(path=paths.CHAT_COMPLETIONS)
    chat_post = dataclasses.replace(chat_match, headers=[_header_is(":method", paths.CHAT_METHOD)])
    models_match = rt.RouteMatch(safe_regex=matcher.RegexMatcher(regex=paths.MODELS_REGEX))
    served = f"this gateway serves POST {paths.CHAT_COMPLETIONS} and GET {paths.MODELS}"
    chat = rt.Route(
        name="default_model",
        match=chat_post,
        # Model answers can take minutes; streams are bounded by the idle timeout.
        route=rt.RouteAction(
            cluster=DEFAULT_CLUSTER,
            timeout=timedelta(seconds=300),
            prefix_rewrite=chat_path if chat_path != paths.CHAT_COMPLETIONS else "",
            # The endpoint's own Host.
            host_rewrite_literal=url.netloc.rpartition("@")[2],
        ),
        request_headers_to_add=[_header(h.AUTHORIZATION, key)] if endpoint.api_key_env else [],
        request_headers_to_remove=[
            *h.REQUEST_HEADERS,
            *h.INTERNAL,
            *(name for name in h.CLIENT_CREDENTIALS if name not in keep),
        ],
    )
    others = [
        # The gateway's own list (upstream/discovery.py): what a client may name, not the
        # default model's list; no model key goes with it, nor a client's credentials.
        rt.Route(
            name="models",
            match=dataclasses.replace(
                models_match, headers=[_header_is(":method", paths.MODELS_METHOD)]
            ),
            route=rt.RouteAction(
                cluster=ENSEMBLE_CLUSTER,
                timeout=timedelta(seconds=10),
                retry_policy=rt.RetryPolicy(
                    retry_on="connect-failure,refused-stream,reset",
                    num_retries=2,
                    retry_host_predicate=_ROUTE_OTHER_HOST,
                ),
            ),
            request_headers_to_remove=[*h.REQUEST_HEADERS, *h.INTERNAL, *h.CLIENT_CREDENTIALS],
        ),
        *(
            _not_served(f"{name}_method_not_allowed", match, 405, f"use {method}", method)
            for name, match, method in (
                ("chat", chat_match, paths.CHAT_METHOD),
                ("models", models_match, paths.MODELS_METHOD),
            )
        ),
        _not_served("not_found", rt.RouteMatch(prefix="/"), 404, f"not found; {served}"),
    ]
    if processor is None:
        return [chat, *others]
    routes = [_with_processor(chat), *(_without_processor(config, route) for route in others)]
    if processor.every_chat_completion:
        return routes
    # Chat completions without any header the processor reads: Envoy alone. (Route matching
    # comes before ext_proc: a client's copy of an internal header must select a route where
    # the processor runs and removes it.)
    plain = dataclasses.replace(
        chat_post, headers=[*chat_post.headers, *map(_absent, processor.headers)]
    )
    direct = dataclasses.replace(chat, name="default_model_direct", match=plain)
    return [_without_processor(config, direct), *routes]


def _routes(config: Config, upstream_replicas: int, every_request: bool) -> list[rt.Route]:
    """The ensemble route, for the one request it serves and only when the processor set
    the internal header, then the default model's routes. Envoy alone routes the requests
    the processor could not answer differently, unless ``every_request``."""
    ensemble = rt.Route(
        name="ensemble",
        match=rt.RouteMatch(
            path=paths.CHAT_COMPLETIONS,
            headers=[
                _header_is(h.ROUTE, h.ROUTE_VALUE),
                _header_is(":method", paths.CHAT_METHOD),
            ],
        ),
        route=rt.RouteAction(
            cluster=(
                FALLBACK_CLUSTER if _falls_back(config, upstream_replicas) else ENSEMBLE_CLUSTER
            ),
            timeout=timedelta(seconds=config.ensemble.timeout_seconds + 5),
            retry_policy=rt.RetryPolicy(
                # A replica that refuses or dies before answering: the ensemble runs
                # again on another replica (costs calls, saves the request).
                retry_on="connect-failure,refused-stream,reset-before-request,reset",
                num_retries=5,
                retry_back_off=rt.RetryPolicyRetryBackOff(
                    base_interval=timedelta(seconds=0.01), max_interval=timedelta(seconds=0.1)
                ),
                retry_host_predicate=_ROUTE_OTHER_HOST,
                host_selection_retry_max_attempts=5,
            ),
        ),
    )
    if every_request:
        return [ensemble, *_default_model_routes(config)]
    # A client's copy of the internal header selects this route too: the processor must
    # see it, to remove it.
    return [_with_processor(ensemble), *_default_model_routes(config, scope(config))]


def router_headers(config: Config) -> list[str]:
    """With the semantic router before ours, the headers only it may set: its choice and
    the confidence headers that adaptive signals read. Clients' copies are removed at the
    edge, so a header that the router leaves unset is absent, never the client's."""
    if config.semantic_router.extproc is None:
        return []
    signals = [s.headers for s in config.adaptive.signals if s.type == "header"]
    names = [h.VSR_SELECTED_MODEL, h.VSR_SELECTED_CONFIDENCE, *itertools.chain(*signals)]
    return list(dict.fromkeys(names))


def _edge_removals(config: Config) -> list[core.TypedExtensionConfig]:
    """Drop a client's x-request-id before Envoy looks for one, so Envoy always makes its
    own: the internal signature is bound to it, and clients must not choose it. Drop the
    headers only the semantic router may set (``router_headers``) too."""
    names = [h.REQUEST_ID, *router_headers(config)]
    mutation = EarlyHeaderMutation(mutations=[HeaderMutationRule(remove=n) for n in names])
    return [
        core.TypedExtensionConfig(
            name="envoy.http.early_header_mutation.header_mutation",
            typed_config=Any.pack(mutation),
        )
    ]


def _manager(
    name: str, routes: list[rt.Route], headers: list[core.HeaderValueOption] | None = None
) -> hcm.HttpConnectionManager:
    """A connection manager whose one virtual host serves ``routes`` (adding ``headers`` to
    each response), and whose own replies are JSON errors."""
    host = rt.VirtualHost(
        name="llm", domains=["*"], routes=routes, response_headers_to_add=headers or []
    )
    return hcm.HttpConnectionManager(
        stat_prefix=name,
        route_config=rt.RouteConfiguration(name=name, virtual_hosts=[host]),
        local_reply_config=_local_reply_config(),
        http_filters=[_ROUTER],
    )


def _connection_manager(
    config: Config, upstream_replicas: int, every_request: bool
) -> hcm.HttpConnectionManager:
    envoy = config.envoy
    routes = _routes(config, upstream_replicas, every_request)
    return dataclasses.replace(
        _manager("gateway", routes, _decision_headers(config)),
        codec_type=hcm.HttpConnectionManagerCodecType.AUTO,
        # Slow clients: a trickled request is cut (408) instead of holding a stream;
        # request_timeout is disarmed once the answer starts, so streams are not cut.
        request_headers_timeout=timedelta(seconds=envoy.request_headers_timeout_seconds),
        request_timeout=timedelta(seconds=envoy.request_timeout_seconds),
        stream_idle_timeout=timedelta(seconds=envoy.stream_idle_timeout_seconds),
        common_http_protocol_options=core.HttpProtocolOptions(
            idle_timeout=timedelta(seconds=envoy.idle_timeout_seconds)
        ),
        early_header_mutation_extensions=_edge_removals(config),
        # Routes match exact paths: //v1/chat/completions or /v1/./chat/completions are
        # the same request.
        normalize_path=True,
        merge_slashes=True,
        access_log=_access_log(config),
        tracing=_tracing(config),
        http_filters=_http_filters(config, every_request),
    )


def _tracing(config: Config) -> hcm.HttpConnectionManagerTracing | None:
    """Envoy's OpenTelemetry tracer, when tracing is on: a span per request (and one per
    upstream attempt), exported over OTLP/gRPC; its W3C trace context reaches the
    processor in the ext_proc stream's metadata and the upstream in its request headers,
    so one request is one trace (docs/tracing.md)."""
    tracing = config.tracing
    if not tracing.enabled:
        return None
    exporter = OpenTelemetryConfig(
        grpc_service=core.GrpcService(
            envoy_grpc=core.GrpcServiceEnvoyGrpc(cluster_name=OTEL_CLUSTER)
        ),
        service_name=f"{tracing.service_name}-envoy",
    )
    return hcm.HttpConnectionManagerTracing(
        provider=TracingHttp(name="envoy.tracers.opentelemetry", typed_config=Any.pack(exporter)),
        random_sampling=envoy_type.Percent(value=tracing.sample_percent),
        # The router's own span per upstream attempt: a retried ensemble shows each try.
        spawn_upstream_span=True,
    )


def _runtime() -> bs.LayeredRuntime:
    """The static layer holds the bootstrap's runtime flags; the admin layer (Envoy's
    default when no runtime is configured) stays, for operators' /runtime_modify."""
    return bs.LayeredRuntime(
        layers=[
            bs.RuntimeLayer(name="static", static_layer=Struct.from_dict(RUNTIME_FLAGS)),
            bs.RuntimeLayer(name="admin", admin_layer=bs.RuntimeLayerAdminLayer()),
        ]
    )


def _hcm_chain(manager: hcm.HttpConnectionManager) -> list[lis.FilterChain]:
    connection_manager = lis.Filter(
        name="envoy.filters.network.http_connection_manager", typed_config=Any.pack(manager)
    )
    return [lis.FilterChain(filters=[connection_manager])]


def _fallback(config: Config) -> tuple[list[cl.Cluster], lis.Listener]:
    """The ensemble route's fallback: an aggregate cluster (the ensemble upstream while
    healthy, else the default model), whose default model is an internal listener (no
    socket) with the default route's routes, so the default model gets its key and path
    prefix, and never the internal headers or client credentials, on this path too."""
    internal = core.Address(
        envoy_internal_address=core.EnvoyInternalAddress(server_listener_name=FALLBACK_LISTENER)
    )
    default_model = cl.Cluster(
        name=FALLBACK_DEFAULT_CLUSTER,
        connect_timeout=timedelta(seconds=1),
        # The default model answers, as on the default route.
        load_assignment=_endpoints(FALLBACK_DEFAULT_CLUSTER, [internal], DEFAULT_CLUSTER),
    )
    aggregate = ClusterConfig(clusters=[ENSEMBLE_CLUSTER, FALLBACK_DEFAULT_CLUSTER])
    either = cl.Cluster(
        name=FALLBACK_CLUSTER,
        connect_timeout=timedelta(seconds=1),
        lb_policy=cl.ClusterLbPolicy.CLUSTER_PROVIDED,
        cluster_type=cl.ClusterCustomClusterType(
            name="envoy.clusters.aggregate", typed_config=Any.pack(aggregate)
        ),
    )
    manager = _manager("default_model_fallback", _default_model_routes(config))
    listener = lis.Listener(
        name=FALLBACK_LISTENER,
        internal_listener=lis.ListenerInternalListenerConfig(),
        filter_chains=_hcm_chain(manager),
    )
    return [default_model, either], listener


def typed_bootstrap(
    config: Config,
    extproc_replicas: int = 1,
    upstream_replicas: int = 1,
    *,
    processor_on_every_request: bool = False,
) -> bs.Bootstrap:
    """The whole bootstrap: one listener (the gateway), the processor, ensemble and
    default-model clusters, and the fallback (an aggregate cluster and an internal
    listener) when it applies. ``processor_on_every_request``: ext_proc on every route,
    as before the routes learnt which requests need it (for comparisons)."""
    default_model = config.endpoints[config.default_model]
    address = default_model.address
    clusters = [
        _replicas(
            EXTPROC_CLUSTER, replica_addresses(config.listen.extproc, extproc_replicas), grpc=True
        ),
        _replicas(ENSEMBLE_CLUSTER, replica_addresses(config.listen.upstream, upstream_replicas)),
        _cluster(
            DEFAULT_CLUSTER,
            address,
            transport_socket=(
                _tls_socket(address.host, default_model.ca_file)
                if default_model.url.startswith("https:")
                else None
            ),
        ),
    ]
    router = config.semantic_router.extproc
    if router is not None:
        clusters.append(_cluster(ROUTER_CLUSTER, router.address, http2=True))
    gateway = lis.Listener(
        name="gateway",
        address=_address(config.listen.envoy),
        # Chat bodies are buffered for the processor: room for the largest allowed.
        per_connection_buffer_limit_bytes=config.ensemble.max_body_bytes + 65536,
        filter_chains=_hcm_chain(
            _connection_manager(config, upstream_replicas, processor_on_every_request)
        ),
    )
    if config.tracing.enabled:
        clusters.append(_cluster(OTEL_CLUSTER, config.tracing.collector, http2=True))
    listeners = [gateway]
    extensions = []
    if _falls_back(config, upstream_replicas):
        fallback_clusters, listener = _fallback(config)
        clusters += fallback_clusters
        listeners.append(listener)
        extensions.append(
            core.TypedExtensionConfig(
                name="envoy.bootstrap.internal_listener", typed_config=Any.pack(InternalListener())
            )
        )
    return bs.Bootstrap(
        admin=bs.Admin(address=_address(config.listen.envoy_admin)),
        static_resources=bs.BootstrapStaticResources(listeners=listeners, clusters=clusters),
        bootstrap_extensions=extensions,
        layered_runtime=_runtime(),
    )
