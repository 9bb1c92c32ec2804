"""The HTTPRoute matches that send chat completions to the processor on Envoy Gateway.

Usage (from the repository root, with the project installed, e.g. .venv/bin/python):

    python -m deploy.gateway_routes --config FILE   # the matches of route default-model-chat

On Envoy Gateway the EnvoyExtensionPolicy attaches the processor to HTTPRoutes, not to
requests: it targets the routes ``ensemble`` and ``default-model-chat``, and every other
request takes ``default-model`` without it. Which chat completions ``default-model-chat``
must match depends on the config, as for the rendered bootstrap (``ensemble_extproc.scope``):
all of them when a config key reads the body (profiles, rules, the difficulty signal), else
only those carrying a header the processor reads, one match per header (Gateway API
matches are ORed; a regular expression ``.*`` matches any value, empty included, and no
absent header). tests/test_deploy.py checks that httproutes.yaml holds these matches for
the ConfigMap's config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from deploy.render_plain_envoy import PLACEHOLDER, secret_env_names
from ensemble_extproc import paths
from ensemble_extproc.config import Config, compile_config
from ensemble_extproc.scope import scope


def processor_matches(config: Config) -> list[dict[str, Any]]:
    """The ``matches`` of the HTTPRoute whose chat completions go to the processor."""

    def chat() -> dict[str, Any]:
        return {
            "path": {"type": "Exact", "value": paths.CHAT_COMPLETIONS},
            "method": paths.CHAT_METHOD,
        }

    needed = scope(config)
    if needed.every_chat_completion:
        return [chat()]
    return [
        {**chat(), "headers": [{"type": "RegularExpression", "name": name, "value": ".*"}]}
        for name in needed.headers
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="the pods' YAML config")
    args = parser.parse_args(argv)
    raw = yaml.safe_load(args.config.read_text())
    config = compile_config(raw, dict.fromkeys(secret_env_names(raw), PLACEHOLDER))
    print(scope(config).describe().replace("\n", "\n# ").join(("# ", "\n")), end="")
    print(yaml.safe_dump({"matches": processor_matches(config)}, sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
