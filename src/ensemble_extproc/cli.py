"""Command line: ``ensemble-extproc <command> --config FILE``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .config import Config, ConfigError, load_config
from .envoy_bootstrap import render_yaml
from .observability import logs
from .serve import SERVICES
from .stack import run_stack

DEFAULT_CONFIG = Path("config/default.yaml")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ensemble-extproc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {
        "run": "start the whole gateway: demo models, upstream, ext_proc and Envoy",
        "extproc": "serve the gRPC external processor",
        "upstream": "serve the ensemble upstream (OpenAI-compatible HTTP)",
        "demo": "serve the config's demo models",
        "envoy-config": "print the Envoy bootstrap for the config (YAML)",
        "check-config": "validate the config and exit",
    }
    for name, text in helps.items():
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="YAML config file")
        sub.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    return parser


def _execute(command: str, config: Config, path: Path) -> int:
    if command == "check-config":
        print(f"{path}: ok ({len(config.endpoints)} models)")
        return 0
    if command == "envoy-config":
        print(render_yaml(config, str(path)), end="")
        return 0
    if command == "run":
        return asyncio.run(run_stack(config, path))
    asyncio.run(SERVICES[command](config))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid config {args.config}: {exc}", file=sys.stderr)
        return 2
    logs.configure(args.command, args.log_level, config.log_format)
    return _execute(args.command, config, args.config)
