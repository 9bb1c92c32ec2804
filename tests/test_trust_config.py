"""``ensemble.trust``: defaults, every key, and errors that name the key and the fix."""

from __future__ import annotations

from typing import Any

import pytest

from ensemble_extproc.config import ConfigError
from ensemble_extproc.trust.model import TrustSettings

from helpers import make_config

URLS = {"a": "http://127.0.0.1:9/v1", "b": "http://127.0.0.1:10/v1"}


def trust(block: Any) -> TrustSettings:
    return make_config(URLS, ensemble={"trust": block}).ensemble.trust


def test_off_by_default() -> None:
    settings = make_config(URLS).ensemble.trust
    assert settings == TrustSettings()
    assert settings.enabled is False


def test_every_key() -> None:
    settings = trust(
        {
            "enabled": True,
            "correlation": False,
            "sample_share": 0.5,
            "half_life": 200,
            "min_evidence": 50,
            "prior_strength": 20,
            "default_accuracy": 0.6,
            "alternatives": 3,
            "flag_z": 5,
            "min_excess": 0.1,
            "max_client_share": 0.2,
            "change_threshold": False,
            "max_keys": 8,
            "max_clients": 100,
            "refit_every": 10,
            "snapshot_dir": "/var/lib/ensemble/trust",
            "snapshot_interval_seconds": 30,
            "replica_id": "upstream-0",
            "peer_max_age_seconds": 600,
        }
    )
    assert settings == TrustSettings(
        enabled=True,
        correlation=False,
        sample_share=0.5,
        half_life=200.0,
        min_evidence=50.0,
        prior_strength=20.0,
        default_accuracy=0.6,
        alternatives=3,
        flag_z=5.0,
        min_excess=0.1,
        max_client_share=0.2,
        change_threshold=None,
        max_keys=8,
        max_clients=100,
        refit_every=10,
        snapshot_dir="/var/lib/ensemble/trust",
        snapshot_interval_seconds=30.0,
        replica_id="upstream-0",
        peer_max_age_seconds=600.0,
    )
    assert trust({"alternatives": "auto"}).alternatives is None
    assert trust({"alternatives": None}).alternatives is None  # null: the default, auto
    assert trust({"change_threshold": 40}).change_threshold == 40.0


@pytest.mark.parametrize(
    ("block", "key", "words"),
    [
        ({"halflife": 10}, "ensemble.trust.halflife", "allowed keys here"),
        ({"half_life": 0}, "ensemble.trust.half_life", "must be > 0"),
        ({"alternatives": "three"}, "ensemble.trust.alternatives", "auto or a whole number"),
        ({"alternatives": 0}, "ensemble.trust.alternatives", "plausible wrong answers"),
        ({"alternatives": True}, "ensemble.trust.alternatives", "auto or a whole number"),
        ({"max_client_share": 0}, "ensemble.trust.max_client_share", "(0, 1]"),
        ({"max_client_share": 1.5}, "ensemble.trust.max_client_share", "(0, 1]"),
        ({"default_accuracy": 1}, "ensemble.trust.default_accuracy", "between 0 and 1"),
        ({"min_excess": 1}, "ensemble.trust.min_excess", "[0, 1)"),
        ({"min_evidence": -1}, "ensemble.trust.min_evidence", ">= 0"),
        ({"change_threshold": True}, "ensemble.trust.change_threshold", "false turns"),
        ({"change_threshold": -3}, "ensemble.trust.change_threshold", "> 0 or false"),
        # null is not "off": it would turn detection off for a key left blank by mistake.
        ({"change_threshold": None}, "ensemble.trust.change_threshold", "got null"),
        ({"enabled": "yes"}, "ensemble.trust.enabled", "must be a boolean"),
        ({"snapshot_dir": " "}, "ensemble.trust.snapshot_dir", "name a directory"),
        (
            {"snapshot_interval_seconds": 60, "peer_max_age_seconds": 60},
            "ensemble.trust.peer_max_age_seconds",
            "allow several intervals",
        ),
        ([1], "ensemble.trust", "must be a mapping"),
    ],
)
def test_errors_name_the_key_and_the_fix(block: Any, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as error:
        trust(block)
    assert error.value.key == key
    assert words in str(error.value)


def test_correlation_discounting_is_on_with_trust() -> None:
    assert trust({"enabled": True}).correlation is True


def test_weighted_weights_configured_or_learned() -> None:
    default = make_config(URLS).ensemble
    assert default.weighted.weights == "configured"
    learned = make_config(
        URLS, ensemble={"weighted": {"weights": "learned"}, "trust": {"enabled": True}}
    )
    assert learned.ensemble.weighted.weights == "learned"


@pytest.mark.parametrize(
    ("ensemble", "message"),
    [
        (
            {"weighted": {"weights": "learned"}},
            r"'ensemble\.weighted\.weights': is learned, but nothing is learned: "
            r"ensemble\.trust\.enabled is false \(set ensemble\.trust\.enabled: true",
        ),
        (
            {"weighted": {"weights": "learnt"}, "trust": {"enabled": True}},
            r"'ensemble\.weighted\.weights': unknown value 'learnt' "
            r"\(did you mean 'learned'\? one of: configured, learned",
        ),
        (
            {"trust": {"enabled": True, "correlation": "yes"}},
            r"ensemble\.trust\.correlation",
        ),
        (
            {"trust": {"enabled": True, "sample_share": 0}},
            r"'ensemble\.trust\.sample_share': must be in \(0, 1\], got 0",
        ),
    ],
)
def test_weights_mistakes_name_the_key_and_the_fix(ensemble: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_config(URLS, ensemble=ensemble)
