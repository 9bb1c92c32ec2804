"""The Envoy external processor (gRPC ext_proc)."""

from .decision import Decision, Passthrough, Reject, Reroute, decide
from .server import ExternalProcessor, create_server

__all__ = [
    "Decision",
    "ExternalProcessor",
    "Passthrough",
    "Reject",
    "Reroute",
    "create_server",
    "decide",
]
