"""ensemble.weighted.alternatives turns log-odds into log(k p / (1 - p))."""

from __future__ import annotations

import math

import pytest

from ensemble_extproc.errors import ConfigError
from ensemble_extproc.strategies.weighted import log_odds

from helpers import make_config


@pytest.mark.parametrize(
    ("p", "k", "weight"),
    [(0.75, 1, math.log(3)), (0.75, 3, math.log(9)), (0.5, 1, 0.0), (1.0, 1, math.log(99))],
)
def test_log_odds(p: float, k: int, weight: float) -> None:
    assert log_odds(p, k) == pytest.approx(weight)


def test_alternatives_come_from_config() -> None:
    config = make_config({"a": "http://127.0.0.1:9/v1"}, ensemble={"weighted": {"alternatives": 3}})
    assert config.ensemble.weighted.alternatives == 3


def test_alternatives_default_to_auto() -> None:
    config = make_config({"a": "http://127.0.0.1:9/v1"})
    assert config.ensemble.weighted.alternatives == "auto"
    auto = make_config(
        {"a": "http://127.0.0.1:9/v1"}, ensemble={"weighted": {"alternatives": "auto"}}
    )
    assert auto.ensemble.weighted.alternatives == "auto"


@pytest.mark.parametrize("value", [0, -1, 2.5, "three", True])
def test_bad_alternatives_name_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"ensemble\.weighted\.alternatives.*auto"):
        make_config({"a": "http://127.0.0.1:9/v1"}, ensemble={"weighted": {"alternatives": value}})
