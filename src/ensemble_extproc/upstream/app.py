"""The ensemble upstream: an OpenAI-compatible aiohttp service that Envoy re-routes to."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from .. import headers as h
from ..chat import ChatRequest, parse_chat_request
from ..config import Config
from ..errors import ApiError, ErrorCode
from ..internal import ReplayGuard
from ..json_out import encode
from ..observability.logs import REQUEST_ID, REQUEST_SECRETS
from ..observability.metrics import (
    CONTENT_TYPE_LATEST,
    UpstreamMetrics,
    generate_latest,
    process_registry,
)
from ..observability.tracing import Tracing, start_tracing
from ..paths import MODELS
from ..redact import Redactor, client_credentials, config_redactor
from ..serve import DRAIN_SECONDS, GRACE_SECONDS, LISTEN_BACKLOG, wait_for_signal
from ..spec import EnsembleSpec, upstream_spec
from ..trust.feed import client_identity
from ..trust.report import TrustCollector, trust_report
from ..trust.service import TrustService, default_replica_id
from .auth import signed_ensembles
from .client import NO_SECRETS, EndpointClient, HttpEndpointClient, forwardable
from .discovery import catalog, find
from .openapi import JSON, OPENAPI_PATH, SEED_HEALTH_PATH, TRUST_PATH, openapi_handler
from .orchestrator import Fanout, Outcome
from .request import read_body
from .response import completion, ensemble_headers, failure, log_fields
from .stream_writer import stream_completion
from .wire import Health, ModelList, SeedHealth

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
                ErrorCode.TOO_MANY_ENSEMBLES,
                f"the ensemble upstream is serving its limit of {self.limit} requests; "
                "retry shortly",
                headers={"Retry-After": "1"},
            )
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


# What the request asked and what its ensemble did, for its span (upstream.tracing).
CHAT = web.RequestKey("chat", ChatRequest)
OUTCOME = web.RequestKey("outcome", Outcome)

IN_FLIGHT = web.AppKey("in_flight", InFlight)
REDACT = web.AppKey("redact", Redactor)
METRICS = web.AppKey("metrics", UpstreamMetrics)
TRUST = web.AppKey("trust", TrustService)
# Set on SIGTERM: health checks fail so that Envoy moves new requests elsewhere.
DRAINING = web.AppKey("draining", asyncio.Event)


def error_response(
    error: ApiError,
    headers: dict[str, str] | None = None,
    redact: Callable[[str], str] = NO_SECRETS,
) -> web.Response:
    # Candidate errors are masked where they are made; this masks whatever else got in.
    return web.Response(
        text=redact(error.body_bytes().decode()),
        status=error.status,
        content_type=JSON,
        headers={**error.headers, **(headers or {})},
    )


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer that is not a completion is an OpenAI-style JSON error."""
    REQUEST_ID.set(request.headers.get("x-request-id"))
    REQUEST_SECRETS.set(client_credentials(request.headers))
    try:
        return await handler(request)
    except ApiError as error:
        request.app[METRICS].rejected.labels(error.code or "none").inc()
        response = error_response(error, redact=request.app[REDACT])
        if error.status in (408, 413, 415):
            # The body was not read (or not all of it): the connection cannot carry another
            # request.
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}.get(
            exc.status, ErrorCode.HTTP_ERROR
        )
        # RFC 9110: a 405 says which methods are allowed.
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return error_response(
            ApiError(code, f"{request.method} {request.path}: {exc.reason}", status=exc.status),
            allow,
            request.app[REDACT],
        )
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(
            ApiError(ErrorCode.INTERNAL_ERROR, "internal error in the ensemble upstream")
        )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    started = time.monotonic()
    # Everything the client sends is in and checked before the request takes a slot: a
    # client trickling its body holds a connection (for body_timeout_seconds at most),
    # never one of the max_in_flight slots that ensembles need.
    ensemble = config.ensemble
    raw = await read_body(request, ensemble.max_body_bytes, ensemble.body_timeout_seconds)
    chat = request[CHAT] = parse_chat_request(raw)
    spec = upstream_spec(request.headers, config)
    with request.app[IN_FLIGHT].slot():
        return await _chat_completions(request, chat, spec, started)


def record(request: web.Request, outcome: Outcome, started: float) -> None:
    """Metrics and the one summary log line of an ensemble."""
    request[OUTCOME] = outcome
    config = request.app[CONFIG]
    seconds = time.monotonic() - started
    selection, result = outcome.selection, outcome.result
    agreement = selection.agreement if selection else None
    request.app[METRICS].ensemble(
        outcome.spec.strategy,
        result,
        seconds,
        outcome.candidates,
        agreement,
    )
    for resume in outcome.resumes:
        request.app[METRICS].resumed(resume.broken, resume.resumed_on)
    spent = outcome.cost
    summary: dict[str, Any] = {
        "strategy": outcome.spec.strategy,
        "profile": outcome.spec.profile,
        "outcome": result,
        "winner": selection.winner.model if selection else None,
        "agreement": agreement,
        "latency_ms": round(seconds * 1000, 1),
        "calls": [log_fields(candidate) for candidate in outcome.candidates],
        # A lower bound unless cost_complete: cost_unknown names the calls' models.
        "cost_usd": round(spent.total_usd, 12),
        "cost_complete": spent.complete,
        "cost_unknown": list(spent.unknown),
        "max_cost_usd": spent.max_usd,
        "cost_capped": list(spent.not_started),
        "resumes": [
            {"broken": r.broken, "resumed_on": r.resumed_on, "chars": r.chars}
            for r in outcome.resumes
        ],
    }
    if config.logging.include_text and selection is not None:
        summary["answer"] = selection.winner.content[:2000]
    log.info("ensemble %s", result, extra={"ensemble": summary})
    trust = request.app[TRUST]
    if trust.enabled and not outcome.learning_sample:
        trust.not_sampled += 1
    elif trust.enabled:
        client = client_identity(request.headers, request.remote)
        grouped = selection.groups if selection is not None else None
        trust.observe(
            outcome.spec.profile, outcome.spec.models, outcome.candidates, client, grouped
        )


async def _chat_completions(
    request: web.Request, chat: ChatRequest, spec: EnsembleSpec, started: float
) -> web.StreamResponse:
    config = request.app[CONFIG]
    client_headers = forwardable(request.headers)
    redact = request.app[REDACT]
    if chat.stream:
        keepalive = config.ensemble.stream_keepalive_seconds
        response, streamed = await stream_completion(
            request,
            request.app[FANOUT],
            spec,
            chat,
            keepalive,
            functools.partial(error_response, redact=redact),
            client_headers,
            config.seed_dialect,
        )
        record(request, streamed, started)
        return response
    outcome = await request.app[FANOUT].run(spec, chat.body, client_headers=client_headers)
    record(request, outcome, started)
    headers = ensemble_headers(outcome, config.seed_dialect)
    if outcome.selection is None:
        return error_response(failure(outcome), headers, redact)
    answer = completion(outcome, outcome.selection, int(time.time()))
    return _json(answer, headers=headers)


def _json(value: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=encode(value), status=status, headers=headers, content_type=JSON)


async def list_models(request: web.Request) -> web.Response:
    return _json(ModelList(data=catalog(request.app[CONFIG])))


async def get_model(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    model = find(request.app[CONFIG], name)
    if model is None:
        raise ApiError(
            ErrorCode.UNKNOWN_MODEL,
            f"no model or profile named {name[:200]!r} here; GET /v1/models lists them",
            param="model",
        )
    return _json(model)


async def healthz(request: web.Request) -> web.Response:
    if request.app[DRAINING].is_set():
        return _json(Health("draining"), status=503)
    return _json(Health("ok"))


async def seed_health(request: web.Request) -> web.Response:
    """``GET /health`` as the semantic router's ensemble service answers it."""
    if request.app[DRAINING].is_set():
        return _json(SeedHealth("draining"), status=503)
    return _json(SeedHealth("healthy"))


async def admin_trust(request: web.Request) -> web.Response:
    """Read-only, for operators: what the trust book learned (docs/trust.md).

    Only asked directly on the upstream's port: a request that came through Envoy's
    ensemble route carries the processor's route header (clients cannot forge it), and
    is told there is nothing here."""
    if h.ROUTE in request.headers:
        raise web.HTTPNotFound()
    return web.json_response(trust_report(request.app[TRUST]))


def trust_service(config: Config) -> TrustService:
    settings = config.ensemble.trust
    return TrustService(
        settings,
        {name: endpoint.accuracy for name, endpoint in config.endpoints.items()},
        config.ensemble.similarity_threshold,
        settings.replica_id or default_replica_id(config.listen.upstream.port),
    )


def _trust_context(service: TrustService) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        async with service.running():
            yield

    return context


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})


def _fanout(
    config: Config, client: EndpointClient, trust: TrustService, tracing: Tracing | None
) -> Fanout:
    if tracing is None:
        return Fanout(config.endpoints, config.ensemble, client, trust)
    from .tracing import TracedFanout  # imports OpenTelemetry: only when tracing is on

    return TracedFanout(tracing, config.endpoints, config.ensemble, client, trust)


def _fanout_context(
    config: Config, client: EndpointClient | None, trust: TrustService, tracing: Tracing | None
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            calls = client
            if calls is None:
                # One session per app; its pool admits every call the fan-out may run at once.
                limit = config.ensemble.max_concurrent_requests
                connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
                session = await stack.enter_async_context(
                    aiohttp.ClientSession(connector=connector)
                )
                calls = HttpEndpointClient(session, config.ensemble.max_response_bytes, app[REDACT])
            app[FANOUT] = _fanout(config, calls, trust, tracing)
            app[METRICS].watch_circuits(app[FANOUT].circuit_states)
            yield

    return context


def create_app(
    config: Config, client: EndpointClient | None = None, tracing: Tracing | None = None
) -> web.Application:
    """The upstream app; ``client`` replaces the HTTP endpoint client (tests); with
    ``tracing``, every ensemble is a span and each of its calls a child span."""
    # The body limit is enforced by read_body with an OpenAI-style 413. Bodies are never
    # inflated (a compressed one is a 415, body.py): without auto_decompress aiohttp does
    # not decode one either, not even the rest of a refused body it reads to keep the
    # connection (a broken gzip body logged a traceback per request there).
    # Signatures are checked (once each) before a handler reads the body.
    signed = signed_ensembles(config, ReplayGuard(), time.time)
    middlewares: list[Middleware] = [openai_errors, signed]
    if tracing is not None:
        from .tracing import tracing_middleware

        # Outermost: the span sees the answer as the client gets it, errors included.
        middlewares.insert(0, tracing_middleware(tracing, OUTCOME, CHAT))
    app = web.Application(
        middlewares=middlewares,
        client_max_size=config.ensemble.max_body_bytes,
        handler_args={"auto_decompress": False},
    )
    app[CONFIG] = config
    app[REDACT] = config_redactor(config)
    app[DRAINING] = asyncio.Event()
    app[IN_FLIGHT] = in_flight = InFlight(config.ensemble.max_in_flight)
    app[METRICS] = UpstreamMetrics(process_registry())
    app[METRICS].in_flight.set_function(lambda: in_flight.count)
    app[TRUST] = trust = trust_service(config)
    app[METRICS].registry.register(TrustCollector(trust))
    app.cleanup_ctx.append(_fanout_context(config, client, trust, tracing))
    app.cleanup_ctx.append(_trust_context(trust))
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get(MODELS, list_models)
    # A model's id may hold slashes (org/model).
    app.router.add_get(MODELS + "/{model:.+}", get_model)
    app.router.add_get("/healthz", healthz)
    if config.seed_dialect:
        app.router.add_get(SEED_HEALTH_PATH, seed_health)
    app.router.add_get(OPENAPI_PATH, openapi_handler(config))
    app.router.add_get("/metrics", metrics)
    app.router.add_get(TRUST_PATH, admin_trust)
    return app


async def serve_upstream(config: Config) -> None:
    """Serve until SIGINT/SIGTERM, then drain (``serve.py``)."""
    # Cancel the fan-out when Envoy gives up on a request, instead of finishing it unseen.
    tracing = start_tracing(config.tracing, "upstream")
    app = create_app(config, tracing=tracing)
    runner = web.AppRunner(
        app, shutdown_timeout=GRACE_SECONDS, access_log=None, handler_cancellation=True
    )
    await runner.setup()
    address = config.listen.upstream
    site = web.TCPSite(runner, address.host, address.port, reuse_port=False, backlog=LISTEN_BACKLOG)
    await site.start()
    log.info("ensemble upstream listening on http://%s", address)
    try:
        await wait_for_signal()
        app[DRAINING].set()  # /healthz answers 503: Envoy stops sending new requests
        await asyncio.sleep(DRAIN_SECONDS)
    finally:
        await runner.cleanup()
        if tracing is not None:
            tracing.shutdown()  # the spans still buffered are exported
