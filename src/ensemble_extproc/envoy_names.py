"""Envoy names the rest of the project shares: clusters, type URLs, runtime flags, the
JSON errors Envoy answers by itself, replica addresses.

Plain constants, importable without envoy-data-plane: the servers use them, and both the
bootstrap (``envoy_bootstrap``) and its typed messages (``envoy_types``) read them here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Address

EXTPROC_CLUSTER = "ensemble_extproc"
ENSEMBLE_CLUSTER = "ensemble_upstream"
DEFAULT_CLUSTER = "default_model"
# The ensemble upstream while healthy, else the default model (aggregate cluster).
FALLBACK_CLUSTER = "ensemble_or_default"
SERVED_BY_NS = "ensemble_extproc.cluster"
# The semantic router's ext_proc (semantic_router.extproc): its cluster, and its filter's
# name in the chain (before ours).
ROUTER_CLUSTER = "semantic_router"
ROUTER_FILTER = "semantic_router.ext_proc"
# The OTLP/gRPC collector Envoy exports its spans to (tracing.collector).
OTEL_CLUSTER = "otel_collector"
# Type URLs: TYPE + a message's full name (the typed messages carry their own; a test
# checks that these agree with them).
TYPE = "type.googleapis.com/"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_CONTEXT = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
EXT_PROC = "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

# Envoy's response code details of the processor's immediate responses start with this.
PROCESSOR_REPLY = "ensemble_extproc_"

# The ensemble route's fallback to the default model goes through an internal listener
# whose route applies the default model's policy (its key, path prefix and host; client
# credentials and internal headers removed), as the default route does.
FALLBACK_LISTENER = "default_model_fallback"
FALLBACK_DEFAULT_CLUSTER = "default_model_fallback"

# Where Envoy finds the system's CA certificates for https model endpoints without a
# ca_file (Envoy has no "system roots" option on Linux): the first that exists on the
# machine rendering the bootstrap, else the first (Debian, Ubuntu, Alpine, the official
# Envoy image).
SYSTEM_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/ca-bundle.pem",  # openSUSE
    "/etc/ssl/cert.pem",  # macOS, BSDs
)

# Envoy's runtime flags, set in the bootstrap's static runtime layer.
# Graceful close: Envoy half-closes each ext_proc stream and lets the processor end it,
# instead of resetting it. grpc.aio leaks native memory on every reset (CANCELLED) call:
# the processor's RSS grew ~120 B per request without it (bench/soak.py measures it).
GRACEFUL_GRPC_CLOSE = "envoy.reloadable_features.ext_proc_graceful_grpc_close"
RUNTIME_FLAGS: dict[str, bool] = {GRACEFUL_GRPC_CLOSE: True}


@dataclass(frozen=True, slots=True)
class LocalReply:
    """One kind of Envoy's own replies, as an OpenAI-style error. The message is ``what``
    followed by Envoy's response code details, so it is never empty."""

    status: int
    type: str
    code: str
    what: str
    # Set: the reply matches on this text in its response code details, whatever its
    # status, and is answered with ``status``.
    details_contain: str | None = None


# Every status Envoy answers by itself, then the catch-alls for any other 4xx and 5xx.
# Replies of the processor (details ``ensemble_extproc_*``) are already JSON and kept.
LOCAL_REPLIES = (
    LocalReply(
        502,
        "server_error",
        "upstream_tls_error",
        "the TLS handshake with the model endpoint failed: its certificate is not trusted "
        "(system CAs, or the model's ca_file) or does not name its host",
        details_contain="TLS_error",
    ),
    LocalReply(400, "invalid_request_error", "bad_request", "the request is not valid HTTP"),
    LocalReply(404, "invalid_request_error", "not_found", "no such path on this gateway"),
    LocalReply(405, "invalid_request_error", "method_not_allowed", "method not allowed here"),
    LocalReply(408, "invalid_request_error", "request_timeout", "the request came too slowly"),
    LocalReply(
        413,
        "invalid_request_error",
        "request_too_large",
        "the request body is larger than the gateway accepts",
    ),
    LocalReply(
        426,
        "invalid_request_error",
        "upgrade_required",
        "HTTP/1.0 is not supported: use HTTP/1.1 or HTTP/2",
    ),
    LocalReply(
        431,
        "invalid_request_error",
        "headers_too_large",
        "the request headers (or the URL) are larger than the gateway accepts",
    ),
    LocalReply(500, "server_error", "gateway_error", "the gateway failed to process the request"),
    LocalReply(
        501,
        "invalid_request_error",
        "not_implemented",
        "the request uses an HTTP feature the gateway does not implement",
    ),
    LocalReply(502, "server_error", "gateway_error", "the upstream gave no valid answer"),
    LocalReply(503, "server_error", "gateway_unavailable", "the upstream is unavailable"),
    LocalReply(504, "timeout_error", "gateway_timeout", "the upstream did not answer in time"),
)
# Any other status, by class.
LOCAL_REPLY_OTHER_5XX = LocalReply(500, "server_error", "gateway_error", "the gateway failed")
LOCAL_REPLY_OTHER_4XX = LocalReply(
    400, "invalid_request_error", "invalid_request", "the gateway refused the request"
)
# (status, type, code) of each, for the upstream's API document.
LOCAL_REPLY_ERRORS = tuple((r.status, r.type, r.code) for r in LOCAL_REPLIES)


def replica_addresses(first: Address, count: int) -> list[Address]:
    """Replicas of one part on one host listen on consecutive ports."""
    return [Address(first.host, first.port + i) for i in range(count)]
