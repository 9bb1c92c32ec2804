"""The OpenAI chat completion request: its one declaration, how it is read, its text.

``ChatCompletionRequest`` declares the fields the gateway checks; the upstream and the demo
models decode every body into it, and the OpenAPI document derives the request schema
from it. A body's other fields, and every field of a message or part beyond these, are
passed on to the models unchanged: callers keep the body as the JSON object it was sent.

The text helpers (``content_text``, ``prompt_text``, ``conversation_text``) are the one rule
for turning message content into text, used by answer extraction, the judge and
aggregator prompts, the difficulty estimate and the demo models.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from .body import parse_json_object
from .errors import ApiError, ErrorCode

# --------------------------------------------------------------------------- the model


class ContentPart(Struct):
    """A text part needs `text`; other parts are passed on unread."""

    type: Annotated[str, Meta(examples=["text", "image_url", "input_audio"])]
    text: str | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.type == "text" and self.text is UNSET:
            # Worded as msgspec words a missing field, so that it reads and maps the same.
            raise ValueError("Object missing required field `text`")


TEXT_PART_RULE: dict[str, Any] = {
    "if": {"properties": {"type": {"const": "text"}}},
    "then": {"required": ["text"]},
}


class Message(Struct):
    role: Annotated[
        str, Meta(min_length=1, examples=["system", "developer", "user", "assistant", "tool"])
    ]
    content: Annotated[
        str | list[Annotated[ContentPart, Meta(extra_json_schema=TEXT_PART_RULE)]] | None,
        Meta(description="Text, content parts, or null (an assistant message with `tool_calls`)."),
    ] = None


class StreamOptions(Struct):
    include_usage: Annotated[
        bool | None,
        Meta(
            description="`true`: a last chunk (`choices: []`) carries `usage` summed over "
            "every call"
        ),
    ] = None


class ResponseFormat(Struct):
    type: Annotated[str, Meta(examples=["text", "json_object", "json_schema"])]


PositiveInteger = Annotated[
    int,
    Meta(
        ge=1,
        description="An integer literal (like OpenAI, `1.0` is rejected, although JSON Schema "
        "counts it as an integer).",
    ),
]


class ChatCompletionRequest(Struct):
    """An OpenAI chat completion request. Only the fields below are checked; every other
    field is passed on to the models unchanged. Every optional field accepts `null` for
    'not set'."""

    messages: Annotated[list[Message], Meta(min_length=1)]
    model: Annotated[
        str | None,
        Meta(
            description="Ignored by the upstream (each member is sent its own "
            "`upstream_model`). Through the gateway, a config profile's name selects that "
            "profile; any other value goes to the default model unless headers or rules ask "
            "for an ensemble."
        ),
    ] = None
    stream: Annotated[bool | None, Meta(description="`true`: answer with server-sent events")] = (
        None
    )
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    max_tokens: PositiveInteger | None = None
    max_completion_tokens: PositiveInteger | None = None
    n: Annotated[
        Annotated[int, Meta(ge=1, le=1)] | None,
        Meta(description="Only 1: an ensemble returns one choice."),
    ] = None
    tools: Annotated[
        list[dict[str, Any]] | None,
        Meta(description="OpenAI tool definitions, passed on to the members."),
    ] = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A checked request: its typed fields, and the body as sent (for the models)."""

    fields: ChatCompletionRequest
    body: dict[str, Any]

    @property
    def stream(self) -> bool:
        return self.fields.stream is True

    @property
    def include_usage(self) -> bool:
        options = self.fields.stream_options
        return options is not None and options.include_usage is True


def parse_chat_request(raw: bytes) -> ChatRequest:
    """The body checked against ``ChatCompletionRequest``: a field of the wrong type is the
    client's 400 here, not one 400 per model and then a 502. Standard JSON only
    (``body.parse_json_object``)."""
    body = parse_json_object(raw)
    try:
        fields = msgspec.convert(body, ChatCompletionRequest)
    except msgspec.ValidationError as exc:
        raise request_error(str(exc)) from None
    return ChatRequest(fields, body)


# ------------------------------------------------------------------ its errors, in words

# msgspec's names of JSON types, as a sentence says them.
_TYPE_WORDS = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "null": "null",
    "array": "an array",
    "object": "an object",
}
_BOUNDS = {">=": "at least", "<=": "at most", ">": "more than", "<": "less than"}
_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_WRONG_TYPE = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")
_OUT_OF_RANGE = re.compile(
    r"Expected `(?P<want>[^`]+)`(?P<length> of length)? (?P<op>[<>]=?) (?P<bound>\S+)"
)
_MISSING = re.compile(r"Object missing required field `(?P<field>[^`]+)`")
_ENUM = re.compile(r"Invalid enum value (?P<value>.*)")


def _words(types: str) -> str:
    names = [_TYPE_WORDS.get(name.strip(), name.strip()) for name in types.split("|")]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def _choices(field: str) -> list[str]:
    """The literal values a top-level field accepts (``tool_choice``'s words)."""
    hint = typing.get_type_hints(ChatCompletionRequest).get(field)
    found: list[str] = []
    stack = [hint]
    while stack:
        kind = stack.pop()
        if typing.get_origin(kind) is Literal:
            found += [str(value) for value in typing.get_args(kind)]
        else:
            stack += typing.get_args(kind)
    return found


def request_error(error: str) -> ApiError:
    """msgspec's ``ValidationError`` text as the client's 400: the ``param`` at fault, a
    code by field (``messages``: the message codes, ``n``: ``unsupported_n``; a range or
    choice: ``invalid_value``; else ``invalid_type``) and a sentence in JSON's words."""
    match = _AT.match(error)
    assert match is not None  # the pattern matches any text
    what, param = match["what"], (match["path"] or "").lstrip(".")
    field = re.split(r"[.\[]", param, maxsplit=1)[0]
    code = ErrorCode.INVALID_TYPE
    if missing := _MISSING.fullmatch(what):
        param = f"{param}.{missing['field']}" if param else missing["field"]
        field = field or missing["field"]
        sentence = f"'{param}' is required"
    elif wrong := _WRONG_TYPE.fullmatch(what):
        sentence = f"'{param}' must be {_words(wrong['want'])}, not {_words(wrong['got'])}"
    elif bound := _OUT_OF_RANGE.fullmatch(what):
        code = ErrorCode.INVALID_VALUE
        limit = f"{_BOUNDS[bound['op']]} {bound['bound']}"
        if not bound["length"]:
            sentence = f"'{param}' must be {limit}"
        elif bound["op"] == ">=" and bound["bound"] == "1":
            sentence = f"'{param}' must be a non-empty {_words(bound['want']).split()[-1]}"
        else:
            sentence = f"'{param}' must be {_words(bound['want'])} of length {limit}"
    elif enum := _ENUM.fullmatch(what):
        code = ErrorCode.INVALID_VALUE
        choices = ", ".join(_choices(field))
        sentence = f"'{param}' must be one of {choices}, got {enum['value']}"
    else:
        sentence = f"'{param}': {what}"
    if field == "messages":
        absent = param == "messages" and ("is required" in sentence or "not null" in sentence)
        code = ErrorCode.MISSING_MESSAGES if absent else ErrorCode.INVALID_MESSAGES
        if param == "messages":
            sentence = "'messages' is required and must be a non-empty array"
    elif field == "n":
        code = ErrorCode.UNSUPPORTED_N
        sentence = "an ensemble returns one choice: 'n' must be 1"
    return ApiError(code, sentence, param=param)


# --------------------------------------------------------------------------- its text


def content_text(content: object) -> str:
    """A message's ``content`` as text: a string as it is; of a list of content parts, the
    ``text`` of each ``{"type": "text"}`` part, joined by newlines (images, audio and files
    are skipped); anything else is ""."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(
        text
        for part in content
        if isinstance(part, Mapping) and part.get("type") == "text"
        if isinstance(text := part.get("text"), str)
    )


def _messages(body: object) -> list[Mapping[str, Any]]:
    messages = body.get("messages") if isinstance(body, Mapping) else None
    if not isinstance(messages, list):
        return []
    return [message for message in messages if isinstance(message, Mapping)]


def last_user_message(body: Mapping[str, Any]) -> str:
    """The text of the last ``user`` message ("" without one)."""
    for message in reversed(_messages(body)):
        if message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def prompt_text(body: Mapping[str, Any]) -> tuple[str, str]:
    """``(last user message text, system prompt text)`` of a chat request body. The system
    prompt is the text of every ``system`` and ``developer`` message, joined by newlines.
    Any missing or unexpected shape gives ""."""
    system = "\n".join(
        text
        for message in _messages(body)
        if message.get("role") in ("system", "developer")
        if (text := content_text(message.get("content")))
    )
    return last_user_message(body), system


def conversation_text(body: Mapping[str, Any]) -> str:
    """The conversation as plain text, so a judge sees what was asked: one message's text
    as it is, several as ``role: text`` paragraphs."""
    messages = _messages(body)
    if len(messages) == 1:
        return content_text(messages[0].get("content"))
    return "\n\n".join(
        f"{message.get('role', 'user')}: {content_text(message.get('content'))}"
        for message in messages
    )
