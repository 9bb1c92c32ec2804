"""The OpenAI chat body: the request model's 4xx (status, code, param, message) and the one
rule for turning message content into text."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ensemble_extproc.chat import (
    content_text,
    conversation_text,
    last_user_message,
    parse_chat_request,
)
from ensemble_extproc.errors import ApiError

USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "code", "param", "message"),
    [
        ({"model": "x"}, "missing_messages", "messages", "'messages' is required"),
        ({"messages": None}, "missing_messages", "messages", "non-empty array"),
        ({"messages": []}, "invalid_messages", "messages", "non-empty array"),
        ({"messages": [1]}, "invalid_messages", "messages[0]", "must be an object, not an"),
        ({"messages": [{"content": "x"}]}, "invalid_messages", "messages[0].role", "required"),
        ({"messages": [{"role": ""}]}, "invalid_messages", "messages[0].role", "non-empty string"),
        (
            {"messages": [{"role": "user", "content": 5}]},
            "invalid_messages",
            "messages[0].content",
            "must be a string, an array or null, not an integer",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "invalid_messages",
            "messages[0].content[0].text",
            "is required",
        ),
        ({"messages": USER, "stream": "yes"}, "invalid_type", "stream", "a boolean or null"),
        ({"messages": USER, "max_tokens": 0}, "invalid_value", "max_tokens", "at least 1"),
        ({"messages": USER, "max_tokens": 2.5}, "invalid_type", "max_tokens", "not a number"),
        ({"messages": USER, "n": 2}, "unsupported_n", "n", "one choice"),
        ({"messages": USER, "n": "1"}, "unsupported_n", "n", "one choice"),
        ({"messages": USER, "tool_choice": "x"}, "invalid_value", "tool_choice", "none, auto"),
        ({"messages": USER, "tool_choice": 5}, "invalid_type", "tool_choice", "an object"),
        ({"messages": USER, "response_format": {}}, "invalid_type", "response_format.type", ""),
        ({"messages": USER, "stop": [1]}, "invalid_type", "stop[0]", "a string"),
        (
            {"messages": USER, "stream_options": {"include_usage": 1}},
            "invalid_type",
            "stream_options.include_usage",
            "a boolean",
        ),
    ],
)
def test_a_field_at_fault_is_a_400_that_names_it(
    body: dict[str, Any], code: str, param: str, message: str
) -> None:
    with pytest.raises(ApiError) as raised:
        parse_chat_request(json.dumps(body).encode())
    error = raised.value
    assert (error.status, error.code, error.param) == (400, code, param)
    assert message in error.message
    assert f"'{param}'" in error.message or code == "unsupported_n"


def test_unknown_fields_pass_on_unchanged() -> None:
    raw = {"messages": [{"role": "user", "content": "hi", "name": "ann"}], "top_p": 0.5, "x": [1]}
    chat = parse_chat_request(json.dumps(raw).encode())
    assert chat.body == raw
    assert chat.fields.messages[0].role == "user"
    assert not chat.stream
    assert not chat.include_usage


def test_stream_and_include_usage_are_read_from_the_model() -> None:
    raw = {"messages": USER, "stream": True, "stream_options": {"include_usage": True}}
    chat = parse_chat_request(json.dumps(raw).encode())
    assert chat.stream
    assert chat.include_usage


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("plain", "plain"),
        (None, ""),
        (7, ""),
        ({"type": "text", "text": "x"}, ""),
        (
            [
                {"type": "text", "text": "look at"},
                {"type": "image_url", "image_url": {"url": "data:,"}},
                {"text": "no type: not text"},
                {"type": "text", "text": 5},
                "a bare string",
                {"type": "text", "text": "this"},
            ],
            "look at\nthis",
        ),
    ],
)
def test_content_text_is_the_text_parts_joined_by_newlines(content: object, text: str) -> None:
    assert content_text(content) == text


def test_the_last_user_message_and_the_conversation() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": None},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
        ]
    }
    assert last_user_message(body) == "second"
    assert conversation_text(body) == (
        "system: Be brief.\n\nuser: first\n\nassistant: \n\nuser: second"
    )
    assert conversation_text({"messages": [{"role": "user", "content": "only"}]}) == "only"
    assert last_user_message({"messages": "x"}) == ""
