"""The Envoy bootstrap for a config: listener, ext_proc filter, ensemble and default routes.

``envoy/envoy.yaml`` is this function's output for ``config/default.yaml`` (a test keeps
them in step); ``run`` renders it afresh from the config it is given.
"""

from __future__ import annotations

from typing import Any

import yaml

from . import headers as h
from .config import Address, Config

EXTPROC_CLUSTER = "ensemble_extproc"
ENSEMBLE_CLUSTER = "ensemble_upstream"
DEFAULT_CLUSTER = "default_model"
# The ensemble upstream while healthy, else the default model (aggregate cluster).
FALLBACK_CLUSTER = "ensemble_or_default"
SERVED_BY_NS = "ensemble_extproc.cluster"
# Retry on another replica than the one that failed.
PREVIOUS_HOSTS = {
    "name": "envoy.retry_host_predicates.previous_hosts",
    "typed_config": {
        "@type": "type.googleapis.com/"
        "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
    },
}
TYPE = "type.googleapis.com/"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_CONTEXT = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
EXT_PROC = "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _socket(address: Address) -> dict[str, Any]:
    return {"socket_address": {"address": address.host, "port_value": address.port}}


def _health_checked(cluster: dict[str, Any], *, http: bool = True) -> dict[str, Any]:
    """Active checks (/healthz, or gRPC health for the processor), so that a replica that
    drains (SIGTERM) or is down gets no new requests; plus ejection after one failure to
    connect, for a replica that died without draining."""
    check: dict[str, Any] = (
        {"http_health_check": {"path": "/healthz"}} if http else {"grpc_health_check": {}}
    )
    return {
        **cluster,
        "health_checks": [
            {
                "timeout": "0.5s",
                "interval": "0.5s",
                # Also while no traffic flows (Envoy's default then is one check a minute).
                "no_traffic_interval": "1s",
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
                **check,
            }
        ],
        # Envoy allows 3 retries in flight per cluster by default: a replica dying under
        # load fails many requests at once, and each needs its retry.
        "circuit_breakers": {"thresholds": [{"max_retries": 256}]},
        "outlier_detection": {
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": 1,
            "interval": "1s",
            "base_ejection_time": "5s",
            "max_ejection_percent": 50,
        },
        # Unhealthy means unhealthy: no panic routing to the hosts that failed.
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
    }


def _aggregate(name: str, clusters: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "connect_timeout": "1s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": {
                "@type": TYPE + "envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                "clusters": clusters,
            },
        },
    }


def replica_addresses(first: Address, count: int) -> list[Address]:
    """Replicas of one part on one host listen on consecutive ports."""
    return [Address(first.host, first.port + i) for i in range(count)]


def _cluster(
    name: str, address: Address | list[Address], *, http2: bool = False, tls: bool = False
) -> dict[str, Any]:
    addresses = address if isinstance(address, list) else [address]
    host = addresses[0].host
    cluster: dict[str, Any] = {
        "name": name,
        "type": "STATIC" if host.replace(".", "").isdigit() else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {
                    "lb_endpoints": [
                        {
                            "endpoint": {"address": _socket(each)},
                            # Read back by x-ensemble-served-by: which cluster answered,
                            # also through the fallback (aggregate) cluster.
                            "metadata": {"filter_metadata": {SERVED_BY_NS: {"served_by": name}}},
                        }
                        for each in addresses
                    ]
                }
            ],
        },
    }
    if tls:
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": TYPE + TLS_CONTEXT,
                "sni": host,
            },
        }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": TYPE + HTTP_PROTOCOL_OPTIONS,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def _ext_proc_filter(config: Config) -> dict[str, Any]:
    envoy = config.envoy
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": TYPE + EXT_PROC,
            "grpc_service": {
                "envoy_grpc": {"cluster_name": EXTPROC_CLUSTER},
                # A stream that cannot be opened on one processor replica opens on another.
                "retry_policy": {
                    "retry_on": "connect-failure,refused-stream,unavailable",
                    "num_retries": 2,
                    "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.05s"},
                    "retry_host_predicate": [PREVIOUS_HOSTS],
                },
            },
            # Closed: with the processor down, a spoofed routing header must not pass.
            "failure_mode_allow": envoy.failure_mode == "open",
            "message_timeout": f"{envoy.message_timeout_seconds:g}s",
            # The processor skips the body round trip when the headers decide.
            "allow_mode_override": True,
            # The processor's decision facts, read by response headers and access logs.
            "metadata_options": {"receiving_namespaces": {"untyped": [config.metadata_namespace]}},
            "processing_mode": {
                "request_header_mode": "SEND",
                "response_header_mode": "SKIP",
                "request_body_mode": "BUFFERED",
                "response_body_mode": "NONE",
                "request_trailer_mode": "SKIP",
                "response_trailer_mode": "SKIP",
            },
        },
    }


# Envoy's own local replies (body over the buffer limit, processor or upstream unreachable,
# route timeout) become OpenAI-style JSON. The processor's immediate responses are already
# JSON and use other statuses, so they are left alone.
LOCAL_REPLY_ERRORS = (
    (413, "invalid_request_error", "request_too_large"),
    (500, "server_error", "gateway_error"),
    (502, "server_error", "gateway_error"),
    (503, "server_error", "gateway_unavailable"),
    (504, "timeout_error", "gateway_timeout"),
)


def _local_reply_config() -> dict[str, Any]:
    mappers = []
    for status, kind, code in LOCAL_REPLY_ERRORS:
        comparison = {"op": "EQ", "value": {"default_value": status, "runtime_key": f"lr_{status}"}}
        error = {"message": "%LOCAL_REPLY_BODY%", "type": kind, "param": None, "code": code}
        mappers.append(
            {
                "filter": {"status_code_filter": {"comparison": comparison}},
                "body_format_override": {
                    "json_format": {"error": error},
                    "content_type": "application/json",
                },
            }
        )
    return {"mappers": mappers}


def _falls_back(config: Config, upstream_replicas: int) -> bool:
    """The default-model fallback is for a single upstream: through the aggregate cluster,
    retries do not reliably pick another upstream replica (measured), and with several
    replicas the others take over anyway."""
    return config.envoy.fallback_to_default and upstream_replicas == 1


def _facts(config: Config, key: str) -> str:
    return f"%DYNAMIC_METADATA({config.metadata_namespace}:{key})%"


def _decision_headers(config: Config) -> list[dict[str, Any]]:
    """Every response says who decided (header, rule:<name>, adaptive, none)."""
    return [
        {
            "header": {"key": name, "value": _facts(config, key)},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
        for name, key in ((h.RESP_DECISION, "decision"), (h.RESP_CONFIDENCE, "confidence"))
    ] + [
        {
            "header": {
                "key": h.RESP_SERVED_BY,
                "value": f"%UPSTREAM_METADATA({SERVED_BY_NS}:served_by)%",
            },
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]


def _access_log(config: Config) -> list[dict[str, Any]]:
    fields = {
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
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": TYPE + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {"json_format": fields},
            },
        }
    ]


def _routes(config: Config, upstream_replicas: int = 1) -> list[dict[str, Any]]:
    ensemble_timeout = f"{config.ensemble.timeout_seconds + 5:g}s"
    return [
        {
            "name": "ensemble",
            "match": {
                "prefix": "/",
                "headers": [{"name": h.ROUTE, "string_match": {"exact": h.ROUTE_VALUE}}],
            },
            "route": {
                "cluster": (
                    FALLBACK_CLUSTER if _falls_back(config, upstream_replicas) else ENSEMBLE_CLUSTER
                ),
                "timeout": ensemble_timeout,
                "retry_policy": {
                    # A replica that refuses or dies before answering: the ensemble runs
                    # again on another replica (costs calls, saves the request).
                    "retry_on": "connect-failure,refused-stream,reset-before-request,reset",
                    "num_retries": 5,
                    "retry_back_off": {"base_interval": "0.01s", "max_interval": "0.1s"},
                    "retry_host_predicate": [PREVIOUS_HOSTS],
                    "host_selection_retry_max_attempts": 5,
                },
            },
        },
        {
            "name": "default_model",
            "match": {"prefix": "/"},
            # Model answers can take minutes; streams are bounded by the idle timeout.
            "route": {"cluster": DEFAULT_CLUSTER, "timeout": "300s"},
        },
    ]


def bootstrap(
    config: Config, extproc_replicas: int = 1, upstream_replicas: int = 1
) -> dict[str, Any]:
    default_model = config.endpoints[config.default_model]
    hcm = {
        "@type": TYPE + HCM,
        "stat_prefix": "gateway",
        "codec_type": "AUTO",
        "route_config": {
            "name": "gateway",
            "virtual_hosts": [
                {
                    "name": "llm",
                    "domains": ["*"],
                    "routes": _routes(config, upstream_replicas),
                    "response_headers_to_add": _decision_headers(config),
                }
            ],
        },
        "local_reply_config": _local_reply_config(),
        "access_log": _access_log(config),
        "http_filters": [
            _ext_proc_filter(config),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": TYPE + "envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        "admin": {"address": _socket(config.listen.envoy_admin)},
        "static_resources": {
            "listeners": [
                {
                    "name": "gateway",
                    "address": _socket(config.listen.envoy),
                    # Chat bodies are buffered for the processor: room for the largest allowed.
                    "per_connection_buffer_limit_bytes": config.ensemble.max_body_bytes + 65536,
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                _health_checked(
                    _cluster(
                        EXTPROC_CLUSTER,
                        replica_addresses(config.listen.extproc, extproc_replicas),
                        http2=True,
                    ),
                    http=False,
                ),
                _health_checked(
                    _cluster(
                        ENSEMBLE_CLUSTER,
                        replica_addresses(config.listen.upstream, upstream_replicas),
                    )
                ),
                _cluster(
                    DEFAULT_CLUSTER,
                    default_model.address,
                    tls=default_model.url.startswith("https:"),
                ),
                *(
                    [_aggregate(FALLBACK_CLUSTER, [ENSEMBLE_CLUSTER, DEFAULT_CLUSTER])]
                    if _falls_back(config, upstream_replicas)
                    else []
                ),
            ],
        },
    }


def render_yaml(
    config: Config, source: str, extproc_replicas: int = 1, upstream_replicas: int = 1
) -> str:
    header = (
        f"# Envoy bootstrap rendered from {source}; do not edit by hand.\n"
        f"# Re-render: ensemble-extproc envoy-config --config {source}\n"
    )
    rendered = bootstrap(config, extproc_replicas, upstream_replicas)
    return header + yaml.safe_dump(rendered, sort_keys=False)
