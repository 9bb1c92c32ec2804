"""Small helpers shared by the tests (no fixtures here: see conftest.py)."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from typing import Any

from ensemble_extproc.config import Config, compile_config


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
