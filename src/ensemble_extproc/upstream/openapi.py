"""The ensemble upstream's API as an OpenAPI 3.1 document, served at ``GET /openapi.json``.

The schemas are derived from the wire models (``chat.ChatCompletionRequest`` and
``upstream/wire.py``), the error tables from ``errors.ErrorCode`` and Envoy's own replies;
only what depends on the config (model names and limits in the header patterns, profile
names) is added here. ``tests/test_openapi.py`` checks that the request validation agrees
with the request schema and ``tests/test_fuzz_api.py`` fuzzes the live service against the
whole document.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from .. import __version__
from .. import headers as h
from ..chat import ChatCompletionRequest
from ..config import Config, EnsembleSettings
from ..envoy_names import LOCAL_REPLY_ERRORS
from ..errors import ErrorCode
from ..paths import CHAT_COMPLETIONS, MODELS
from ..spec import DECIMAL, FALSE_WORDS, TRUE_WORDS
from ..strategies import STRATEGIES
from .wire import (
    ERROR_TYPES,
    ChatCompletion,
    ChatCompletionChunk,
    ErrorResponse,
    Health,
    Model,
    ModelList,
    SeedHealth,
)

OPENAPI_VERSION = "3.1.0"
OPENAPI_PATH = "/openapi.json"
CHAT_PATH = CHAT_COMPLETIONS
MODELS_PATH = MODELS
HEALTH_PATH = "/healthz"
# The semantic router's ensemble service answers health here (semantic_router.dialect).
SEED_HEALTH_PATH = "/health"
METRICS_PATH = "/metrics"
TRUST_PATH = "/admin/trust"

JSON = "application/json"
TEXT = "text/plain"
SSE = "text/event-stream"

Schema = dict[str, Any]

_REF = "#/components/schemas/"
_HEADER_SPACE = "[ \\t]*"
# Characters with a meaning in an ECMA-262 pattern (the dialect of JSON Schema's `pattern`).
_REGEX_SPECIAL = frozenset("\\^$.|?*+()[]{}/")


def _ref(name: str) -> Schema:
    return {"$ref": _REF + name}


def _escape(text: str) -> str:
    """``text`` as a literal in an ECMA-262 pattern (``re.escape`` also escapes ``-``,
    which a unicode-mode ECMA regex rejects)."""
    return "".join("\\" + c if c in _REGEX_SPECIAL else c for c in text)


def _any_case(word: str) -> str:
    """A pattern matching ``word`` in any letter case (JSON Schema patterns have no flags)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else _escape(c) for c in word)


def enable_pattern() -> str:
    """The values ``x-ensemble-enable`` accepts: those of ``spec.parse_enable``."""
    words = "|".join(_any_case(word) for word in sorted(TRUE_WORDS | FALSE_WORDS))
    return f"^{_HEADER_SPACE}(?:{words}){_HEADER_SPACE}$"


def models_pattern(names: Iterable[str], max_models: int) -> str:
    """A comma-separated list of 1..``max_models`` of ``names`` (duplicates are a 400 that a
    pattern does not express)."""
    alternatives = "|".join(_escape(name) for name in names)
    one = f"{_HEADER_SPACE}(?:{alternatives}){_HEADER_SPACE}"
    return f"^{one}(?:,{one}){{0,{max_models - 1}}}$"


MIN_RESPONSES_PATTERN = f"^{_HEADER_SPACE}0*[1-9][0-9]*{_HEADER_SPACE}$"


def min_responses_pattern(max_models: int) -> str:
    """A positive integer no larger than ``max_models`` (leading zeros allowed, as
    ``spec`` reads it); no larger than the request's own model count is a 400 that a
    pattern does not express."""
    numbers = "|".join(str(n) for n in range(max_models, 0, -1))
    return f"^{_HEADER_SPACE}0*(?:{numbers}){_HEADER_SPACE}$"


# Any comma-separated list of non-empty names (the document built without a config).
GENERIC_MODELS_PATTERN = (
    f"^{_HEADER_SPACE}[^,\\s]+{_HEADER_SPACE}(?:,{_HEADER_SPACE}[^,\\s]+{_HEADER_SPACE})*$"
)
DECIMAL_PATTERN = "^[0-9]+$"
# What spec reads as US dollars: a decimal, optionally with an exponent.
USD_PATTERN = f"^{_HEADER_SPACE}{DECIMAL}{_HEADER_SPACE}$"
# What the upstream writes: plain decimals.
USD_OUT_PATTERN = "^[0-9]+(?:\\.[0-9]+)?$"


def _error_codes() -> dict[int, dict[str, str]]:
    """Error codes by HTTP status (the `code` of the error object): ours, then Envoy's own
    replies."""
    codes: dict[int, dict[str, str]] = {}
    for code in ErrorCode:
        if code.description:
            codes.setdefault(code.status, {})[code.code] = code.description
    for status, _, name in LOCAL_REPLY_ERRORS:
        codes.setdefault(status, {}).setdefault(name, "through the gateway: Envoy's own reply")
    return dict(sorted(codes.items()))


ERROR_CODES = _error_codes()
# The error event that ends a stream which had already started (HTTP status 200).
STREAM_ERROR_CODES = {c.code: c.in_stream for c in ErrorCode if c.in_stream}

_STATUS_TITLES = {
    400: "Bad request: the body or an `x-ensemble-*` header is invalid",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "The request (its body) arrived too slowly",
    413: "Body too large",
    415: "Compressed body",
    426: "Through the gateway: HTTP/1.0 is not supported",
    429: "Too many ensembles in flight",
    431: "Through the gateway: request headers too large",
    500: "Internal error",
    501: "Through the gateway: an HTTP feature it does not implement",
    502: "The ensemble failed",
    503: "Through the gateway: upstream unavailable",
    504: "The ensemble's deadline passed",
}
# --------------------------------------------------------------------------- schemas

WIRE_MODELS = (
    ChatCompletionRequest,
    ChatCompletion,
    ChatCompletionChunk,
    ErrorResponse,
    ModelList,
    Model,
    Health,
    SeedHealth,
)

SERVER_SENT_EVENT: Schema = {
    "type": "object",
    "description": "One event of a streamed answer, modelled as OpenAPI 3.2 models "
    "server-sent events (`event`, `data`, `id`, `retry`): the stream is a sequence of "
    "these. `data` is a JSON `ChatCompletionChunk`, an `ErrorResponse` (the last event of a "
    "stream that failed after it started), or `[DONE]` (the last event of a stream that "
    "succeeded). `: keep-alive` comments are not events.",
    "required": ["data"],
    "properties": {
        "event": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer", "minimum": 0},
        "data": {
            "type": "string",
            "if": {"const": "[DONE]"},
            "else": {
                "contentMediaType": JSON,
                "contentSchema": {"anyOf": [_ref("ChatCompletionChunk"), _ref("ErrorResponse")]},
            },
        },
    },
}


def _schemas(config: Config | None) -> dict[str, Schema]:
    _, schemas = msgspec.json.schema_components(WIRE_MODELS, ref_template=_REF + "{name}")
    request = schemas["ChatCompletionRequest"]
    request["examples"] = [
        {"model": "any", "messages": [{"role": "user", "content": "Capital of France?"}]}
    ]
    if config is not None and config.profiles:
        request["properties"]["model"]["examples"] = sorted(config.profiles)
    return schemas | {
        "ServerSentEvent": SERVER_SENT_EVENT,
        "OpenApiDocument": {
            "type": "object",
            "required": ["openapi", "info", "paths"],
            "properties": {"openapi": {"type": "string"}},
        },
        "TrustReport": _trust_report_schema(),
    }


def _trust_report_schema() -> Schema:
    share: Schema = {"type": "number", "minimum": 0, "maximum": 1}
    span: Schema = {"type": "array", "items": share, "minItems": 2, "maxItems": 2}
    member: Schema = {
        "type": "object",
        "required": ["model", "accuracy", "interval", "evidence", "learned", "used", "source"],
        "properties": {
            "model": {"type": "string"},
            "accuracy": share,
            "interval": span,
            "evidence": {"type": "number", "minimum": 0},
            "learned": {"type": "boolean"},
            "used": share,
            "source": {"enum": ["learned", "configured", "default"]},
            "prior": share,
            "failure_rate": share,
            "changes": {"type": "integer", "minimum": 0},
            "client_influence": {"type": ["number", "null"], "minimum": 0},
        },
    }
    pair: Schema = {
        "type": "object",
        "required": ["models", "observed", "expected", "excess"],
        "properties": {
            "models": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
            "observed": share,
            "expected": share,
            "excess": {"type": "number"},
            "z": {"type": "number"},
            "kappa": share,
            "evidence": {"type": "number", "minimum": 0},
        },
    }
    key: Schema = {
        "type": "object",
        "required": ["key", "observations", "members", "flagged_pairs", "groups"],
        "properties": {
            "key": {"type": "string"},
            "observations": {"type": "integer", "minimum": 0},
            "members": {"type": "array", "items": member},
            "flagged_pairs": {"type": "array", "items": pair},
            "groups": {"type": "array", "items": {"type": "array", "items": {"type": "string"}}},
        },
    }
    return {
        "type": "object",
        "description": "What the upstream learned about its members (ensemble.trust): per "
        "trust key (a profile, or a set of models), each member's accuracy with its 95 % "
        "interval and whether it replaced the configured one, and the pairs of members "
        "flagged as moving together with their excess agreement. See docs/trust.md.",
        "required": ["enabled", "keys"],
        "properties": {
            "enabled": {"type": "boolean"},
            "hint": {"type": "string"},
            "replica": {"type": "string"},
            "keys": {"type": "array", "items": key},
        },
    }


# --------------------------------------------------------------------------- headers


def _request_headers(config: Config | None) -> list[Schema]:
    strategies = ", ".join(f"`{name}`" for name in STRATEGIES)
    if config is None:
        models: Schema = {"type": "string", "pattern": GENERIC_MODELS_PATTERN}
        models_limit = "`ensemble.max_models_per_request`"
    else:
        names = list(config.endpoints)
        limit = config.ensemble.max_models_per_request
        models = {
            "type": "string",
            "pattern": models_pattern(names, limit),
            "examples": [",".join(names[:limit][:3])],
        }
        models_limit = str(limit)
    settings = EnsembleSettings() if config is None else config.ensemble
    default_models = ", ".join(settings.default_models) or "none: an ensemble must name its models"
    default_strategy = settings.default_strategy

    def header(name: str, description: str, schema: Schema) -> Schema:
        return {"name": name, "in": "header", **_header(description, schema)}

    return [
        header(
            h.ENABLE,
            "`true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case). Read by the "
            "gateway's processor: `false` wins over everything, and without it "
            f"`{h.MODELS}`, `{h.STRATEGY}` or `{h.MIN_RESPONSES}` asks for an ensemble. The "
            "upstream itself always ensembles and ignores this header.",
            {"type": "string", "pattern": enable_pattern(), "examples": ["true"]},
        ),
        header(
            h.MODELS,
            "Comma-separated model *names* from the config (never URLs), at most "
            f"{models_limit}, each once (a repeated name is a 400 `duplicate_model`). "
            f"Default: {default_models}.",
            models,
        ),
        header(
            h.STRATEGY,
            f"One of the registered strategies: {strategies}. `reranking` and `fusion` "
            "need their judge or aggregator configured, else 400 `strategy_not_configured`. "
            f"Default: `{default_strategy}`.",
            {**_strategy_schema(), "examples": [default_strategy]},
        ),
        header(
            h.MIN_RESPONSES,
            "Quorum: valid answers needed, a positive integer no larger than the number "
            "of models (else 400 `invalid_min_responses`). Default: 1 for `first_success` "
            "and `cascade`, else `ensemble.default_min_responses` capped at the number of "
            "models.",
            {
                "type": "string",
                "pattern": MIN_RESPONSES_PATTERN
                if config is None
                else min_responses_pattern(settings.max_models_per_request),
                "examples": [str(min(2, settings.max_models_per_request))],
            },
        ),
        header(
            h.MAX_COST,
            "The most the ensemble may cost, in US dollars (docs/cost.md); the lower of this "
            "and the profile's `max_cost_usd` applies. A limit, not a request for an "
            "ensemble. Every model the ensemble calls needs a price (else 400 "
            "`unpriced_models`). The calls a strategy starts at once must fit it by their "
            "estimate (else 400 `max_cost_exceeded`); a cascade stops escalating and "
            "hedging stops at it (`x-ensemble-cost-capped`). Not a number: 400 "
            "`invalid_max_cost`.",
            {"type": "string", "pattern": USD_PATTERN, "examples": ["0.05"]},
        ),
    ]


def _strategy_schema() -> Schema:
    return {"type": "string", "enum": list(STRATEGIES)}


def _header(description: str, schema: Schema | None = None) -> Schema:
    return {"description": description, "required": False, "schema": schema or {"type": "string"}}


def _ensemble_response_headers(*, outcome: bool) -> dict[str, Schema]:
    """The ``x-ensemble-*`` headers of an answered (``outcome``) or failed ensemble."""
    headers = {
        h.RESP_STRATEGY: _header("the strategy that ran", _strategy_schema()),
        h.RESP_MODELS_QUERIED: _header("the member models, comma-separated"),
        h.RESP_RESPONSES_RECEIVED: _header(
            "valid member answers", {"type": "string", "pattern": DECIMAL_PATTERN}
        ),
    }
    if outcome:
        headers |= {
            h.RESP_SELECTED_MODEL: _header("the model whose answer was returned"),
            h.RESP_AGREEMENT: _header(
                "winning votes / valid votes, 3 decimals",
                {"type": "string", "pattern": "^[01]\\.[0-9]{3}$"},
            ),
            h.RESP_CASCADE_DEPTH: _header(
                "`cascade` only: how many models were asked",
                {"type": "string", "pattern": DECIMAL_PATTERN},
            ),
            h.RESP_COST_CAPPED: _header(
                "the models of the calls the cost cap kept from starting, comma-separated"
            ),
        }
    headers |= {
        h.RESP_COST: _header(
            "what the ensemble cost in US dollars: its calls whose cost is known, summed (not "
            "on a stream that started before the ensemble decided: see `ensemble.cost`)",
            {"type": "string", "pattern": USD_OUT_PATTERN},
        ),
        h.RESP_COST_UNKNOWN: _header(
            "the models of the calls whose cost is unknown (no price, or no usage reported), "
            f"comma-separated: `{h.RESP_COST}` is then a lower bound"
        ),
    }
    return headers | {
        h.RESP_DECISION: _header(
            "through the gateway: who decided (`header`, `rule:<name>`, `adaptive`, `none`)"
        ),
        h.RESP_CONFIDENCE: _header("through the gateway: the adaptive confidence, if computed"),
    }


# --------------------------------------------------------------------------- responses


def _error_response(status: int) -> Schema:
    codes = ERROR_CODES[status]
    lines = "\n".join(f"- `{code}`: {why}" for code, why in codes.items())
    examples = {
        code: {
            "summary": why.split(";")[0],
            "value": {
                "error": {
                    "message": why,
                    "type": ERROR_TYPES[(status, code)],
                    "param": None,
                    "code": code,
                }
            },
        }
        for code, why in codes.items()
    }
    response: Schema = {
        "description": f"{_STATUS_TITLES[status]}.\n\n`code`:\n{lines}",
        "content": {JSON: {"schema": _ref("ErrorResponse"), "examples": examples}},
    }
    return response


def _responses() -> dict[str, Schema]:
    out = {f"Error{status}": _error_response(status) for status in ERROR_CODES}
    out["Error429"]["headers"] = {
        "Retry-After": _header("seconds to wait", {"type": "string", "pattern": DECIMAL_PATTERN})
    }
    out["Error415"]["headers"] = {
        "Accept-Encoding": _header(
            "the content codings accepted in requests", {"type": "string", "enum": ["identity"]}
        )
    }
    for status in (502, 504):
        out[f"Error{status}"]["headers"] = _ensemble_response_headers(outcome=False)
    return out


def _errors(*statuses: int) -> dict[str, Schema]:
    return {str(status): {"$ref": f"#/components/responses/Error{status}"} for status in statuses}


def _chat_operation(config: Config | None) -> Schema:
    stream_codes = "\n".join(f"- `{c}`: {why}" for c, why in STREAM_ERROR_CODES.items())
    return {
        "operationId": "createChatCompletion",
        "tags": ["chat"],
        "summary": "Ask several models and return one aggregated answer",
        "description": "The ensemble upstream fans the request out to the models named by "
        f"`{h.MODELS}` (or the config's defaults, or the profile the processor chose), "
        "aggregates their answers with the strategy and answers as one OpenAI chat "
        "completion. In a deployment with an internal secret (`make run`), only requests "
        "signed by the gateway's processor are served: call the gateway (Envoy), not the "
        "upstream.",
        "parameters": _request_headers(config),
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": _ref("ChatCompletionRequest")}},
        },
        "responses": {
            "200": {
                "description": "The aggregated answer: a chat completion, or with "
                "`stream: true` server-sent events: `data: <ChatCompletionChunk>` events "
                "(`#/components/schemas/ChatCompletionChunk`), `: keep-alive` comments "
                "while the strategy decides, and `data: [DONE]`. An error after the stream "
                "started is a last `data: <ErrorResponse>` event without `[DONE]`:\n"
                + stream_codes,
                "headers": _ensemble_response_headers(outcome=True),
                "content": {
                    JSON: {"schema": _ref("ChatCompletion")},
                    SSE: {"schema": _ref("ServerSentEvent")},
                },
            },
            # Every error status but routing's (an unknown path or method).
            **_errors(*(status for status in ERROR_CODES if status not in (404, 405))),
        },
    }


def _get_operation(
    operation_id: str,
    tag: str,
    summary: str,
    schema: str,
    description: str = "",
    responses: Schema | None = None,
) -> Schema:
    operation: Schema = {
        "operationId": operation_id,
        "tags": [tag],
        "summary": summary,
        "responses": {
            "200": {"description": summary, "content": {JSON: {"schema": _ref(schema)}}},
            **_errors(500),
            **(responses or {}),
        },
    }
    if description:
        operation["description"] = description
    return operation


def _draining(schema: str, **examples: Schema) -> Schema:
    """The 503 of a health check from SIGTERM until the upstream stops."""
    content: Schema = {"schema": _ref(schema)}
    if examples:
        content["examples"] = examples
    return {"503": {"description": "Draining: shutting down", "content": {JSON: content}}}


def _metrics_operation() -> Schema:
    return {
        "operationId": "metrics",
        "tags": ["operations"],
        "summary": "Prometheus metrics",
        "description": "Optional route: the upstream's metrics in the Prometheus text "
        "exposition format (ensembles by strategy and outcome, per-model calls, in-flight "
        "requests, circuit states). Served by upstreams built with metrics, as this one is.",
        "responses": {
            "200": {
                "description": "Prometheus text exposition",
                "content": {TEXT: {"schema": {"type": "string"}}},
            },
            **_errors(500),
        },
    }


def build_openapi(config: Config | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the upstream; with ``config``, also the deployment's
    model names and limits (the ``x-ensemble-models`` pattern, profile names)."""
    paths: dict[str, Any] = {
        CHAT_PATH: {"post": _chat_operation(config)},
        MODELS_PATH: {
            "get": _get_operation(
                "listModels",
                "models",
                "What a client may name: the default model, the members, the profiles",
                "ModelList",
                "Through the gateway too (`client.models.list()`). `ensemble_kind` says what "
                "each is: `default` (requests that are not ensembled go to it; also a "
                f"member), `member` (a name `{h.MODELS}` accepts), `profile` (a named "
                'ensemble: `"model": "<id>"`, with its strategy and models). Names only, '
                "never an endpoint's URL or key. With `ensemble.enabled: false`, only the "
                "default model.",
            )
        },
        MODELS_PATH + "/{model}": {
            "get": _get_operation(
                "retrieveModel",
                "models",
                "One entry of the model list",
                "Model",
                "The entry `GET /v1/models` lists under this id (ids may hold slashes); 404 "
                "`unknown_model` for any other.",
                _errors(404),
            )
            | {
                "parameters": [
                    {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}
                ]
            }
        },
        HEALTH_PATH: {
            "get": _get_operation(
                "health",
                "operations",
                "Liveness of the upstream",
                "Health",
                "`ok` while serving; from SIGTERM until it stops, 503 `draining`, so that Envoy's "
                "health checks send new requests elsewhere.",
                _draining("Health", draining={"value": {"status": "draining"}}),
            )
        },
        METRICS_PATH: {"get": _metrics_operation()},
        TRUST_PATH: {
            "get": _get_operation(
                "trust",
                "operations",
                "Learned trust: accuracies and correlated members",
                "TrustReport",
                "Read-only, for operators, on the upstream's own port: a request that came "
                "through Envoy's ensemble route (it carries the processor's route header) "
                "gets a 404. With ensemble.trust disabled: `enabled: false` and no keys.",
            )
        },
        OPENAPI_PATH: {
            "get": _get_operation("openapi", "operations", "This document", "OpenApiDocument")
        },
    }
    if config is not None and config.seed_dialect:
        paths[SEED_HEALTH_PATH] = {
            "get": _get_operation(
                "seedHealth",
                "operations",
                "Liveness, as the semantic router's ensemble service answers it",
                "SeedHealth",
                "Served with `semantic_router.dialect` (on for a config in the semantic router's "
                'shape): `{"status": "healthy", "service": "ensemble"}`; from SIGTERM until it '
                "stops, 503 `draining`.",
                _draining("SeedHealth"),
            )
        }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "ensemble-extproc ensemble upstream",
            "version": __version__,
            "summary": "OpenAI-compatible chat completions answered by an ensemble of models",
            "description": "The internal service that the gateway (Envoy with the ext_proc "
            "processor) re-routes ensemble requests to. Clients normally call the gateway, "
            "which answers on the same path and also serves non-ensembled requests from the "
            "default model. Errors are OpenAI-style JSON "
            '(`{"error": {"message", "type", "param", "code"}}`) for every status, including '
            "404 `not_found` for an unknown route and 405 `method_not_allowed` for a known "
            "route with another method. See README.md, docs/strategies.md and docs/policy.md.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "chat", "description": "Ensemble chat completions"},
            {"name": "models", "description": "Configured models"},
            {"name": "operations", "description": "Health and this document"},
        ],
        "paths": paths,
        "components": {
            "schemas": _schemas(config),
            "responses": _responses(),
        },
    }


def openapi_handler(config: Config | None) -> Handler:
    """The ``GET /openapi.json`` handler: the document of this deployment, built once."""
    body = json.dumps(build_openapi(config), indent=1).encode()

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=JSON)

    return openapi_json
