"""A model endpoint that records every request it receives (a real provider stand-in).

It runs in its own thread with its own event loop, so blocking clients (curl, http.client)
and async tests can both use it. Chat completions get an OpenAI answer, ``.../models`` a
model list, anything else a 404; with ``tls``, it serves HTTPS with a certificate from a
throwaway CA (trustme) and records the SNI name each handshake asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import trustme
from aiohttp import web

from helpers import free_port


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # with the query string, as received
    headers: dict[str, str]  # lower-case names; repeated ones joined with ", "
    body: bytes


@dataclass
class Capture:
    host: str
    port: int
    scheme: str
    answer: str
    requests: list[Seen] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)

    def url(self, base: str = "/v1", host: str | None = None) -> str:
        return f"{self.scheme}://{host or self.host}:{self.port}{base}"

    def clear(self) -> None:
        self.requests.clear()
        self.server_names.clear()


def _headers(request: web.Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


def _app(capture: Capture) -> web.Application:
    async def record(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        capture.requests.append(Seen(request.method, request.path_qs, _headers(request), body))
        path = request.path
        if request.method == "POST" and path.endswith("/chat/completions"):
            model = json.loads(body or b"{}").get("model", "capture")
            return web.json_response(
                {
                    "id": "chatcmpl-capture",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": capture.answer},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                }
            )
        if request.method == "GET" and (path.endswith("/models") or "/models/" in path):
            data = [{"id": "capture", "object": "model", "created": 0, "owned_by": "test"}]
            return web.json_response({"object": "list", "data": data})
        error = {"message": f"no {path}", "type": "invalid_request_error", "code": None}
        return web.json_response({"error": error}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    return app


@contextlib.contextmanager
def capture_server(
    host: str = "127.0.0.1", tls: ssl.SSLContext | None = None, answer: str = "Paris."
) -> Iterator[Capture]:
    """Serve on ``host`` (a free port) until the block ends."""
    capture = Capture(host, free_port(), "https" if tls else "http", answer)
    if tls is not None:
        tls.sni_callback = lambda _sock, name, _ctx: capture.server_names.append(name)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(_app(capture))
    started = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, host, capture.port, ssl_context=tls)
        loop.run_until_complete(site.start())
        started.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    if not started.wait(10):
        raise TimeoutError("the capture server did not start")
    try:
        yield capture
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@dataclass(frozen=True)
class Pki:
    """A trusted CA (its PEM file is what ``ca_file`` names) and an unrelated one."""

    ca_file: str
    trusted: trustme.CA
    untrusted: trustme.CA

    def server_context(self, ca: trustme.CA, *names: str) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(*names).configure_cert(context)
        return context


def make_pki(directory: Any) -> Pki:
    trusted, untrusted = trustme.CA(), trustme.CA()
    path = f"{directory}/ca.pem"
    trusted.cert_pem.write_to_path(path)
    return Pki(path, trusted, untrusted)
