"""The admission gate and plugin signals (the internal signature: test_internal.py)."""

from __future__ import annotations

import random

import pytest

from ensemble_extproc.adaptive.gate import AdmissionGate
from ensemble_extproc.adaptive.signals import (
    HeaderSignal,
    Reading,
    build_signals,
    combine,
    read,
)
from ensemble_extproc.config.model import SignalConfig
from ensemble_extproc.errors import ConfigError
from ensemble_extproc.rules import RequestView


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_cap_admits_a_burst_then_refills() -> None:
    clock = Clock()
    gate = AdmissionGate(max_per_second=2, clock=clock)
    assert [gate.admit(None)[0] for _ in range(3)] == [True, True, False]
    assert gate.admit(None) == (False, "rate cap reached")
    clock.now += 0.5  # one token back
    assert [gate.admit(None)[0] for _ in range(2)] == [True, False]


def test_sampling_is_stable_per_request_id_and_close_to_the_rate() -> None:
    gate = AdmissionGate(sample_rate=0.3, rng=random.Random(1))
    ids = [f"req-{i}" for i in range(4000)]
    first = [gate.admit(i)[0] for i in ids]
    assert first == [gate.admit(i)[0] for i in ids]  # a retried request gets the same answer
    assert 0.27 < sum(first) / len(first) < 0.33
    assert gate.admit("req-0")[1] in ("", "not sampled")


def test_combine() -> None:
    readings = [Reading("a", 0.2, 1.0), Reading("b", 0.8, 3.0), Reading("c", None, 5.0)]
    assert combine(readings, "min") == pytest.approx(0.2)
    assert combine(readings, "mean") == pytest.approx((0.2 * 1 + 0.8 * 3) / 4)
    assert combine([Reading("a", None, 1.0)], "min") is None


@pytest.mark.parametrize(
    ("value", "reading", "ignored"),
    [
        ("0.25", 0.25, None),
        ("1", 1.0, None),
        ("nan", None, "not in [0, 1]"),
        ("-0.1", None, "not in [0, 1]"),
        ("x", None, "not a number"),
    ],
)
def test_header_signal(value: str, reading: float | None, ignored: str | None) -> None:
    view = RequestView("/", {"x-vsr-selected-confidence": value})
    [result] = read([(HeaderSignal(("x-vsr-selected-confidence",)), 1.0)], view)
    assert result.value == reading
    assert (result.ignored is None) if ignored is None else (ignored in (result.ignored or ""))


class LengthSignal:
    """What a user's own signal looks like: a few lines."""

    name = "length"
    needs_body = True

    def __init__(self, config: SignalConfig) -> None:
        self.limit = 10

    def confidence(self, request: RequestView) -> float | None:
        return 0.0 if len(request.last_user_message) > self.limit else 1.0


def make_length_signal(config: SignalConfig) -> LengthSignal:
    return LengthSignal(config)


def test_a_plugin_signal_is_loaded_by_name() -> None:
    [(signal, weight)] = build_signals(
        [SignalConfig("python:test_adaptive_parts:make_length_signal", 2.0)]
    )
    assert weight == 2.0
    assert signal.confidence(RequestView("/", {}, {}, "a long question here")) == 0.0


def test_a_plugin_that_cannot_load_stops_start_up() -> None:
    with pytest.raises(ConfigError, match="cannot load signal"):
        build_signals([SignalConfig("python:no_such_module:factory")])
