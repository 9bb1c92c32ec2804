"""envoy/envoy.yaml: rendered from config/default.yaml, and accepted by the real Envoy."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ensemble_extproc.config import load_config
from ensemble_extproc.envoy_bootstrap import render_yaml
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
