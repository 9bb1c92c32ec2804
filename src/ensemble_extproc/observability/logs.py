"""Structured JSON logs: one object per line, Envoy's x-request-id on every line of a request."""

from __future__ import annotations

import contextvars
import json
import logging
import time
from typing import Any

# The request being served by this task (each gRPC stream and HTTP request is a task).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ensemble_request_id", default=None
)
# Attributes every LogRecord has; anything else came in ``extra=`` and is logged as a field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self._component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "component": self._component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(component: str, level: str, fmt: str) -> None:
    """Root logging for one process: ``json`` (default) or ``text``."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s {component} %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log repeats what the summary lines and Envoy's access log say.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
