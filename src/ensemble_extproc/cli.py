"""Command line: ``ensemble-extproc <command> --config FILE``; ``group`` reads stdin."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import replace
from pathlib import Path

import msgspec
import uvloop

from . import group_command, healthcheck
from .config import Config, ConfigError, EnsembleSettings, load_config
from .config.schema import config_schema
from .cpus import usable_cpus
from .envoy_bootstrap import render_yaml
from .envoy_names import replica_addresses
from .healthcheck import DEFAULT_CONFIG
from .observability import logs
from .redact import config_redactor
from .scope import scope
from .serve import service
from .stack import Replicas, run_stack


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
        if name in ("run", "envoy-config"):
            # run: the machine's CPUs; envoy-config renders for another deployment, so its
            # output does not depend on the machine it runs on.
            default = AUTO if name == "run" else "1"
            for part in ("extproc", "upstream"):
                sub.add_argument(
                    f"--{part}-replicas",
                    type=_replicas,
                    default=default,
                    help=f"{part} processes on consecutive ports from listen.{part}: a "
                    f"number, or {AUTO} for one per usable CPU (default: {default})",
                )
        if name in ("extproc", "upstream"):
            sub.add_argument(
                "--replica",
                type=int,
                default=0,
                help="replica number: listens on the configured port + this",
            )
    text = (
        "exit 0 when the servers answer their health checks (the upstream's /healthz, the "
        "processor's gRPC health), else 1; with no --part: the servers running here"
    )
    check = commands.add_parser("healthcheck", help=text, description=text)
    check.add_argument("--part", action="append", choices=healthcheck.PARTS, default=[])
    check.add_argument(
        "--config", type=Path, default=None, help=f"with --part: YAML config ({DEFAULT_CONFIG})"
    )
    check.add_argument("--replica", type=int, default=0, help="with --part: replica number")
    check.add_argument("--timeout", type=float, default=3.0, help="seconds per check")
    text = "print the config file's JSON Schema (config/schema.json; editors validate with it)"
    commands.add_parser("config-schema", help=text, description=text)
    text = "print how a JSON list of answers on stdin groups, as voting counts them"
    group = commands.add_parser("group", help=text, description=text)
    group.add_argument(
        "--config",
        type=Path,
        default=None,
        help="YAML config file whose ensemble.similarity_threshold applies (else its default)",
    )
    group.add_argument(
        "--similarity", type=float, default=None, help="free-text similarity in (0, 1]"
    )
    return parser


AUTO = "auto"


def _replicas(text: str) -> int:
    """A positive number of processes, or ``auto``: one per usable CPU (``cpus``)."""
    if text == AUTO:
        return usable_cpus()
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number or {AUTO}, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def for_replica(config: Config, command: str, replica: int) -> Config:
    """The config of replica ``replica``: its ports are the configured ones + ``replica``."""
    if replica == 0:
        return config
    names = ("extproc", "extproc_metrics") if command == "extproc" else ("upstream",)
    listen = config.listen
    moved = {name: replica_addresses(getattr(listen, name), replica + 1)[-1] for name in names}
    return replace(config, listen=msgspec.structs.replace(listen, **moved))


def _execute(args: argparse.Namespace, config: Config) -> int:
    command, path = args.command, args.config
    if command == "check-config":
        print(f"{path}: ok ({len(config.endpoints)} models)")
        # What the config costs per request: which requests the processor must see.
        print(scope(config).describe())
        return 0
    if command == "envoy-config":
        rendered = render_yaml(config, str(path), args.extproc_replicas, args.upstream_replicas)
        print(rendered, end="")
        return 0
    if command == "run":
        replicas = Replicas(args.extproc_replicas, args.upstream_replicas)
        return asyncio.run(run_stack(config, path, replicas))
    if command in ("extproc", "upstream"):
        config = for_replica(config, command, args.replica)
    # uvloop's event loop costs less per request: for aiohttp's servers and clients, and
    # under grpc.aio too (bench/RESULTS.md, "uvloop under grpc.aio": 6-8 % less processor
    # CPU per stream than asyncio's loop, paired rounds).
    uvloop.run(service(command)(config))
    return 0


def _group(args: argparse.Namespace) -> int:
    similarity = args.similarity
    try:
        if similarity is None:
            path = args.config
            settings = load_config(path).ensemble if path is not None else EnsembleSettings()
            similarity = settings.similarity_threshold
        if not 0 < similarity <= 1:
            raise group_command.InputError(f"--similarity must be in (0, 1], got {similarity}")
        group_command.run(sys.stdin, sys.stdout, similarity)
    except (ConfigError, group_command.InputError) as exc:
        print(f"ensemble-extproc group: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "group":
        return _group(args)
    if args.command == "healthcheck":
        if args.config is not None and not args.part:
            print("ensemble-extproc healthcheck: --config needs --part", file=sys.stderr)
            return 2
        status, lines = healthcheck.run(args.config, args.part, args.replica, args.timeout)
        print("\n".join(lines), file=sys.stderr if status else sys.stdout)
        return status
    if args.command == "config-schema":
        print(json.dumps(config_schema(), indent=2))
        return 0
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid config {args.config}: {exc}", file=sys.stderr)
        return 2
    component = args.command + (f"-{args.replica}" if getattr(args, "replica", 0) else "")
    logs.configure(component, args.log_level, config.logging.format, config_redactor(config))
    return _execute(args, config)
