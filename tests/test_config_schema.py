"""The config's JSON Schema: generated from the declaration, committed, and in step with it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from ensemble_extproc.config import ConfigError, compile_config
from ensemble_extproc.config.schema import config_schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "config" / "schema.json"
EXAMPLES = [
    ROOT / "config" / "default.yaml",
    ROOT / "config" / "examples" / "policy.yaml",
    ROOT / "config" / "examples" / "semantic-router.yaml",
    ROOT / "deploy" / "kubernetes" / "plain-envoy" / "config.yaml",
]
MODELINE = re.compile(r"# yaml-language-server: \$schema=(\S+)")
MODEL = {"name": "a", "url": "http://127.0.0.1:9001/v1"}
DEMO = {"name": "demo-a", "port": 8101}


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_committed_schema_is_the_declarations() -> None:
    generated = json.loads(json.dumps(config_schema()))
    assert json.loads(SCHEMA.read_text()) == generated, "stale: run `make schema`"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_configs_are_valid_and_point_editors_at_the_schema(path: Path) -> None:
    text = path.read_text()
    errors = [e.message for e in validator().iter_errors(yaml.safe_load(text))]
    assert errors == []
    modeline = MODELINE.match(text)
    assert modeline is not None, "first line: # yaml-language-server: $schema=..."
    assert (path.parent / modeline[1]).resolve() == SCHEMA


def test_semantic_router_file_is_valid_with_its_own_sections() -> None:
    seed = {
        "bert_model": {"model_id": "x"},
        "ensemble": {"enabled": True, "endpoint_mappings": {"m": "http://127.0.0.1:8001/v1"}},
    }
    assert list(validator().iter_errors(seed)) == []
    assert list(validator().iter_errors({"bert_model": {}, "models": [MODEL]})) != []


# Files that the declaration rejects by their shape alone: the schema must reject them too.
# (References between sections, e.g. an unknown model in a profile, are the compile step's.)
SHAPE_ERRORS: list[dict[str, Any]] = [
    {"modles": []},
    {"models": [{"url": "http://x/v1"}]},
    {"models": [{"name": "a", "url": "ftp://x"}]},
    {"models": [{**MODEL, "weight": 0}]},
    {"models": [{**MODEL, "wieght": 2}]},
    {"models": [{**MODEL, "name": "a,b"}]},
    {"models": [{**MODEL, "api_key_env": "1KEY"}]},
    {"models": [{**MODEL, "accuracy": 1}]},
    {"models": [{**MODEL, "retries": True}]},
    {"models": [MODEL], "ensemble": {"timeout_seconds": "30s"}},
    {"models": [MODEL], "ensemble": {"timeout_seconds": None}},
    {"models": [MODEL], "ensemble": {"max_concurrent_requests": 0}},
    {"models": [MODEL], "ensemble": {"default_min_responses": True}},
    {"models": [MODEL], "ensemble": {"default_strategy": "best"}},
    {"models": [MODEL], "ensemble": {"weighted": {"alternatives": 0}}},
    {"models": [MODEL], "ensemble": {"weighted": {"alternatives": "three"}}},
    {"models": [MODEL], "ensemble": {"cascade": {"escalation": "later"}}},
    {"models": [MODEL], "ensemble": {"similarity_threshold": 1.5}},
    {"models": [MODEL], "ensemble": {"circuit_breaker": {"failures": 0}}},
    {"models": [MODEL], "ensemble": {"trust": {"halflife": 10}}},
    {"models": [MODEL], "ensemble": {"trust": {"alternatives": True}}},
    {"models": [MODEL], "ensemble": {"trust": {"change_threshold": None}}},
    {"models": [MODEL], "ensemble": {"trust": {"snapshot_dir": " "}}},
    {"models": [MODEL], "ensemble": {"trust": {"max_client_share": 0}}},
    {"models": [MODEL], "listen": {"envoy": "localhost"}},
    {"models": [MODEL], "listen": {"envoy": "h:70000"}},
    {"models": [MODEL], "envoy": {"failure_mode": "ajar"}},
    {"models": [MODEL], "logging": {"format": "yaml"}},
    {"models": [MODEL], "metadata_namespace": "a b"},
    {"models": [MODEL], "profiles": {"p": {"models": []}}},
    {"models": [MODEL], "profiles": {"p": {"models": ["a"], "strategy": "best"}}},
    {"models": [MODEL], "rules": [{"name": "r", "profile": "p", "match": {}}]},
    {"models": [MODEL], "adaptive": {"signals": [{"type": "magic"}]}},
    {"models": [MODEL], "adaptive": {"signals": [{"type": "difficulty", "weights": {"x": 1}}]}},
    {"models": [MODEL], "adaptive": {"threshold": 0}},
    {"models": [MODEL], "header_control": {"require_header": {"name": "x", "values": []}}},
    {"models": [MODEL], "header_control": None},
    {"demo": {"models": [{**DEMO, "port": 70000}]}},
    {"demo": {"models": [{**DEMO, "latency_ms": -1}]}},
    {"demo": {"models": [{**DEMO, "answers": ["ok", " "]}]}},
    {"demo": {"models": [{**DEMO, "fault": "explode"}]}},
    {"demo": {"models": [{**DEMO, "confidence_wrong": 1}]}},
    {"demo": {"models": [{**DEMO, "tool_call": {"name": "get weather"}}]}},
]


@pytest.mark.parametrize("raw", SHAPE_ERRORS)
def test_the_schema_rejects_what_the_declaration_rejects(raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        compile_config(raw, environ={})
    assert list(validator().iter_errors(raw)) != []


def test_cli_prints_the_schema(capsys: pytest.CaptureFixture[str]) -> None:
    from ensemble_extproc.cli import main

    assert main(["config-schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(SCHEMA.read_text())
