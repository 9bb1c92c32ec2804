"""Small helpers shared by the tests (fixtures are in conftest.py, whole gateways in
parts.py)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import grpc
from aiohttp import web
from bench import speedkit

from ensemble_extproc._pb.envoy.config.core.v3 import base_pb2 as core
from ensemble_extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from ensemble_extproc._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from ensemble_extproc.config import Address, Config, compile_config
from ensemble_extproc.extproc import create_server
from ensemble_extproc.observability.metrics import ProcessorMetrics
from ensemble_extproc.observability.tracing import Tracing

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


async def trickle_post(
    host: str,
    port: int,
    headers: Mapping[str, str],
    body: bytes,
    pause: float,
    path: str = "/v1/chat/completions",
) -> tuple[int, bytes]:
    """A slow client: the request line and headers at once, then the body one byte every
    ``pause`` seconds until the server answers or closes. Returns the status (0 when the
    server closed without answering) and the raw response."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        head = f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(head.encode() + b"\r\n")
        await writer.drain()
        answer = asyncio.ensure_future(reader.read(65536))
        for index in range(len(body)):
            done, _ = await asyncio.wait({answer}, timeout=pause)
            if done:
                break
            writer.write(body[index : index + 1])
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        raw = await answer
        # The rest of the answer: its content-length, or up to the server's close.
        while raw and not _complete(raw):
            try:
                more = await asyncio.wait_for(reader.read(65536), 5.0)
            except TimeoutError:
                break
            if not more:
                break
            raw += more
    except ConnectionError:
        return 0, b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    status = int(raw.split(b" ", 2)[1]) if raw.startswith(b"HTTP/") else 0
    return status, raw


def _complete(raw: bytes) -> bool:
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def listen_block() -> dict[str, str]:
    """A config's ``listen`` block: every part on its own free loopback port, one that no
    other part of this test process was given."""
    return speedkit.listen_block(port=free_port)


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, **runner: Any) -> AsyncIterator[str]:
    """Serve an aiohttp app on a free loopback port: its base URL; stopped on exit."""
    app_runner = web.AppRunner(app, **runner)
    await app_runner.setup()
    try:
        site = web.TCPSite(app_runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{app_runner.addresses[0][1]}"
    finally:
        await app_runner.cleanup()


@contextlib.asynccontextmanager
async def processor_stub(
    config: Config, metrics: ProcessorMetrics | None = None, tracing: Tracing | None = None
) -> AsyncIterator[pb_grpc.ExternalProcessorStub]:
    """A processor for ``config`` on a free port, and a gRPC client of it."""
    server, port = create_server(config, Address("127.0.0.1", 0), metrics, tracing)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield pb_grpc.ExternalProcessorStub(channel)
    finally:
        await server.stop(None)


def headers_message(headers: dict[str, str], end_of_stream: bool = False) -> pb.ProcessingRequest:
    base = {":method": "POST", ":path": "/v1/chat/completions", ":authority": "gw"}
    header_map = core.HeaderMap(
        headers=[
            core.HeaderValue(key=k, raw_value=v.encode()) for k, v in {**base, **headers}.items()
        ]
    )
    return pb.ProcessingRequest(
        request_headers=pb.HttpHeaders(headers=header_map, end_of_stream=end_of_stream)
    )


async def demo_stats(base_url: str) -> dict[str, int]:
    root = base_url.removesuffix("/v1")
    async with aiohttp.ClientSession() as session, session.get(f"{root}/demo/stats") as resp:
        stats: dict[str, int] = await resp.json()
        return stats
