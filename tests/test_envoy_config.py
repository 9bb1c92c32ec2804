"""envoy/envoy.yaml: rendered from config/default.yaml, and accepted by the real Envoy."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ensemble_extproc.config import load_config
from ensemble_extproc.envoy_bootstrap import (
    EXT_PROC,
    EXTPROC_CLUSTER,
    GRACEFUL_GRPC_CLOSE,
    HCM,
    HTTP_PROTOCOL_OPTIONS,
    RUNTIME_FLAGS,
    TLS_CONTEXT,
    TYPE,
    bootstrap,
    render_yaml,
)
from ensemble_extproc.stack import envoy_binary

from helpers import make_config

ROOT = Path(__file__).resolve().parent.parent
CHECKED_IN = ROOT / "envoy" / "envoy.yaml"


def validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--use-dynamic-base-id"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_checked_in_bootstrap_is_up_to_date() -> None:
    expected = render_yaml(load_config(ROOT / "config" / "default.yaml"), "config/default.yaml")
    assert CHECKED_IN.read_text() == expected, (
        "envoy/envoy.yaml is stale: run "
        "'ensemble-extproc envoy-config --config config/default.yaml > envoy/envoy.yaml'"
    )


def test_checked_in_bootstrap_validates() -> None:
    result = validate(CHECKED_IN)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8001/v1", "https://api.example.com/v1", "http://model-a:8000"]
)
def test_rendered_bootstrap_validates_for_other_default_models(tmp_path: Path, url: str) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(render_yaml(make_config({"m": url}), "test"))
    result = validate(path)
    assert result.returncode == 0, result.stderr


def test_validation_rejects_a_broken_bootstrap(tmp_path: Path) -> None:
    """The check above can fail: a bootstrap routing to an unknown cluster is refused."""
    broken = CHECKED_IN.read_text().replace("cluster: default_model", "cluster: nowhere")
    path = tmp_path / "broken.yaml"
    path.write_text(broken)
    assert validate(path).returncode != 0


# --- built from envoy-data-plane's typed messages -----------------------------------------


def typed_configs(config: Any) -> Iterator[dict[str, Any]]:
    """Every packed message (``{"@type": ...}``) in a rendered bootstrap."""
    if isinstance(config, dict):
        if "@type" in config:
            yield config
        for value in config.values():
            yield from typed_configs(value)
    elif isinstance(config, list):
        for value in config:
            yield from typed_configs(value)


VARIANTS = {
    "default": (ROOT / "config" / "default.yaml", 1, 1),
    "replicas": (ROOT / "config" / "default.yaml", 2, 2),
    "policy": (ROOT / "config" / "examples" / "policy.yaml", 1, 1),
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_bootstrap_reads_back_under_envoys_schema(variant: str) -> None:
    """Proto JSON with snake_case field names that Envoy's API schema reads back whole:
    no unknown field (the parser rejects them), every ``@type`` a known message."""
    path, extproc, upstream = VARIANTS[variant]
    rendered = bootstrap(load_config(path), extproc, upstream)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import betterproto2
        from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap

    parsed = Bootstrap.from_dict(rendered)
    assert parsed.to_dict(casing=betterproto2.Casing.SNAKE) == rendered
    assert "static_resources" in rendered
    assert {c["@type"].partition("/")[0] for c in typed_configs(rendered)} == {TYPE.rstrip("/")}


def test_shared_type_names_are_the_typed_messages() -> None:
    """The names other code and the HTTP/2 options' map key use are the packed types'."""
    config = make_config({"m": "https://api.example.com/v1"})
    types = {c["@type"] for c in typed_configs(bootstrap(config))}
    assert {TYPE + name for name in (HCM, EXT_PROC, TLS_CONTEXT, HTTP_PROTOCOL_OPTIONS)} <= types
    [extproc] = [
        c for c in bootstrap(config)["static_resources"]["clusters"] if c["name"] == EXTPROC_CLUSTER
    ]
    [(key, options)] = extproc["typed_extension_protocol_options"].items()
    assert options["@type"] == TYPE + key


def test_servers_import_the_shared_names_without_envoy_data_plane() -> None:
    """The runtime image installs no envoy-data-plane: the CLI and the upstream's OpenAPI
    document import this module's names, and only building a bootstrap needs the package."""
    code = (
        "import sys, ensemble_extproc.cli, ensemble_extproc.upstream.openapi; "
        "sys.exit('envoy_data_plane' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr or "envoy_data_plane was imported"


def test_runtime_flags_sit_in_a_static_layer_and_the_admin_layer_stays() -> None:
    """Envoy without a layered_runtime has an admin layer (/runtime_modify); declaring
    the static layer must not take it away."""
    layers = bootstrap(make_config({"m": "http://127.0.0.1:8001/v1"}))["layered_runtime"]
    assert layers == {
        "layers": [
            {"name": "static", "static_layer": RUNTIME_FLAGS},
            {"name": "admin", "admin_layer": {}},
        ]
    }
    assert RUNTIME_FLAGS == {GRACEFUL_GRPC_CLOSE: True}
