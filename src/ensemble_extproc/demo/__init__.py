"""Demo model backends: canned OpenAI-compatible servers, clearly labelled as demo.

They make the gateway usable without a real LLM and serve as model endpoints in tests.
"""

from ensemble_extproc.config.demo import (
    DEFAULT_ANSWER,
    MAX_LATENCY_MS,
    DemoModel,
    parse_demo_models,
)
from ensemble_extproc.demo.server import (
    DEMO_MODEL_HEADER,
    DEMO_MODEL_KEY,
    DEMO_OWNED_BY,
    DEMO_STATS_KEY,
    DemoServers,
    DemoStats,
    create_demo_app,
    serve_demo_forever,
    start_demo_servers,
)

__all__ = [
    "DEFAULT_ANSWER",
    "DEMO_MODEL_HEADER",
    "DEMO_MODEL_KEY",
    "DEMO_OWNED_BY",
    "DEMO_STATS_KEY",
    "MAX_LATENCY_MS",
    "DemoModel",
    "DemoServers",
    "DemoStats",
    "create_demo_app",
    "parse_demo_models",
    "serve_demo_forever",
    "start_demo_servers",
]
