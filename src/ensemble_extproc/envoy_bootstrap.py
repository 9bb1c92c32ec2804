"""The Envoy bootstrap for a config: listener, ext_proc filter, ensemble and default routes.

``envoy/envoy.yaml`` is this function's output for ``config/default.yaml`` (a test keeps
them in step); ``run`` renders it afresh from the config it is given.

The bootstrap is built from envoy-data-plane's typed messages (``envoy_types``), so that
a wrong field name or type fails when it is built, then serialised to proto JSON with the
proto field names (snake_case), as Envoy's YAML loader reads it. This module holds the
names the rest of the project shares and imports envoy-data-plane only to build: the
servers import ``LOCAL_REPLY_ERRORS`` from here and need not install it.
"""

from __future__ import annotations

import warnings
from typing import Any

import yaml

from .config import Address, Config

EXTPROC_CLUSTER = "ensemble_extproc"
ENSEMBLE_CLUSTER = "ensemble_upstream"
DEFAULT_CLUSTER = "default_model"
# The ensemble upstream while healthy, else the default model (aggregate cluster).
FALLBACK_CLUSTER = "ensemble_or_default"
SERVED_BY_NS = "ensemble_extproc.cluster"
# Type URLs: TYPE + a message's full name (the typed messages carry their own; a test
# checks that these agree with them).
TYPE = "type.googleapis.com/"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
TLS_CONTEXT = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
EXT_PROC = "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"
HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

# Envoy's own local replies (body over the buffer limit, processor or upstream unreachable,
# route timeout) become OpenAI-style JSON. The processor's immediate responses are already
# JSON and use other statuses, so they are left alone.
LOCAL_REPLY_ERRORS = (
    # request_timeout / request_headers_timeout: the client was too slow.
    (408, "invalid_request_error", "request_timeout"),
    (413, "invalid_request_error", "request_too_large"),
    (500, "server_error", "gateway_error"),
    (502, "server_error", "gateway_error"),
    (503, "server_error", "gateway_unavailable"),
    (504, "timeout_error", "gateway_timeout"),
)


def replica_addresses(first: Address, count: int) -> list[Address]:
    """Replicas of one part on one host listen on consecutive ports."""
    return [Address(first.host, first.port + i) for i in range(count)]


def bootstrap(
    config: Config, extproc_replicas: int = 1, upstream_replicas: int = 1
) -> dict[str, Any]:
    """The bootstrap as proto JSON: snake_case field names, ``Any`` as ``{"@type": ...}``
    plus the packed message's fields, durations as ``"0.500s"``; fields at their proto3
    default (false, 0, the first enum value) are left out, as they mean the same."""
    try:
        # Defining envoy-data-plane's classes trips a pydantic deprecation warning of theirs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import betterproto2

            from .envoy_types import typed_bootstrap
    except ModuleNotFoundError as missing:
        if (missing.name or "").partition(".")[0] not in ("envoy_data_plane", "betterproto2"):
            raise
        raise ModuleNotFoundError(
            f"rendering the Envoy bootstrap needs envoy-data-plane ({missing.name} is "
            "missing): pip install 'envoy-data-plane>=2.2'",
            name=missing.name,
        ) from missing
    built = typed_bootstrap(config, extproc_replicas, upstream_replicas)
    return built.to_dict(casing=betterproto2.Casing.SNAKE)


def render_yaml(
    config: Config, source: str, extproc_replicas: int = 1, upstream_replicas: int = 1
) -> str:
    header = (
        f"# Envoy bootstrap rendered from {source}; do not edit by hand.\n"
        f"# Re-render: ensemble-extproc envoy-config --config {source}\n"
    )
    rendered = bootstrap(config, extproc_replicas, upstream_replicas)
    return header + yaml.safe_dump(rendered, sort_keys=False)
