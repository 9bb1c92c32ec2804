"""Our processor on a chosen event loop, for bench/overhead.py's loop comparison.

    python -m bench.loops --config FILE --loop uvloop|asyncio

The same service as ``ensemble-extproc extproc`` (logging as there), whatever loop the
command itself uses.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import uvloop

from ensemble_extproc.config import load_config
from ensemble_extproc.observability import logs
from ensemble_extproc.redact import config_redactor
from ensemble_extproc.serve import service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), required=True)
    args = parser.parse_args()
    config = load_config(args.config)
    logs.configure("extproc", "INFO", config.logging.format, config_redactor(config))
    (uvloop.run if args.loop == "uvloop" else asyncio.run)(service("extproc")(config))


if __name__ == "__main__":
    main()
