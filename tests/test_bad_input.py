"""Bad input is the client's 4xx, never an exception: the body (standard JSON only,
uncompressed) and every header the processor and the upstream parse as a number.

Table tests for the findings, and hypothesis properties over arbitrary header values and
bodies. End to end through Envoy: tests/test_e2e_hostile.py.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ensemble_extproc import headers as h
from ensemble_extproc.body import (
    MAX_INTEGER_DIGITS,
    check_content_encoding,
    loads_strict,
    parse_json_object,
)
from ensemble_extproc.chat import parse_chat_request
from ensemble_extproc.config import compile_config
from ensemble_extproc.errors import ApiError, ErrorCode
from ensemble_extproc.extproc.decision import Passthrough, Reject, Reroute
from ensemble_extproc.extproc.policy import DecisionPolicy, with_body
from ensemble_extproc.internal import Binding, ReplayGuard, sign, verify
from ensemble_extproc.rules import RequestView
from ensemble_extproc.spec import spec_from_headers, upstream_spec
from ensemble_extproc.strategies.judging import parse_verdict
from ensemble_extproc.upstream.auth import check_signature
from ensemble_extproc.upstream.client import candidate_from_response, retry_after_seconds

from helpers import make_config

URLS = {name: f"http://127.0.0.1:9/{name}" for name in ("m1", "m2", "m3")}
CONFIG = make_config(URLS)
SECRET = b"0123456789abcdef0123"
SIGNED = compile_config(
    {"models": [{"name": n, "url": u} for n, u in URLS.items()]},
    environ={"ENSEMBLE_INTERNAL_SECRET": SECRET.decode()},
)
# A config whose processor reads the body (a profile may be named by the body's model).
WITH_PROFILE = compile_config(
    {
        "models": [{"name": n, "url": u} for n, u in URLS.items()],
        "profiles": {"p": {"models": ["m1", "m2"]}},
    }
)
MESSAGES = [{"role": "user", "content": "hi"}]
BINDING = Binding("req-1", "POST", "/v1/chat/completions")
# The pseudo-headers of a chat completion, as Envoy sends them to the processor.
CHAT = {":method": "POST", ":path": "/v1/chat/completions"}


def body_with(field: str) -> bytes:
    start = b'{"messages": [{"role": "user", "content": "hi"}], "temperature": '
    return start + field.encode() + b"}"


# --- the body: standard JSON only -------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1" * (MAX_INTEGER_DIGITS + 1)]
)
def test_non_standard_numbers_are_the_clients_400_in_processor_and_upstream(value: str) -> None:
    raw = body_with(value)
    with pytest.raises(ApiError) as upstream:
        parse_chat_request(raw)
    with pytest.raises(ApiError) as processor:
        with_body(RequestView("/v1/chat/completions", {}), raw)
    for error in (upstream.value, processor.value):
        assert error.status == 400
        assert error.code == "invalid_json"
        assert "not standard JSON" in error.message
        # Not Python's own wording, which names an interpreter setting.
        assert "set_int_max_str_digits" not in error.message


def test_five_thousand_digit_integers_get_our_message_not_pythons() -> None:
    with pytest.raises(ApiError) as raised:
        parse_chat_request(body_with("9" * 5000))
    assert raised.value.status == 400
    assert f"more than {MAX_INTEGER_DIGITS} digits" in raised.value.message


@pytest.mark.parametrize("value", ["0.7", "1e308", "-0", "1e-999", "12345678901234567890"])
def test_standard_numbers_are_kept_as_they_are(value: str) -> None:
    parsed = parse_chat_request(body_with(value)).body
    assert parsed["temperature"] == json.loads(value)
    # What the upstream sends on is standard JSON again.
    json.dumps(parsed, allow_nan=False)


def test_nan_inside_nested_values_is_found_too() -> None:
    raw = b'{"messages": [{"role": "user", "content": "hi"}], "metadata": {"a": [1, NaN]}}'
    with pytest.raises(ApiError):
        parse_chat_request(raw)


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_any_bytes_are_a_json_object_or_the_clients_400(raw: bytes) -> None:
    try:
        body = parse_json_object(raw)
    except ApiError as error:
        status = error.status
    else:
        json.dumps(body, allow_nan=False)
        status = 200
    assert status in (200, 400)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
        max_leaves=8,
    )
)
@settings(max_examples=300)
def test_whatever_python_would_write_is_read_back_only_if_it_is_standard(value: Any) -> None:
    raw = json.dumps({"v": value})  # Python writes NaN and Infinity for non-finite floats
    try:
        parsed = loads_strict(raw)
    except ValueError:
        assert "NaN" in raw or "Infinity" in raw
        return
    # Read back: the same value, and nothing non-finite in it.
    assert json.dumps(parsed, allow_nan=False) == json.dumps({"v": value}, allow_nan=False)


# --- Content-Encoding --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["gzip", "GZIP", "br", "deflate", "identity, gzip", "x-gzip"])
def test_compressed_bodies_are_a_415_naming_what_is_accepted(value: str) -> None:
    with pytest.raises(ApiError) as raised:
        check_content_encoding({"content-encoding": value})
    assert raised.value.status == 415
    assert raised.value.code == "unsupported_content_encoding"
    assert raised.value.headers == {"Accept-Encoding": "identity"}


@pytest.mark.parametrize(
    "headers", [{}, {"content-encoding": "identity"}, {"content-encoding": ""}]
)
def test_uncompressed_bodies_pass(headers: dict[str, str]) -> None:
    check_content_encoding(headers)


@pytest.mark.parametrize("config", [CONFIG, WITH_PROFILE], ids=["headers-decide", "reads-body"])
@pytest.mark.parametrize("extra", [{}, {h.MODELS: "m1,m2"}, {h.ENABLE: "false"}])
def test_the_processor_refuses_a_compressed_body_whatever_the_route(
    config: Any, extra: dict[str, str]
) -> None:
    view = RequestView("/v1/chat/completions", {**CHAT, "content-encoding": "gzip", **extra})
    decision = DecisionPolicy(config).decide(view, body_pending=True)
    assert isinstance(decision, Reject)
    assert decision.error.status == 415


def test_the_processor_ignores_content_encoding_without_a_body() -> None:
    view = RequestView("/v1/chat/completions", {**CHAT, "content-encoding": "gzip"})
    decision = DecisionPolicy(CONFIG).decide(view, body_pending=False)
    assert isinstance(decision, Passthrough)


def test_other_paths_are_not_the_gateways_to_read() -> None:
    """Only chat completions may be read (and ensembled); other bodies pass untouched."""
    headers = {":method": "POST", ":path": "/v1/embeddings", "content-encoding": "gzip"}
    decision = DecisionPolicy(CONFIG).decide(
        RequestView("/v1/embeddings", headers), body_pending=True
    )
    assert isinstance(decision, Passthrough)


# --- numeric headers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("1" * 5000, "but only 3 model(s)"),
        ("0" * 5000 + "2", None),  # leading zeros: still 2
        ("0", "positive integer"),
        ("000", "positive integer"),
        ("²", "positive integer"),
        ("-1", "positive integer"),
        ("1e3", "positive integer"),
        ("4", "but only 3 model(s)"),
        ("99999999999999999999", "but only 3 model(s)"),
    ],
)
def test_min_responses_of_any_length_is_a_value_or_a_400(value: str, why: str | None) -> None:
    headers = {h.MODELS: "m1,m2,m3", h.MIN_RESPONSES: value}
    if why is None:
        assert spec_from_headers(headers, CONFIG).min_responses == 2
        return
    with pytest.raises(ApiError) as raised:
        spec_from_headers(headers, CONFIG)
    assert raised.value.status == 400
    assert why in raised.value.message
    # The echo of the client's value is bounded.
    assert len(raised.value.message) < 200


@pytest.mark.parametrize(
    "value", ["nan", "inf", "-inf", "infinity", "1e999", "1_0", "0", "-1", "", " ", "²", "1" * 5000]
)
def test_the_timeout_header_is_a_finite_positive_decimal_or_a_400(value: str) -> None:
    if not value.strip():
        return  # absent and empty mean "no profile deadline"
    with pytest.raises(ApiError) as raised:
        upstream_spec({h.MODELS: "m1,m2", h.TIMEOUT: value}, CONFIG)
    assert raised.value.status == 400


@pytest.mark.parametrize(("value", "seconds"), [("2.5", 2.5), ("1e+06", 30.0), ("0.5", 0.5)])
def test_the_timeout_header_as_the_processor_writes_it(value: str, seconds: float) -> None:
    spec = upstream_spec({h.MODELS: "m1,m2", h.TIMEOUT: value}, CONFIG)
    assert spec.timeout_seconds == seconds  # capped at ensemble.timeout_seconds (30)


@pytest.mark.parametrize("stamp", ["9" * 5000, "²³", "1" * 13, "", "-5", "1.5"])
def test_a_malformed_signature_timestamp_is_refused_not_raised(stamp: str) -> None:
    values = {h.MODELS: "m1", h.SIGNATURE: f"t={stamp},n=0123,v1=abc"}
    verdict = verify(SECRET, values, BINDING, 1_000_000.0, 10)
    assert not verdict.ok
    assert verdict.reason == "malformed signature"


@pytest.mark.parametrize(("value", "seconds"), [("2", 2.0), ("²", None), ("9" * 5000, math.inf)])
def test_an_endpoints_retry_after_never_raises(value: str, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds


HEADER_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\x00"), max_size=60
) | st.from_regex(r"\A[0-9]{0,6000}\Z")


@given(
    enable=st.none() | HEADER_TEXT,
    models=st.none() | HEADER_TEXT | st.just("m1,m2,m3"),
    strategy=st.none() | HEADER_TEXT | st.just("voting"),
    min_responses=st.none() | HEADER_TEXT,
    encoding=st.none() | HEADER_TEXT,
)
@settings(max_examples=400, deadline=None)
def test_the_processor_decides_on_any_header_values(
    enable: str | None,
    models: str | None,
    strategy: str | None,
    min_responses: str | None,
    encoding: str | None,
) -> None:
    """Whatever the client sends, the processor answers: a route or a 4xx, no exception."""
    values = {
        h.ENABLE: enable,
        h.MODELS: models,
        h.STRATEGY: strategy,
        h.MIN_RESPONSES: min_responses,
        "content-encoding": encoding,
    }
    headers = {**CHAT, **{name: value for name, value in values.items() if value is not None}}
    decision = DecisionPolicy(CONFIG).decide(
        RequestView("/v1/chat/completions", headers), body_pending=True
    )
    assert isinstance(decision, Passthrough | Reroute | Reject)
    if isinstance(decision, Reject):
        assert 400 <= decision.error.status < 500


@given(
    min_responses=st.none() | HEADER_TEXT,
    timeout=st.none() | HEADER_TEXT,
    signature=st.none() | HEADER_TEXT,
    profile=st.none() | HEADER_TEXT,
)
@settings(max_examples=400, deadline=None)
def test_the_upstream_reads_any_header_values(
    min_responses: str | None, timeout: str | None, signature: str | None, profile: str | None
) -> None:
    """Signed or not, any internal header values are a spec or a 4xx, no exception."""
    values = {
        h.MODELS: "m1,m2,m3",
        h.MIN_RESPONSES: min_responses,
        h.TIMEOUT: timeout,
        h.SIGNATURE: signature,
        h.PROFILE: profile,
    }
    headers = {name: value for name, value in values.items() if value is not None}
    for config in (CONFIG, SIGNED):
        status = 200
        try:
            check_signature(headers, BINDING, config, ReplayGuard(), 1_000_000.0)
            upstream_spec(headers, config)
        except ApiError as error:
            status = error.status
        assert status == 200 or 400 <= status < 500


def test_a_signed_request_still_reads_its_values_strictly() -> None:
    """The signature proves who wrote the values, not that they parse."""
    values = {h.MODELS: "m1,m2", h.MIN_RESPONSES: "1" * 5000}
    values[h.SIGNATURE] = sign(SECRET, values, BINDING, 1_000_000.0)
    check_signature(values, BINDING, SIGNED, ReplayGuard(), 1_000_000.0)
    with pytest.raises(ApiError) as raised:
        upstream_spec(values, SIGNED)
    assert raised.value.status == 400


# --- what models write: parsed by the upstream, never a crash ----------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Candidate " + "9" * 5000,
        "I pick " + "1" * 5000,
        '{"best": "' + "1" * 5000 + '"}',
        '{"best": "²"}',
        "Candidate ²",
    ],
)
def test_a_judges_absurd_numbers_are_an_unreadable_verdict(text: str) -> None:
    # Before: ValueError from int() (a client can ask a judge to write such a number).
    assert parse_verdict(text, 3) is None


def test_a_judges_numbers_still_read_as_before() -> None:
    assert parse_verdict("Candidate 2", 3) == 2
    assert parse_verdict("Candidate ٢", 3) == 2  # int() reads every decimal digit
    assert parse_verdict("Candidate 2 or Candidate 99999999999", 3) is None


@given(st.text(max_size=80) | st.from_regex(r"\ACandidate [0-9²]{0,5000}\Z"))
@settings(max_examples=300)
def test_any_judge_text_is_a_verdict_or_none(text: str) -> None:
    found = parse_verdict(text, 4)
    assert found is None or 1 <= found <= 4


@pytest.mark.parametrize("logprob", ["NaN", "Infinity"])
def test_an_endpoints_nan_logprobs_make_no_confidence(logprob: str) -> None:
    raw = (
        '{"choices": [{"index": 0, "finish_reason": "stop", '
        '"message": {"role": "assistant", "content": "hi"}, '
        '"logprobs": {"content": [{"token": "hi", "logprob": ' + logprob + "}]}}]}"
    ).encode()
    candidate = candidate_from_response("m", 200, raw, 1.0)
    assert candidate.valid
    assert candidate.mean_logprob is None


@given(st.text(st.characters() | st.integers(0xD800, 0xDFFF).map(chr), max_size=40))
def test_any_text_an_error_carries_is_written_as_json(text: str) -> None:
    """Lone surrogates included: an endpoint's message may echo one (json_out). It reads
    back as JSON reads it (two halves of a pair in a row are one character)."""
    error = ApiError(ErrorCode.REJECTED_BY_MODELS, text)
    assert json.loads(error.body_bytes())["error"]["message"] == json.loads(json.dumps(text))
