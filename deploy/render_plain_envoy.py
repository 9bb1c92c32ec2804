"""Render the plain-Envoy bootstrap ConfigMap from deploy/kubernetes/plain-envoy/config.yaml.

Usage (from the repository root, with the project installed, e.g. .venv/bin/python):

    python deploy/render_plain_envoy.py           # rewrite the ConfigMap
    python deploy/render_plain_envoy.py --check   # exit 1 if the checked-in one is stale

The bootstrap is what ``ensemble-extproc envoy-config`` prints for that config. It holds
no secret, so the environment variables the config names (``api_key_env``,
``header_control.api_keys_env``, ``security.internal_secret_env``) are given placeholder
values here: the output never depends on the environment it is rendered in.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ensemble_extproc.config import compile_config
from ensemble_extproc.config.model import DEFAULT_SECRET_ENV
from ensemble_extproc.envoy_bootstrap import render_yaml

ROOT = Path(__file__).resolve().parent.parent
PLAIN_ENVOY = ROOT / "deploy" / "kubernetes" / "plain-envoy"
CONFIG = PLAIN_ENVOY / "config.yaml"
OUTPUT = PLAIN_ENVOY / "envoy-bootstrap-configmap.yaml"
CONFIGMAP_NAME = "ensemble-envoy-bootstrap"
NAMESPACE = "ensemble"
BOOTSTRAP_KEY = "envoy.yaml"
# Stands in for every secret the config names; long enough for the internal secret check.
PLACEHOLDER = "render-placeholder-not-a-secret"


def secret_env_names(raw: Mapping[str, Any]) -> list[str]:
    """Names of the environment variables the config reads secrets from."""
    names = [DEFAULT_SECRET_ENV]
    for model in raw.get("models") or []:
        if isinstance(model, Mapping) and model.get("api_key_env"):
            names.append(str(model["api_key_env"]))
    for section, key in (("header_control", "api_keys_env"), ("security", "internal_secret_env")):
        block = raw.get(section)
        if isinstance(block, Mapping) and block.get(key):
            names.append(str(block[key]))
    return sorted(set(names))


def relative(path: Path) -> str:
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(path)


def render_bootstrap(config_path: Path = CONFIG) -> str:
    """The Envoy bootstrap YAML for the config at ``config_path``."""
    raw = yaml.safe_load(config_path.read_text())
    if not isinstance(raw, Mapping):
        raise ValueError(f"{config_path}: not a YAML mapping")
    environ = dict.fromkeys(secret_env_names(raw), PLACEHOLDER)
    return render_yaml(compile_config(raw, environ), relative(config_path))


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings as literal blocks, so the embedded bootstrap stays readable."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def render_configmap(config_path: Path = CONFIG) -> str:
    """The ConfigMap manifest holding the bootstrap under the key ``envoy.yaml``."""
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": CONFIGMAP_NAME,
            "namespace": NAMESPACE,
            "labels": {
                "app.kubernetes.io/name": "ensemble-envoy",
                "app.kubernetes.io/part-of": "ensemble-extproc",
            },
        },
        "data": {BOOTSTRAP_KEY: render_bootstrap(config_path)},
    }
    header = (
        f"# Generated from {relative(config_path)} by deploy/render_plain_envoy.py;"
        " do not edit by hand.\n"
        "# Re-render: python deploy/render_plain_envoy.py\n"
    )
    body = yaml.dump(configmap, Dumper=_BlockDumper, sort_keys=False, width=1000)
    return header + body


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, default=CONFIG, help="config to render from")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="ConfigMap file to write")
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the output is stale"
    )
    args = parser.parse_args(argv)
    expected = render_configmap(args.config)
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != expected:
            print(f"{relative(args.output)} is stale: run python deploy/render_plain_envoy.py")
            return 1
        print(f"{relative(args.output)}: up to date")
        return 0
    args.output.write_text(expected)
    print(f"wrote {relative(args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
