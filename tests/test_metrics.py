"""What /metrics exports follows Prometheus' naming conventions, and docs/metrics.md lists
exactly what is exported: every metric with its type and labels."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ensemble_extproc.observability.metrics import (
    CIRCUIT_STATES,
    ProcessorMetrics,
    UpstreamMetrics,
    process_registry,
)
from ensemble_extproc.strategies import Candidate, Failure, Status, Usage
from ensemble_extproc.upstream import create_app
from ensemble_extproc.upstream.resilience import CircuitState

from helpers import make_config, serve_app

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
OURS = ("ensemble_", "extproc_")
# Units a name must not carry: Prometheus wants base units (seconds, bytes, ratios).
NOT_BASE_UNITS = re.compile(r"_(ms|milliseconds|us|microseconds|minutes|hours|kb|mb|percent)(_|$)")


def exercised_upstream() -> UpstreamMetrics:
    """Upstream metrics after an ensemble that touched every family with labels."""
    metrics = UpstreamMetrics(process_registry())
    usage = Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    candidates = (
        Candidate("a", Status.OK, {"role": "assistant", "content": "x"}, usage=usage, attempts=2),
        Candidate("b", Status.ERROR, failure=Failure.HTTP, http_status=503, latency_ms=4),
        Candidate("c", Status.CANCELLED),
        Candidate("d", Status.SKIPPED),
    )
    circuits = {"a": "closed", "b": "open"}
    metrics.watch_circuits(lambda: circuits)
    metrics.ensemble("voting", "ok", 0.2, candidates, 0.5)
    metrics.rejected.labels("invalid_header").inc()
    return metrics


def exercised_processor() -> ProcessorMetrics:
    metrics = ProcessorMetrics(process_registry())
    metrics.decisions["rejected", "model_not_found"] += 1
    metrics.decisions["header", ""] += 1
    metrics.ignored_signals["x-confidence"] += 1
    metrics.message_seconds.labels("request_headers").observe(0.0001)
    metrics.streams_started += 1
    return metrics


async def upstream_metrics() -> dict[str, tuple[str, list[Sample]]]:
    """What a real upstream serves on /metrics (learned trust on)."""
    config = make_config({"m1": "http://127.0.0.1:9/v1"}, ensemble={"trust": {"enabled": True}})
    async with (
        serve_app(create_app(config)) as base,
        aiohttp.ClientSession() as session,
        session.get(f"{base}/metrics") as response,
    ):
        assert response.status == 200
        return families(await response.text())


def families(text: str) -> dict[str, tuple[str, list[Sample]]]:
    """Exported name (a counter's with ``_total``) -> (type, samples). The text format
    shows prometheus_client's ``<name>_created`` (when a series started) as gauges of
    their own; they are folded back into the counter or histogram they belong to."""
    found: dict[str, tuple[str, list[Sample]]] = {}
    created: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        if family.type == "gauge" and family.name.endswith("_created"):
            created[family.name.removesuffix("_created")] = family.samples
            continue
        name = family.name + ("_total" if family.type == "counter" else "")
        found[name] = (family.type, family.samples)
    for base, samples in created.items():
        name = next(n for n in (base + "_total", base) if n in found)
        assert found[name][0] in ("counter", "histogram"), f"{base}_created"
        found[name][1].extend(samples)
    return found


def documented() -> dict[str, tuple[str, set[str]]]:
    """docs/metrics.md's table rows: name -> (type, labels)."""
    rows = {}
    for line in DOCS.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`[a-z_]+`", cells[0]):
            labels = set(re.findall(r"`(\w+)`", cells[2]))
            rows[cells[0].strip("`")] = (cells[1], labels)
    return rows


@pytest.fixture(scope="module")
def scraped() -> dict[str, dict[str, tuple[str, list[Sample]]]]:
    return {
        "upstream": families(generate_latest(exercised_upstream().registry).decode()),
        "processor": families(generate_latest(exercised_processor().registry).decode()),
    }


async def test_both_servers_export_their_process() -> None:
    """The upstream's real /metrics endpoint, and the processor's registry as served."""
    upstream = await upstream_metrics()
    processor = families(generate_latest(ProcessorMetrics(process_registry()).registry).decode())
    for exported in (upstream, processor):
        for name in (
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_start_time_seconds",
            "process_open_fds",
            "python_info",
            "python_gc_collections_total",
        ):
            assert name in exported, name
    # Learned trust's families are exported by the upstream too (read at scrape time).
    assert "ensemble_trust_accuracy_ratio" in upstream


async def test_docs_list_every_exported_metric_with_its_type_and_labels(
    scraped: dict[str, dict[str, tuple[str, list[Sample]]]],
) -> None:
    trust = {
        name: found
        for name, found in (await upstream_metrics()).items()
        if name.startswith("ensemble_trust_")
    }
    exported = {**scraped["upstream"], **scraped["processor"], **trust}
    ours = {name: found for name, found in exported.items() if name.startswith(OURS)}
    docs = documented()
    assert {name: kind for name, (kind, _) in ours.items()} == {
        name: kind for name, (kind, _) in docs.items()
    }
    for name, (_, samples) in ours.items():
        labels = {label for sample in samples for label in sample.labels} - {"le"}
        assert labels <= docs[name][1], f"{name}: labels {labels} not all in docs/metrics.md"


def test_names_follow_the_conventions(
    scraped: dict[str, dict[str, tuple[str, list[Sample]]]],
) -> None:
    for exported in scraped.values():
        for name, (kind, samples) in exported.items():
            assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
            assert not NOT_BASE_UNITS.search(name), f"{name}: not in base units"
            if kind == "counter":
                assert name.endswith("_total"), name
                base = name.removesuffix("_total")
                assert all(s.name in (name, base + "_created") for s in samples), name
            else:
                assert not name.endswith("_total"), f"{name}: _total is for counters"
            if "seconds" in name:
                assert name.endswith(("_seconds", "_seconds_total")), name
            if name.endswith("_ratio"):
                for sample in samples:
                    if sample.name.endswith("_bucket"):
                        bound = float(sample.labels["le"])
                        assert bound <= 1 or bound == float("inf"), f"{name}: le={bound}"
                    elif sample.name == name:
                        assert 0 <= sample.value <= 1, f"{name}: {sample.value}"


def test_agreement_is_a_ratio_histogram(
    scraped: dict[str, dict[str, tuple[str, list[Sample]]]],
) -> None:
    kind, samples = scraped["upstream"]["ensemble_agreement_ratio"]
    assert kind == "histogram"
    count = next(s for s in samples if s.name == "ensemble_agreement_ratio_count")
    assert count.value == 1
    assert "ensemble_agreement" not in scraped["upstream"]


def test_circuit_state_is_a_one_hot_state_label(
    scraped: dict[str, dict[str, tuple[str, list[Sample]]]],
) -> None:
    assert set(CIRCUIT_STATES) == {state.value for state in CircuitState}
    kind, samples = scraped["upstream"]["ensemble_circuit_state"]
    assert kind == "gauge"
    states = {(s.labels["endpoint"], s.labels["state"]): s.value for s in samples}
    assert states == {
        ("a", "closed"): 1,
        ("a", "half_open"): 0,
        ("a", "open"): 0,
        ("b", "closed"): 0,
        ("b", "half_open"): 0,
        ("b", "open"): 1,
    }


def test_a_circuit_that_changes_state_moves_its_one() -> None:
    metrics = UpstreamMetrics(process_registry())
    circuits = {"a": "closed"}
    metrics.watch_circuits(lambda: circuits)
    for state in ("open", "half_open", "closed"):
        circuits["a"] = state
        exported = families(generate_latest(metrics.registry).decode())
        _, samples = exported["ensemble_circuit_state"]
        assert {s.labels["state"]: s.value for s in samples} == {
            each: (1 if each == state else 0) for each in CIRCUIT_STATES
        }


def test_a_rejected_decision_carries_its_error_code(
    scraped: dict[str, dict[str, tuple[str, list[Sample]]]],
) -> None:
    _, samples = scraped["processor"]["extproc_decisions_total"]
    counts = {
        (s.labels["decision"], s.labels["code"]): s.value
        for s in samples
        if s.name == "extproc_decisions_total"
    }
    assert counts == {("rejected", "model_not_found"): 1, ("header", ""): 1}
