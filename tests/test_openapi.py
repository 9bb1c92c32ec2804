"""The OpenAPI document: valid 3.1, served, complete, and in agreement with the code.

The agreement tests send a table of bodies and headers to a live upstream and check that
the upstream accepts (200) exactly what the document's schemas accept, and rejects the rest
with a 400. Fuzzing the whole document against live services is tests/test_fuzz_api.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import aiohttp
import msgspec
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi

from ensemble_extproc import headers as h
from ensemble_extproc.demo.server import DemoServers
from ensemble_extproc.envoy_names import LOCAL_REPLY_ERRORS
from ensemble_extproc.errors import ApiError, ErrorCode
from ensemble_extproc.strategies import STRATEGIES, Role, Status
from ensemble_extproc.upstream import create_app
from ensemble_extproc.upstream.app import DRAINING
from ensemble_extproc.upstream.openapi import (
    CHAT_PATH,
    ERROR_CODES,
    OPENAPI_PATH,
    STREAM_ERROR_CODES,
    build_openapi,
)
from ensemble_extproc.upstream.wire import ErrorResponse
from parts import Gateway

from helpers import chat, make_config, serve_app

Doc = dict[str, Any]


def with_content(content: Any) -> dict[str, Any]:
    """A request whose one user message has this ``content`` (any JSON value)."""
    return {"model": "any", "messages": [{"role": "user", "content": content}]}


def schema_validator(doc: Doc, name: str) -> Draft202012Validator:
    """A validator for ``#/components/schemas/<name>`` with the document's refs resolvable."""
    return Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    )


def chat_parameters(doc: Doc) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in doc["paths"][CHAT_PATH]["post"]["parameters"]}


async def fetch_document(url: str) -> Doc:
    async with aiohttp.ClientSession() as session, session.get(url + OPENAPI_PATH) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        document: Doc = await resp.json()
        return document


# ----------------------------------------------------------------- the document itself


def test_the_document_is_valid_openapi_3_1(demo: DemoServers) -> None:
    for document in (build_openapi(), build_openapi(make_config(demo.urls))):
        assert document["openapi"].startswith("3.1.")
        validate_openapi(document)  # raises on any violation of the 3.1 meta-schema
        json.dumps(document)  # plain JSON: no tuples, enums or other Python-only values


def test_every_route_of_the_app_is_documented_and_nothing_else(demo: DemoServers) -> None:
    app = create_app(make_config(demo.urls))
    routes = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {
        (method, path)
        for path, operations in build_openapi()["paths"].items()
        for method in operations
    }
    assert routes == documented


def test_enums_and_header_names_come_from_the_code() -> None:
    document = build_openapi()
    schemas = document["components"]["schemas"]
    parameters = chat_parameters(document)
    assert list(parameters) == list(h.REQUEST_HEADERS)
    assert all(p["in"] == "header" and p["required"] is False for p in parameters.values())
    assert parameters[h.STRATEGY]["schema"]["enum"] == list(STRATEGIES)
    assert schemas["Ensemble"]["properties"]["strategy"]["enum"] == list(STRATEGIES)
    assert schemas["Role"]["enum"] == sorted(r.value for r in Role)
    assert schemas["Status"]["enum"] == sorted(s.value for s in Status)
    ok_headers = document["paths"][CHAT_PATH]["post"]["responses"]["200"]["headers"]
    assert {
        h.RESP_STRATEGY,
        h.RESP_MODELS_QUERIED,
        h.RESP_RESPONSES_RECEIVED,
        h.RESP_SELECTED_MODEL,
        h.RESP_AGREEMENT,
        h.RESP_CASCADE_DEPTH,
        h.RESP_COST,
        h.RESP_COST_UNKNOWN,
        h.RESP_COST_CAPPED,
        h.RESP_DECISION,
        h.RESP_CONFIDENCE,
    } == set(ok_headers)
    # No internal header is a client parameter.
    assert not set(h.INTERNAL) & set(parameters)


def test_every_error_code_is_documented_with_its_status_and_type() -> None:
    """Raise sites can only name an ``ErrorCode`` (mypy checks it): each one is in the
    document under its status (or as a stream's last event), and its error body matches
    the ``ErrorResponse`` schema."""
    document = build_openapi()
    error_response = schema_validator(document, "ErrorResponse")
    for code in ErrorCode:
        assert code.description or code.in_stream, code
        if code.description:
            assert ERROR_CODES[code.status][code.code] == code.description
            example = document["components"]["responses"][f"Error{code.status}"]["content"]
            assert (
                example["application/json"]["examples"][code.code]["value"]["error"]["type"]
                == code.type
            )
        if code.in_stream:
            assert STREAM_ERROR_CODES[code.code] == code.in_stream
        body = ApiError(code, "message", param="p").body()
        assert body["error"] == {
            "message": "message",
            "type": code.type,
            "param": "p",
            "code": code.code,
        }
        error_response.validate(body)
        msgspec.convert(body, ErrorResponse)
    assert len(ErrorCode.__members__) == len(ErrorCode)  # no two codes alias each other
    for status, _, code in LOCAL_REPLY_ERRORS:  # Envoy's own JSON error replies
        assert code in ERROR_CODES[status], (status, code)
    chat_statuses = set(build_openapi()["paths"][CHAT_PATH]["post"]["responses"])
    assert chat_statuses == {"200", *(str(s) for s in ERROR_CODES if s not in (404, 405))}


# ----------------------------------------------------- the served document and responses


async def test_the_upstream_serves_the_document_of_its_config(
    upstream: Any, demo: DemoServers
) -> None:
    url = await upstream()
    served = await fetch_document(url)
    assert served == json.loads(json.dumps(build_openapi(make_config(demo.urls))))
    pattern = chat_parameters(served)[h.MODELS]["schema"]["pattern"]
    assert re.fullmatch(pattern, "demo-fast,demo-medium")
    assert not re.fullmatch(pattern, "demo-fast,unknown")


async def test_real_responses_match_their_schemas(upstream: Any) -> None:
    url = await upstream()
    document = await fetch_document(url)
    responses = document["paths"][CHAT_PATH]["post"]["responses"]
    ensemble = {h.MODELS: "demo-fast,demo-medium,demo-slow", h.STRATEGY: "cascade"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url + CHAT_PATH, json=chat(), headers=ensemble) as resp:
            assert resp.status == 200
            schema_validator(document, "ChatCompletion").validate(await resp.json())
            for name, header in responses["200"]["headers"].items():
                if name in resp.headers:
                    Draft202012Validator(header["schema"]).validate(resp.headers[name])
            assert h.RESP_CASCADE_DEPTH in resp.headers

        stream_body = chat(stream=True, stream_options={"include_usage": True})
        async with session.post(url + CHAT_PATH, json=stream_body, headers=ensemble) as resp:
            assert resp.status == 200
            assert resp.content_type == "text/event-stream"
            data = [
                line[5:].strip()
                for line in (await resp.text()).splitlines()
                if line.startswith("data:")
            ]
        assert data[-1] == "[DONE]"
        chunk = schema_validator(document, "ChatCompletionChunk")
        for item in data[:-1]:
            chunk.validate(json.loads(item))

        error = schema_validator(document, "ErrorResponse")
        failing = {h.MODELS: "demo-broken", h.STRATEGY: "first_success"}
        async with session.post(url + CHAT_PATH, json=chat(), headers=failing) as resp:
            assert resp.status == 502
            body = await resp.json()
            error.validate(body)
            assert body["ensemble"]["candidates"][0]["status"] == "error"
        async with session.post(url + CHAT_PATH, data=b"{", headers=ensemble) as resp:
            assert resp.status == 400
            error.validate(await resp.json())
        async with session.get(url + "/v1/embeddings") as resp:
            assert resp.status == 404
            error.validate(await resp.json())
        async with session.get(url + "/v1/models") as resp:
            schema_validator(document, "ModelList").validate(await resp.json())
        async with session.get(url + "/healthz") as resp:
            schema_validator(document, "Health").validate(await resp.json())


async def test_health_documents_both_answers_draining_included(demo: DemoServers) -> None:
    """``/healthz`` answers 503 ``draining`` from SIGTERM on: the document says so."""
    app = create_app(make_config(demo.urls))
    document = build_openapi()
    health = schema_validator(document, "Health")
    responses = document["paths"]["/healthz"]["get"]["responses"]
    assert set(responses) >= {"200", "503"}
    async with serve_app(app) as url, aiohttp.ClientSession() as session:
        async with session.get(url + "/healthz") as resp:
            assert resp.status == 200
            health.validate(await resp.json())
        app[DRAINING].set()
        async with session.get(url + "/healthz") as resp:
            assert resp.status == 503
            body = await resp.json()
    assert body == {"status": "draining"}
    health.validate(body)
    assert not health.is_valid({"status": "sleeping"})


# -------------------------------------------- validation agrees with the request schema

VALID_BODIES: list[tuple[str, dict[str, Any]]] = [
    ("minimal", chat()),
    ("no model", {"messages": [{"role": "user", "content": "hi"}]}),
    ("null model fields", chat(stream=None, temperature=None, n=None, stop=None, metadata=None)),
    ("text parts", with_content([{"type": "text", "text": "Capital of France?"}])),
    ("image part", with_content([{"type": "image_url", "image_url": {"url": "data:,"}}])),
    ("empty parts", with_content([])),
    (
        "assistant tool call",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": None, "tool_calls": []},
                {"role": "tool", "content": "42", "tool_call_id": "1"},
            ]
        },
    ),
    ("message extras", chat(messages=[{"role": "user", "content": "hi", "name": "ann"}])),
    ("stream", chat(stream=True, stream_options={"include_usage": True})),
    ("stream false", chat(stream=False, stream_options={})),
    ("temperature", chat(temperature=0.7)),
    ("integer temperature", chat(temperature=1)),
    ("max tokens", chat(max_tokens=5, max_completion_tokens=1)),
    ("n one", chat(n=1)),
    (
        "tools",
        chat(
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
            tool_choice="auto",
        ),
    ),
    ("tool choice object", chat(tool_choice={"type": "function", "function": {"name": "f"}})),
    ("tool choice none", chat(tool_choice="none", tools=[])),
    ("response format", chat(response_format={"type": "json_object"})),
    ("logprobs", chat(logprobs=True, top_logprobs=2)),
    ("seed", chat(seed=-42)),
    ("stop string", chat(stop="\n")),
    ("stop list", chat(stop=["a", "b"])),
    ("user and metadata", chat(user="u-1", metadata={"tier": "gold"})),
    ("unknown fields pass", chat(top_p=0.5, frequency_penalty=0, extra={"any": [1, None]})),
]

INVALID_BODIES: list[tuple[str, Any]] = [
    ("array", [chat()]),
    ("string", "hello"),
    ("null", None),
    ("no messages", {"model": "any"}),
    ("null messages", {"messages": None}),
    ("empty messages", {"messages": []}),
    ("messages not array", {"messages": {"role": "user"}}),
    ("message not object", {"messages": ["hi"]}),
    ("no role", {"messages": [{"content": "hi"}]}),
    ("empty role", {"messages": [{"role": "", "content": "hi"}]}),
    ("role not string", {"messages": [{"role": 1, "content": "hi"}]}),
    ("content number", with_content(5)),
    ("content object", with_content({"type": "text", "text": "hi"})),
    ("part without type", with_content([{"text": "hi"}])),
    ("part type not string", with_content([{"type": 1}])),
    ("text part without text", with_content([{"type": "text"}])),
    ("text part number", with_content([{"type": "text", "text": 5}])),
    ("other part bad text", with_content([{"type": "image_url", "text": 5}])),
    ("part string", with_content(["hi"])),
    ("stream string", chat(stream="yes")),
    ("logprobs string", chat(logprobs="true")),
    ("stream options array", chat(stream=True, stream_options=[])),
    ("include usage string", chat(stream=True, stream_options={"include_usage": "yes"})),
    ("temperature string", chat(temperature="hot")),
    ("temperature boolean", chat(temperature=True)),
    ("max tokens zero", chat(max_tokens=0)),
    ("max tokens string", chat(max_tokens="5")),
    ("max tokens fraction", chat(max_tokens=2.5)),
    ("max completion tokens negative", chat(max_completion_tokens=-1)),
    ("n two", chat(n=2)),
    ("n zero", chat(n=0)),
    ("n boolean", chat(n=True)),
    ("n string", chat(n="1")),
    ("tools object", chat(tools={"type": "function"})),
    ("tools of strings", chat(tools=["f"])),
    ("tool choice unknown", chat(tool_choice="banana")),
    ("tool choice number", chat(tool_choice=5)),
    ("response format string", chat(response_format="json")),
    ("response format without type", chat(response_format={})),
    ("response format type number", chat(response_format={"type": 1})),
    ("seed fraction", chat(seed=1.5)),
    ("seed string", chat(seed="1")),
    ("stop number", chat(stop=5)),
    ("stop list of numbers", chat(stop=[1])),
    ("user number", chat(user=5)),
    ("metadata string", chat(metadata="x")),
    ("metadata array", chat(metadata=[])),
    ("model number", chat(model=5)),
]


async def test_the_upstream_accepts_exactly_the_bodies_the_schema_accepts(
    upstream: Any,
) -> None:
    url = await upstream()
    document = await fetch_document(url)
    schema = schema_validator(document, "ChatCompletionRequest")
    mismatches = []
    async with aiohttp.ClientSession() as session:
        for cases, expected in ((VALID_BODIES, True), (INVALID_BODIES, False)):
            for name, body in cases:
                assert schema.is_valid(body) is expected, f"table entry {name!r} is misfiled"
                async with session.post(
                    url + CHAT_PATH,
                    data=json.dumps(body).encode(),
                    headers={"content-type": "application/json", h.MODELS: "demo-fast"},
                ) as resp:
                    await resp.read()
                    if resp.status != (200 if expected else 400):
                        mismatches.append((name, resp.status, (await resp.text())[:200]))
    assert mismatches == []


async def test_deeply_nested_json_is_a_400_not_a_500(upstream: Any) -> None:
    """Found while fuzzing: ``json.loads`` raises RecursionError (not ValueError) on deep
    nesting, which the upstream answered with a 500 ``internal_error``."""
    url = await upstream()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + CHAT_PATH, data=b"[" * 50_000, headers={h.MODELS: "demo-fast"}) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_json"


# Header values and whether the header's schema accepts them; all with chat().
HEADER_CASES: list[tuple[dict[str, str], bool]] = [
    ({h.MODELS: "demo-fast"}, True),
    ({h.MODELS: "demo-fast,demo-medium"}, True),
    ({h.MODELS: "demo-fast , demo-medium"}, True),
    ({h.MODELS: "nope"}, False),
    ({h.MODELS: "demo-fast,nope"}, False),
    ({h.MODELS: "demo-fast,,demo-medium"}, False),
    ({h.MODELS: "demo-fast,"}, False),
    ({h.MODELS: ","}, False),
    ({h.MODELS: "demo-fast,demo-medium,demo-slow,demo-judge,demo-aggregator,demo-broken"}, False),
    ({h.MODELS: "demo-fast", h.STRATEGY: "first_success"}, True),
    ({h.MODELS: "demo-fast", h.STRATEGY: "cascade"}, True),
    ({h.MODELS: "demo-fast", h.STRATEGY: "VOTING"}, False),
    ({h.MODELS: "demo-fast", h.STRATEGY: "majority"}, False),
    ({h.MODELS: "demo-fast", h.MIN_RESPONSES: "1"}, True),
    ({h.MODELS: "demo-fast,demo-medium", h.MIN_RESPONSES: "002"}, True),
    ({h.MODELS: "demo-fast", h.MIN_RESPONSES: "0"}, False),
    ({h.MODELS: "demo-fast", h.MIN_RESPONSES: "-1"}, False),
    ({h.MODELS: "demo-fast", h.MIN_RESPONSES: "1.0"}, False),
    ({h.MODELS: "demo-fast", h.MIN_RESPONSES: "one"}, False),
    # More than max_models_per_request (5) can never be met: the pattern says so.
    ({h.MODELS: "demo-fast", h.MIN_RESPONSES: "6"}, False),
    ({h.MODELS: "demo-fast", h.MIN_RESPONSES: "8753"}, False),
]
# Valid for each header's schema on its own, rejected for what no per-header schema can say
# (each is stated in the header's description, with its code).
CROSS_HEADER_CASES: list[tuple[dict[str, str], str]] = [
    ({h.MODELS: "demo-fast,demo-fast"}, "duplicate_model"),
    ({h.MODELS: "demo-fast", h.MIN_RESPONSES: "2"}, "invalid_min_responses"),
    ({h.MODELS: "demo-fast", h.STRATEGY: "reranking"}, "strategy_not_configured"),
    ({h.MODELS: "demo-fast", h.STRATEGY: "fusion"}, "strategy_not_configured"),
]


def headers_valid(parameters: dict[str, dict[str, Any]], headers: dict[str, str]) -> bool:
    return all(
        Draft202012Validator(parameters[name]["schema"]).is_valid(value)
        for name, value in headers.items()
    )


async def test_the_upstream_accepts_exactly_the_headers_the_schema_accepts(
    upstream: Any,
) -> None:
    url = await upstream()
    parameters = chat_parameters(await fetch_document(url))
    mismatches = []
    async with aiohttp.ClientSession() as session:
        for headers, expected in HEADER_CASES:
            assert headers_valid(parameters, headers) is expected, headers
            async with session.post(url + CHAT_PATH, json=chat(), headers=headers) as resp:
                await resp.read()
                if resp.status != (200 if expected else 400):
                    mismatches.append((headers, resp.status))
        for headers, code in CROSS_HEADER_CASES:
            assert headers_valid(parameters, headers), headers
            async with session.post(url + CHAT_PATH, json=chat(), headers=headers) as resp:
                assert (resp.status, (await resp.json())["error"]["code"]) == (400, code)
            described = " ".join(parameters[name]["description"] for name in headers)
            assert code in described, code
    assert mismatches == []


async def test_the_upstream_ignores_the_enable_header_as_documented(upstream: Any) -> None:
    """``x-ensemble-enable`` is the processor's; the document says the upstream ignores it."""
    url = await upstream()
    parameters = chat_parameters(await fetch_document(url))
    assert "ignores this header" in parameters[h.ENABLE]["description"]
    enable = Draft202012Validator(parameters[h.ENABLE]["schema"])
    assert all(enable.is_valid(v) for v in ("true", "FALSE", " Yes ", "0", "on"))
    assert not any(enable.is_valid(v) for v in ("banana", "", "truee", "2"))
    headers = {h.MODELS: "demo-fast", h.ENABLE: "banana"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + CHAT_PATH, json=chat(), headers=headers) as resp,
    ):
        assert resp.status == 200


@pytest.mark.e2e
async def test_through_the_gateway_the_processor_checks_the_enable_header(
    gateway: Gateway,
) -> None:
    headers = {h.ENABLE: "banana"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(gateway.url + CHAT_PATH, json=chat(), headers=headers) as resp,
    ):
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_header"
