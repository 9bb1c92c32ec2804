"""Reading and checking a chat completion request: every client mistake is a 4xx ApiError."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..body import check_content_encoding, parse_json_object
from ..errors import ApiError, bad_request


async def read_body(request: web.Request, limit: int, seconds: float) -> bytes:
    """The whole body, uncompressed, within ``limit`` bytes and ``seconds``.

    Bounded in time so that a client trickling its body cannot hold a connection for ever;
    the caller reads it before taking an in-flight slot, so slow clients never hold one.
    """
    check_content_encoding(request.headers)
    too_large = ApiError(
        413,
        f"request body is larger than the limit of {limit} bytes",
        code="request_too_large",
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        async with asyncio.timeout(seconds):
            return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:  # chunked bodies have no content-length
        raise too_large from exc
    except TimeoutError:
        raise ApiError(
            408,
            f"the request body did not arrive within {seconds:g} s",
            code="request_timeout",
        ) from None
    except ConnectionResetError:
        # The client left mid-body: nobody reads this answer, but it is no internal error
        # (a traceback per hang-up would let any client flood the log).
        raise ApiError(
            400, "the client closed the connection before its body arrived", code="incomplete_body"
        ) from None


def parse_chat_request(raw: bytes) -> dict[str, Any]:
    """The request body, checked against the request schema of the OpenAPI document
    (``openapi.py``): a field of the wrong type is a 400 here, not one 400 per model and
    then a 502. Standard JSON only (``body.parse_json_object``)."""
    body = parse_json_object(raw)
    _check_messages(body.get("messages"))
    _check_fields(body)
    return body


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_string_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _is_object_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


# Optional top-level fields: (JSON type for the message, check). None is always allowed.
_FIELD_TYPES: dict[str, tuple[str, Callable[[object], bool]]] = {
    "model": ("a string", lambda v: isinstance(v, str)),
    "stream": ("a boolean", lambda v: isinstance(v, bool)),
    "logprobs": ("a boolean", lambda v: isinstance(v, bool)),
    "stream_options": ("an object", lambda v: isinstance(v, dict)),
    "temperature": ("a number", _is_number),
    "max_tokens": ("an integer", _is_integer),
    "max_completion_tokens": ("an integer", _is_integer),
    "seed": ("an integer", _is_integer),
    "tools": ("an array of objects", _is_object_list),
    "tool_choice": ("a string or an object", lambda v: isinstance(v, str | dict)),
    "response_format": ("an object", lambda v: isinstance(v, dict)),
    "stop": ("a string or an array of strings", lambda v: isinstance(v, str) or _is_string_list(v)),
    "user": ("a string", lambda v: isinstance(v, str)),
    "metadata": ("an object", lambda v: isinstance(v, dict)),
}
_TOOL_CHOICES = ("none", "auto", "required")


def _check_messages(messages: object) -> None:
    if not isinstance(messages, list) or not messages:
        raise bad_request(
            "'messages' is required and must be a non-empty array",
            code="missing_messages" if messages is None else "invalid_messages",
            param="messages",
        )
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(f"'{param}' must be an object", code="invalid_messages", param=param)
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise bad_request(
                f"'{param}.role' must be a non-empty string",
                code="invalid_messages",
                param=f"{param}.role",
            )
        _check_content(message.get("content"), f"{param}.content")


def _check_content(content: object, param: str) -> None:
    """A string, null, or an array of content parts (objects with a string ``type``; a text
    part with a string ``text``)."""
    if content is None or isinstance(content, str):
        return
    if not isinstance(content, list):
        raise bad_request(
            f"'{param}' must be a string, null or an array of content parts",
            code="invalid_messages",
            param=param,
        )
    for index, part in enumerate(content):
        part_param = f"{param}[{index}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise bad_request(
                f"'{part_param}' must be an object with a string 'type'",
                code="invalid_messages",
                param=part_param,
            )
        if ("text" in part or part["type"] == "text") and not isinstance(part.get("text"), str):
            raise bad_request(
                f"'{part_param}.text' must be a string",
                code="invalid_messages",
                param=f"{part_param}.text",
            )


def _check_fields(body: dict[str, Any]) -> None:
    for name, (kind, check) in _FIELD_TYPES.items():
        value = body.get(name)
        if value is not None and not check(value):
            raise bad_request(f"'{name}' must be {kind}", code="invalid_type", param=name)
    for name in ("max_tokens", "max_completion_tokens"):
        if body.get(name) is not None and body[name] < 1:
            raise bad_request(f"'{name}' must be at least 1", code="invalid_value", param=name)
    choice = body.get("tool_choice")
    if isinstance(choice, str) and choice not in _TOOL_CHOICES:
        raise bad_request(
            f"'tool_choice' must be one of {', '.join(_TOOL_CHOICES)} or an object",
            code="invalid_value",
            param="tool_choice",
        )
    include_usage = (body.get("stream_options") or {}).get("include_usage")
    if include_usage is not None and not isinstance(include_usage, bool):
        raise bad_request(
            "'stream_options.include_usage' must be a boolean",
            code="invalid_type",
            param="stream_options.include_usage",
        )
    response_format = body.get("response_format")
    if response_format is not None and not isinstance(response_format.get("type"), str):
        raise bad_request(
            "'response_format.type' must be a string",
            code="invalid_type",
            param="response_format.type",
        )
    n = body.get("n")
    if n is not None and not (_is_integer(n) and n == 1):
        raise bad_request(
            "an ensemble returns one choice: 'n' must be 1", code="unsupported_n", param="n"
        )
