"""The Envoy bootstrap for a config: listener, ext_proc filter, ensemble and default routes.

``envoy/envoy.yaml`` is this function's output for ``config/default.yaml`` (a test keeps
them in step); ``run`` renders it afresh from the config it is given.

It is built from envoy-data-plane's typed messages (``envoy_types``), imported only to
build; the names the rest of the project shares are in ``envoy_names``, which needs no
envoy-data-plane.
"""

from __future__ import annotations

import warnings
from typing import Any

import yaml

from .config import Config


def bootstrap(
    config: Config,
    extproc_replicas: int = 1,
    upstream_replicas: int = 1,
    *,
    processor_on_every_request: bool = False,
) -> dict[str, Any]:
    """The bootstrap as proto JSON, as Envoy's YAML loader reads it: snake_case field
    names, ``Any`` as ``{"@type": ...}`` plus the packed message's fields, durations as
    ``"0.500s"``; fields at their proto3 default (false, 0, the first enum value) are left
    out, as they mean the same."""
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
    built = typed_bootstrap(
        config,
        extproc_replicas,
        upstream_replicas,
        processor_on_every_request=processor_on_every_request,
    )
    return built.to_dict(casing=betterproto2.Casing.SNAKE)


def render_yaml(
    config: Config,
    source: str,
    extproc_replicas: int = 1,
    upstream_replicas: int = 1,
    *,
    processor_on_every_request: bool = False,
) -> str:
    header = (
        f"# Envoy bootstrap rendered from {source}; do not edit by hand.\n"
        f"# Re-render: ensemble-extproc envoy-config --config {source}\n"
    )
    rendered = bootstrap(
        config,
        extproc_replicas,
        upstream_replicas,
        processor_on_every_request=processor_on_every_request,
    )
    return header + yaml.safe_dump(rendered, sort_keys=False)
