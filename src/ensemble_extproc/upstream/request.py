"""Reading and checking a chat completion request: every client mistake is a 4xx ApiError."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import ApiError, bad_request


async def read_body(request: web.Request, limit: int) -> bytes:
    too_large = ApiError(
        413,
        f"request body is larger than the limit of {limit} bytes",
        code="request_too_large",
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:  # chunked bodies have no content-length
        raise too_large from exc


def parse_chat_request(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object", code="invalid_json")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request(
            "'messages' is required and must be a non-empty array",
            code="missing_messages" if messages is None else "invalid_messages",
            param="messages",
        )
    if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
        raise bad_request(
            "each entry of 'messages' must be an object with a 'role'",
            code="invalid_messages",
            param="messages",
        )
    for name in ("stream", "logprobs"):
        if name in body and body[name] is not None and not isinstance(body[name], bool):
            raise bad_request(f"'{name}' must be a boolean", code="invalid_type", param=name)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request(
            "'stream_options' must be an object", code="invalid_type", param="stream_options"
        )
    tools = body.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(t, dict) for t in tools)
    ):
        raise bad_request("'tools' must be an array of objects", code="invalid_type", param="tools")
    n = body.get("n", 1)
    if n != 1:
        raise bad_request(
            "an ensemble returns one choice: 'n' must be 1", code="unsupported_n", param="n"
        )
    return body
