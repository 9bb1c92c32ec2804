"""Small helpers shared by the tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ensemble_extproc.config import Config, compile_config

# Ports handed out in this test process: the kernel may offer a released port again, and
# a config with the same port twice does not start.
_GIVEN: set[int] = set()


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


def make_config(
    urls: Mapping[str, str],
    *,
    ensemble: Mapping[str, Any] | None = None,
    listen: Mapping[str, str] | None = None,
    default_model: str | None = None,
) -> Config:
    raw: dict[str, Any] = {
        "models": [{"name": name, "url": url} for name, url in urls.items()],
        "default_model": default_model or next(iter(urls)),
        "ensemble": dict(ensemble or {}),
        "listen": dict(listen or {}),
    }
    return compile_config(raw)


def chat(content: str = "What is the capital of France?", **extra: Any) -> dict[str, Any]:
    return {"model": "any", "messages": [{"role": "user", "content": content}], **extra}


def http_post(
    url: str, body: Any, headers: Mapping[str, str], timeout: float
) -> tuple[int, dict[str, str], bytes]:
    """A plain blocking POST that returns every status (no exceptions for 4xx/5xx)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request(
            "POST",
            parts.path,
            json.dumps(body),
            {"content-type": "application/json", **headers},
        )
        response = connection.getresponse()
        raw = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, raw
    finally:
        connection.close()
