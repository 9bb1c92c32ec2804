"""The ensemble upstream: an OpenAI-compatible aiohttp service that Envoy re-routes to."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
from aiohttp import web

from ..config import Config
from ..errors import ApiError
from ..spec import upstream_spec
from .client import EndpointClient, HttpEndpointClient, forwardable
from .orchestrator import Fanout
from .request import parse_chat_request, read_body
from .response import completion_body, ensemble_headers, failure
from .stream_writer import stream_completion

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
FANOUT = web.AppKey("fanout", Fanout)


class InFlight:
    """Ensemble requests being served: bounded, so overload is a fast 429, not a queue."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if self.count >= self.limit:
            raise ApiError(
                429,
                f"the ensemble upstream is serving its limit of {self.limit} requests; "
                "retry shortly",
                type="rate_limit_error",
                code="too_many_ensembles",
                headers={"Retry-After": "1"},
            )
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


IN_FLIGHT = web.AppKey("in_flight", InFlight)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        error.body(), status=error.status, headers={**error.headers, **(headers or {})}
    )


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer that is not a completion is an OpenAI-style JSON error."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return error_response(
            ApiError(exc.status, f"{request.method} {request.path}: {exc.reason}", code=code)
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(
            ApiError(
                500,
                "internal error in the ensemble upstream",
                type="server_error",
                code="internal_error",
            )
        )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    with request.app[IN_FLIGHT].slot():
        return await _chat_completions(request)


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    body = parse_chat_request(await read_body(request, config.ensemble.max_body_bytes))
    spec = upstream_spec(request.headers, config, time.time())
    client_headers = forwardable(request.headers)
    if body.get("stream") is True:
        keepalive = config.ensemble.stream_keepalive_seconds
        return await stream_completion(
            request, request.app[FANOUT], spec, body, keepalive, error_response, client_headers
        )
    outcome = await request.app[FANOUT].run(spec, body, client_headers=client_headers)
    headers = ensemble_headers(outcome)
    if outcome.selection is None:
        return error_response(failure(outcome), headers)
    return web.json_response(
        completion_body(outcome, outcome.selection, int(time.time())), headers=headers
    )


async def list_models(request: web.Request) -> web.Response:
    endpoints = request.app[CONFIG].endpoints.values()
    data = [
        {
            "id": endpoint.name,
            "object": "model",
            "created": 0,
            "owned_by": "ensemble-extproc-demo" if endpoint.demo else "ensemble-extproc",
        }
        for endpoint in endpoints
    ]
    return web.json_response({"object": "list", "data": data})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _fanout_context(
    config: Config, client: EndpointClient | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        if client is not None:
            app[FANOUT] = Fanout(config.endpoints, config.ensemble, client)
            yield
            return
        # One session per app; its pool admits every call the fan-out may run at once.
        limit = config.ensemble.max_concurrent_requests
        connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
        async with aiohttp.ClientSession(connector=connector) as session:
            http_client = HttpEndpointClient(session, config.ensemble.max_response_bytes)
            app[FANOUT] = Fanout(config.endpoints, config.ensemble, http_client)
            yield

    return context


def create_app(config: Config, client: EndpointClient | None = None) -> web.Application:
    """The upstream app; ``client`` replaces the HTTP endpoint client (tests)."""
    # The body limit is enforced by read_body with an OpenAI-style 413.
    app = web.Application(
        middlewares=[openai_errors], client_max_size=config.ensemble.max_body_bytes
    )
    app[CONFIG] = config
    app[IN_FLIGHT] = InFlight(config.ensemble.max_in_flight)
    app.cleanup_ctx.append(_fanout_context(config, client))
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/healthz", healthz)
    return app
