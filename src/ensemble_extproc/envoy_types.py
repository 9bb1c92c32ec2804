"""The Envoy bootstrap as envoy-data-plane's typed messages (Envoy's v3 API).

Every message is a pydantic dataclass: a misspelt field, a value of the wrong type or two
members of one ``oneof`` fail here, when the bootstrap is built, rather than when Envoy
loads it (and mypy checks the field names too). ``envoy_bootstrap`` turns the result into
the dicts it serialises; this module is imported only when a bootstrap is built, so the
servers, which import ``envoy_bootstrap``'s constants, do not need envoy-data-plane.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import timedelta
from typing import TypeAlias

from envoy_data_plane.envoy.config.accesslog import v3 as al
from envoy_data_plane.envoy.config.bootstrap.v3 import Admin, Bootstrap, BootstrapStaticResources
from envoy_data_plane.envoy.config.cluster import v3 as cl
from envoy_data_plane.envoy.config.core import v3 as core
from envoy_data_plane.envoy.config.endpoint import v3 as ep
from envoy_data_plane.envoy.config.listener import v3 as lis
from envoy_data_plane.envoy.config.route import v3 as rt
from envoy_data_plane.envoy.extensions.access_loggers.stream.v3 import StdoutAccessLog
from envoy_data_plane.envoy.extensions.clusters.aggregate.v3 import ClusterConfig
from envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 import (
    ExternalProcessor,
    MetadataOptions,
    MetadataOptionsMetadataNamespaces,
    ProcessingMode,
    ProcessingModeBodySendMode,
    ProcessingModeHeaderSendMode,
)
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpConnectionManagerCodecType,
    HttpFilter,
    LocalReplyConfig,
    ResponseMapper,
)
from envoy_data_plane.envoy.extensions.retry.host.previous_hosts.v3 import (
    PreviousHostsPredicate,
)
from envoy_data_plane.envoy.extensions.transport_sockets.tls.v3 import UpstreamTlsContext
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions,
    HttpProtocolOptionsExplicitHttpConfig,
)
from envoy_data_plane.envoy.type import v3 as envoy_type
from envoy_data_plane.envoy.type.matcher import v3 as matcher
from envoy_data_plane.google.protobuf import Any, NullValue, Struct, Value

from . import headers as h
from .config import Address, Config
from .envoy_bootstrap import (
    DEFAULT_CLUSTER,
    ENSEMBLE_CLUSTER,
    EXTPROC_CLUSTER,
    FALLBACK_CLUSTER,
    HTTP_PROTOCOL_OPTIONS,
    LOCAL_REPLY_ERRORS,
    SERVED_BY_NS,
    replica_addresses,
)

# Retry on another replica than the one that failed.
PREVIOUS_HOSTS = "envoy.retry_host_predicates.previous_hosts"


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def _address(address: Address) -> core.Address:
    return core.Address(
        socket_address=core.SocketAddress(address=address.host, port_value=address.port)
    )


def _health_checked(built: cl.Cluster, *, http: bool = True) -> cl.Cluster:
    """Active checks (/healthz, or gRPC health for the processor), so that a replica that
    drains (SIGTERM) or is down gets no new requests; plus ejection after one failure to
    connect, for a replica that died without draining."""
    check = core.HealthCheck(
        timeout=_seconds(0.5),
        interval=_seconds(0.5),
        # Also while no traffic flows (Envoy's default then is one check a minute).
        no_traffic_interval=_seconds(1),
        unhealthy_threshold=1,
        healthy_threshold=1,
        http_health_check=core.HealthCheckHttpHealthCheck(path="/healthz") if http else None,
        grpc_health_check=None if http else core.HealthCheckGrpcHealthCheck(),
    )
    # A new message (replace calls the constructor), so the added fields are validated too.
    return dataclasses.replace(
        built,
        health_checks=[check],
        # Envoy allows 3 retries in flight per cluster by default: a replica dying under
        # load fails many requests at once, and each needs its retry.
        circuit_breakers=cl.CircuitBreakers(
            thresholds=[cl.CircuitBreakersThresholds(max_retries=256)]
        ),
        outlier_detection=cl.OutlierDetection(
            split_external_local_origin_errors=True,
            consecutive_local_origin_failure=1,
            interval=_seconds(1),
            base_ejection_time=_seconds(5),
            max_ejection_percent=50,
        ),
        # Unhealthy means unhealthy: no panic routing to the hosts that failed.
        # (Percent's value 0 is proto3's default, so the YAML shows an empty Percent.)
        common_lb_config=cl.ClusterCommonLbConfig(
            healthy_panic_threshold=envoy_type.Percent(value=0)
        ),
    )


def _aggregate(name: str, clusters: list[str]) -> cl.Cluster:
    return cl.Cluster(
        name=name,
        connect_timeout=_seconds(1),
        lb_policy=cl.ClusterLbPolicy.CLUSTER_PROVIDED,
        cluster_type=cl.ClusterCustomClusterType(
            name="envoy.clusters.aggregate",
            typed_config=Any.pack(ClusterConfig(clusters=clusters)),
        ),
    )


def _cluster(
    name: str, address: Address | list[Address], *, http2: bool = False, tls: bool = False
) -> cl.Cluster:
    addresses = address if isinstance(address, list) else [address]
    host = addresses[0].host
    return cl.Cluster(
        name=name,
        type=(
            cl.ClusterDiscoveryType.STATIC
            if host.replace(".", "").isdigit()
            else cl.ClusterDiscoveryType.STRICT_DNS
        ),
        connect_timeout=_seconds(1),
        load_assignment=ep.ClusterLoadAssignment(
            cluster_name=name,
            endpoints=[
                ep.LocalityLbEndpoints(
                    lb_endpoints=[
                        ep.LbEndpoint(
                            endpoint=ep.Endpoint(address=_address(each)),
                            # Read back by x-ensemble-served-by: which cluster answered,
                            # also through the fallback (aggregate) cluster.
                            metadata=core.Metadata(
                                filter_metadata={SERVED_BY_NS: _struct({"served_by": name})}
                            ),
                        )
                        for each in addresses
                    ]
                )
            ],
        ),
        transport_socket=(
            core.TransportSocket(
                name="envoy.transport_sockets.tls",
                typed_config=Any.pack(UpstreamTlsContext(sni=host)),
            )
            if tls
            else None
        ),
        typed_extension_protocol_options=(
            {
                HTTP_PROTOCOL_OPTIONS: Any.pack(
                    HttpProtocolOptions(
                        explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(
                            http2_protocol_options=core.Http2ProtocolOptions()
                        )
                    )
                )
            }
            if http2
            else {}
        ),
    )


# What the bootstrap's free-form JSON (google.protobuf.Struct) holds: strings, null, objects.
Json: TypeAlias = "str | Mapping[str, Json] | None"


def _value(item: Json) -> Value:
    if item is None:
        return Value(null_value=NullValue.NULL_VALUE)
    if isinstance(item, str):
        return Value(string_value=item)
    return Value(struct_value=_struct(item))


def _struct(fields: Mapping[str, Json]) -> Struct:
    return Struct(fields={key: _value(item) for key, item in fields.items()})


def _ext_proc_filter(config: Config) -> HttpFilter:
    envoy = config.envoy
    return HttpFilter(
        name="envoy.filters.http.ext_proc",
        typed_config=Any.pack(
            ExternalProcessor(
                grpc_service=core.GrpcService(
                    envoy_grpc=core.GrpcServiceEnvoyGrpc(cluster_name=EXTPROC_CLUSTER),
                    # A stream that cannot be opened on one processor replica opens on
                    # another.
                    retry_policy=core.RetryPolicy(
                        retry_on="connect-failure,refused-stream,unavailable",
                        num_retries=2,
                        retry_back_off=core.BackoffStrategy(
                            base_interval=_seconds(0.01), max_interval=_seconds(0.05)
                        ),
                        retry_host_predicate=[
                            core.RetryPolicyRetryHostPredicate(
                                name=PREVIOUS_HOSTS,
                                typed_config=Any.pack(PreviousHostsPredicate()),
                            )
                        ],
                    ),
                ),
                # Closed: with the processor down, a spoofed routing header must not pass.
                # (False is proto3's default, so a closed filter's YAML omits the field.)
                failure_mode_allow=envoy.failure_mode == "open",
                message_timeout=_seconds(envoy.message_timeout_seconds),
                # The processor skips the body round trip when the headers decide.
                allow_mode_override=True,
                # The processor's decision facts, read by response headers and access logs.
                metadata_options=MetadataOptions(
                    receiving_namespaces=MetadataOptionsMetadataNamespaces(
                        untyped=[config.metadata_namespace]
                    )
                ),
                processing_mode=ProcessingMode(
                    request_header_mode=ProcessingModeHeaderSendMode.SEND,
                    response_header_mode=ProcessingModeHeaderSendMode.SKIP,
                    request_body_mode=ProcessingModeBodySendMode.BUFFERED,
                    response_body_mode=ProcessingModeBodySendMode.NONE,
                    request_trailer_mode=ProcessingModeHeaderSendMode.SKIP,
                    response_trailer_mode=ProcessingModeHeaderSendMode.SKIP,
                ),
            )
        ),
    )


def _local_reply_config() -> LocalReplyConfig:
    """Envoy's own local replies (body over the buffer limit, processor or upstream
    unreachable, route timeout) become OpenAI-style JSON. The processor's immediate
    responses are already JSON and use other statuses, so they are left alone."""
    mappers = []
    for status, kind, code in LOCAL_REPLY_ERRORS:
        comparison = al.ComparisonFilter(
            op=al.ComparisonFilterOp.EQ,
            value=core.RuntimeUInt32(default_value=status, runtime_key=f"lr_{status}"),
        )
        error: Json = {"message": "%LOCAL_REPLY_BODY%", "type": kind, "param": None, "code": code}
        mappers.append(
            ResponseMapper(
                filter=al.AccessLogFilter(
                    status_code_filter=al.StatusCodeFilter(comparison=comparison)
                ),
                body_format_override=core.SubstitutionFormatString(
                    json_format=_struct({"error": error}),
                    content_type="application/json",
                ),
            )
        )
    return LocalReplyConfig(mappers=mappers)


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
    return [
        core.HeaderValueOption(
            header=core.HeaderValue(key=key, value=value),
            append_action=core.HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
        )
        for key, value in values
    ]


def _access_log(config: Config) -> list[al.AccessLog]:
    fields: dict[str, Json] = {
        "time": "%START_TIME%",
        "request_id": "%REQ(X-REQUEST-ID)%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(:PATH)%",
        "status": "%RESPONSE_CODE%",
        "details": "%RESPONSE_CODE_DETAILS%",
        "route": "%ROUTE_NAME%",
        "duration_ms": "%DURATION%",
        "decision": _facts(config, "decision"),
        "confidence": _facts(config, "confidence"),
        "profile": _facts(config, "profile"),
        "strategy": _facts(config, "strategy"),
        "models": _facts(config, "models"),
    }
    return [
        al.AccessLog(
            name="envoy.access_loggers.stdout",
            typed_config=Any.pack(
                StdoutAccessLog(
                    log_format=core.SubstitutionFormatString(json_format=_struct(fields))
                )
            ),
        )
    ]


def _routes(config: Config, upstream_replicas: int = 1) -> list[rt.Route]:
    return [
        rt.Route(
            name="ensemble",
            match=rt.RouteMatch(
                prefix="/",
                headers=[
                    rt.HeaderMatcher(
                        name=h.ROUTE, string_match=matcher.StringMatcher(exact=h.ROUTE_VALUE)
                    )
                ],
            ),
            route=rt.RouteAction(
                cluster=(
                    FALLBACK_CLUSTER if _falls_back(config, upstream_replicas) else ENSEMBLE_CLUSTER
                ),
                timeout=_seconds(config.ensemble.timeout_seconds + 5),
                retry_policy=rt.RetryPolicy(
                    # A replica that refuses or dies before answering: the ensemble runs
                    # again on another replica (costs calls, saves the request).
                    retry_on="connect-failure,refused-stream,reset-before-request,reset",
                    num_retries=5,
                    retry_back_off=rt.RetryPolicyRetryBackOff(
                        base_interval=_seconds(0.01), max_interval=_seconds(0.1)
                    ),
                    retry_host_predicate=[
                        rt.RetryPolicyRetryHostPredicate(
                            name=PREVIOUS_HOSTS, typed_config=Any.pack(PreviousHostsPredicate())
                        )
                    ],
                    host_selection_retry_max_attempts=5,
                ),
            ),
        ),
        rt.Route(
            name="default_model",
            match=rt.RouteMatch(prefix="/"),
            # Model answers can take minutes; streams are bounded by the idle timeout.
            route=rt.RouteAction(cluster=DEFAULT_CLUSTER, timeout=_seconds(300)),
        ),
    ]


def _connection_manager(config: Config, upstream_replicas: int) -> HttpConnectionManager:
    envoy = config.envoy
    return HttpConnectionManager(
        stat_prefix="gateway",
        codec_type=HttpConnectionManagerCodecType.AUTO,
        # Slow clients: a trickled request is cut (408) instead of holding a stream;
        # request_timeout is disarmed once the answer starts, so streams are not cut.
        request_headers_timeout=_seconds(envoy.request_headers_timeout_seconds),
        request_timeout=_seconds(envoy.request_timeout_seconds),
        stream_idle_timeout=_seconds(envoy.stream_idle_timeout_seconds),
        common_http_protocol_options=core.HttpProtocolOptions(
            idle_timeout=_seconds(envoy.idle_timeout_seconds)
        ),
        route_config=rt.RouteConfiguration(
            name="gateway",
            virtual_hosts=[
                rt.VirtualHost(
                    name="llm",
                    domains=["*"],
                    routes=_routes(config, upstream_replicas),
                    response_headers_to_add=_decision_headers(config),
                )
            ],
        ),
        local_reply_config=_local_reply_config(),
        access_log=_access_log(config),
        http_filters=[
            _ext_proc_filter(config),
            HttpFilter(name="envoy.filters.http.router", typed_config=Any.pack(Router())),
        ],
    )


def typed_bootstrap(
    config: Config, extproc_replicas: int = 1, upstream_replicas: int = 1
) -> Bootstrap:
    """The whole bootstrap: one listener (the gateway), the processor, ensemble and
    default-model clusters, and the fallback aggregate when it applies."""
    default_model = config.endpoints[config.default_model]
    clusters = [
        _health_checked(
            _cluster(
                EXTPROC_CLUSTER,
                replica_addresses(config.listen.extproc, extproc_replicas),
                http2=True,
            ),
            http=False,
        ),
        _health_checked(
            _cluster(ENSEMBLE_CLUSTER, replica_addresses(config.listen.upstream, upstream_replicas))
        ),
        _cluster(
            DEFAULT_CLUSTER, default_model.address, tls=default_model.url.startswith("https:")
        ),
    ]
    if _falls_back(config, upstream_replicas):
        clusters.append(_aggregate(FALLBACK_CLUSTER, [ENSEMBLE_CLUSTER, DEFAULT_CLUSTER]))
    gateway = lis.Listener(
        name="gateway",
        address=_address(config.listen.envoy),
        # Chat bodies are buffered for the processor: room for the largest allowed.
        per_connection_buffer_limit_bytes=config.ensemble.max_body_bytes + 65536,
        filter_chains=[
            lis.FilterChain(
                filters=[
                    lis.Filter(
                        name="envoy.filters.network.http_connection_manager",
                        typed_config=Any.pack(_connection_manager(config, upstream_replicas)),
                    )
                ]
            )
        ],
    )
    return Bootstrap(
        admin=Admin(address=_address(config.listen.envoy_admin)),
        static_resources=BootstrapStaticResources(listeners=[gateway], clusters=clusters),
    )
