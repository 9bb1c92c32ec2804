"""The internal signature: bound to one request, short-lived, and accepted once."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ensemble_extproc import headers as h
from ensemble_extproc.config import Config, compile_config
from ensemble_extproc.errors import ApiError
from ensemble_extproc.internal import Binding, ReplayGuard, ReplayWindowFull, sign, verify
from ensemble_extproc.upstream.auth import check_signature

SECRET = b"secret-for-tests-0123"
LIFETIME = 10.0
VALUES = {h.MODELS: "a,b", h.STRATEGY: "voting", h.MIN_RESPONSES: "2", h.DECISION: "header"}
BINDING = Binding("6f1c0e1a-3b7d-4c55-9a0e-1d2f3a4b5c6d", "POST", "/v1/chat/completions")


def signed(
    values: dict[str, str] = VALUES, binding: Binding = BINDING, at: float = 1000.0
) -> dict[str, str]:
    return {**values, h.SIGNATURE: sign(SECRET, values, binding, at)}


@pytest.mark.parametrize(
    ("tamper", "binding", "now_shift", "reason"),
    [
        ({}, BINDING, 0, ""),
        ({}, BINDING, LIFETIME, ""),
        ({h.MODELS: "a,b,c"}, BINDING, 0, "does not match"),
        ({h.PROFILE: "critical"}, BINDING, 0, "does not match"),
        # The same headers on another request: another request id, method or path.
        ({}, Binding("another-id", "POST", "/v1/chat/completions"), 0, "does not match"),
        ({}, Binding(BINDING.request_id, "PUT", "/v1/chat/completions"), 0, "does not match"),
        ({}, Binding(BINDING.request_id, "POST", "/v1/chat/completions?x=1"), 0, "does not match"),
        ({}, BINDING, LIFETIME + 1, "expired"),
        ({}, BINDING, -(LIFETIME + 1), "expired"),  # from the future: a clock far off
        ({h.SIGNATURE: "garbage"}, BINDING, 0, "malformed"),
        ({h.SIGNATURE: "t=1000,v1=00"}, BINDING, 0, "malformed"),  # no nonce
        ({h.SIGNATURE: "t=" + "9" * 400 + ",n=1,v1=00"}, BINDING, 0, "malformed"),
        ({h.SIGNATURE: ""}, BINDING, 0, "no signature"),
    ],
)
def test_signature(tamper: dict[str, str], binding: Binding, now_shift: float, reason: str) -> None:
    verdict = verify(SECRET, {**signed(), **tamper}, binding, 1000.0 + now_shift, LIFETIME)
    assert verdict.ok is (reason == "")
    assert reason in verdict.reason


def test_two_signatures_of_the_same_request_differ() -> None:
    """A nonce: two identical requests in the same second are two uses, not a replay."""
    first, second = signed(), signed()
    assert first[h.SIGNATURE] != second[h.SIGNATURE]
    tokens = {verify(SECRET, s, BINDING, 1000.0, LIFETIME).token for s in (first, second)}
    assert len(tokens) == 2


texts = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@given(
    field=st.sampled_from(["request_id", "method", "path", *VALUES]),
    value=texts,
)
def test_any_change_to_what_is_signed_breaks_the_signature(field: str, value: str) -> None:
    headers = signed()
    binding = BINDING
    if field in VALUES:
        if value == VALUES[field]:
            return
        headers = {**headers, field: value}
    else:
        if value == getattr(BINDING, field):
            return
        binding = _with(field, value)
    assert not verify(SECRET, headers, binding, 1000.0, LIFETIME).ok


def _with(field: str, value: str) -> Binding:
    parts = {"request_id": BINDING.request_id, "method": BINDING.method, "path": BINDING.path}
    parts[field] = value
    return Binding(**parts)


def test_the_guard_accepts_each_token_once_until_it_expires() -> None:
    guard = ReplayGuard(capacity=10)
    assert guard.first_use(b"a", expires_at=110.0, now=100.0)
    assert not guard.first_use(b"a", expires_at=110.0, now=105.0)
    assert guard.first_use(b"b", expires_at=112.0, now=105.0)
    # Past its expiry the token is forgotten (verify refuses it by then anyway).
    assert guard.first_use(b"c", expires_at=121.0, now=111.0)
    assert len(guard) == 2
    assert guard.first_use(b"a", expires_at=121.0, now=111.0)


def test_a_full_guard_refuses_rather_than_forgets() -> None:
    guard = ReplayGuard(capacity=3)
    for token in (b"a", b"b", b"c"):
        assert guard.first_use(token, expires_at=110.0, now=100.0)
    with pytest.raises(ReplayWindowFull):
        guard.first_use(b"d", expires_at=110.0, now=101.0)
    assert not guard.first_use(b"a", expires_at=110.0, now=101.0)  # still remembered


def test_a_full_guard_sweeps_expired_entries_behind_a_live_one() -> None:
    """Expiries arrive out of order when processor replicas' clocks differ."""
    guard = ReplayGuard(capacity=3)
    guard.first_use(b"late", expires_at=200.0, now=100.0)
    guard.first_use(b"early1", expires_at=105.0, now=100.0)
    guard.first_use(b"early2", expires_at=105.0, now=100.0)
    assert guard.first_use(b"new", expires_at=120.0, now=110.0)
    assert len(guard) == 2


@given(st.lists(st.sampled_from([b"a", b"b", b"c", b"d", b"e"]), max_size=60))
def test_the_guard_never_accepts_a_live_token_twice_and_stays_bounded(
    tokens: list[bytes],
) -> None:
    guard = ReplayGuard(capacity=4)
    accepted: dict[bytes, float] = {}
    for step, token in enumerate(tokens):
        now = float(step)
        try:
            first = guard.first_use(token, expires_at=now + 3, now=now)
        except ReplayWindowFull:
            assert sum(expiry >= now for expiry in accepted.values()) >= 4
            continue
        live = token in accepted and accepted[token] >= now
        assert first is not live
        if first:
            accepted[token] = now + 3
        assert len(guard) <= 4


def config(lifetime: float | None = None) -> Config:
    security: dict[str, object] = {}
    if lifetime is not None:
        security["signature_lifetime_seconds"] = lifetime
    raw = {"models": [{"name": "a", "url": "http://127.0.0.1:1/v1"}], "security": security}
    return compile_config(raw, {"ENSEMBLE_INTERNAL_SECRET": SECRET.decode()})


def test_check_signature_refuses_a_replay_and_an_unbound_request() -> None:
    compiled = config()
    guard = ReplayGuard()
    headers = signed(at=1000.0)
    check_signature(headers, BINDING, compiled, guard, 1001.0)
    with pytest.raises(ApiError) as replay:
        check_signature(headers, BINDING, compiled, guard, 1002.0)
    assert (replay.value.status, replay.value.code) == (403, "unsigned_internal_headers")
    assert "already used" in replay.value.message
    other = Binding("another-id", BINDING.method, BINDING.path)
    with pytest.raises(ApiError, match="does not match"):
        check_signature(signed(at=1000.0), other, compiled, guard, 1001.0)


def test_the_lifetime_is_configurable_and_ten_seconds_by_default() -> None:
    assert config().security.signature_lifetime_seconds == 10.0
    short = config(2)
    guard = ReplayGuard()
    with pytest.raises(ApiError, match="expired"):
        check_signature(signed(at=1000.0), BINDING, short, guard, 1003.5)


def test_check_signature_says_when_the_window_is_full() -> None:
    compiled = config()
    guard = ReplayGuard(capacity=1)
    check_signature(signed(), BINDING, compiled, guard, 1000.0)
    with pytest.raises(ApiError) as full:
        check_signature(signed(), BINDING, compiled, guard, 1000.0)
    assert (full.value.status, full.value.code) == (503, "replay_window_full")
    assert full.value.headers == {"Retry-After": "1"}
