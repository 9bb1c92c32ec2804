"""Structured JSON logs: one object per line, Envoy's x-request-id on every line of a request."""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from ..redact import Redactor

# The request being served by this task (each gRPC stream and HTTP request is a task).
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ensemble_request_id", default=None
)
# Credentials of the client being served by this task (its own key): masked in log lines.
REQUEST_SECRETS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "ensemble_request_secrets", default=()
)
# Attributes every LogRecord has; anything else came in ``extra=`` and is logged as a field.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self._component = component
        # json.dumps(entry, default=str) builds an encoder per call; the same one, kept.
        self._encode = json.JSONEncoder(default=str).encode

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
        return self._encode(entry)


class RedactingFormatter(logging.Formatter):
    """The last line of defence: whatever a log call was given (messages, ``extra`` fields,
    tracebacks), configured secrets and the client's own credentials leave masked."""

    def __init__(self, inner: logging.Formatter, redact: Callable[[str], str]) -> None:
        super().__init__()
        self._inner = inner
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line = self._redact(self._inner.format(record))
        client = REQUEST_SECRETS.get()
        return Redactor(client)(line) if client else line


def configure(
    component: str, level: str, fmt: str, redact: Callable[[str], str] | None = None
) -> None:
    """Root logging for one process: ``json`` (default) or ``text``; ``redact`` masks the
    config's secrets (``redact.config_redactor``) in every line."""
    handler = logging.StreamHandler()
    inner = (
        JsonFormatter(component)
        if fmt == "json"
        else logging.Formatter(f"%(asctime)s {component} %(levelname)s %(name)s: %(message)s")
    )
    handler.setFormatter(RedactingFormatter(inner, redact or Redactor()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log repeats what the summary lines and Envoy's access log say.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
