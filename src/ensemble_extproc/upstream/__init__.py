"""The ensemble upstream (aiohttp)."""

from .app import create_app
from .client import EndpointClient, HttpEndpointClient
from .orchestrator import Fanout, Outcome

__all__ = ["EndpointClient", "Fanout", "HttpEndpointClient", "Outcome", "create_app"]
