"""Prometheus metrics of the ensemble upstream and of the processor.

Each process owns its registry (no global default registry), created at start-up by
``process_registry`` and handed to the code that observes; label values are bounded by
config (strategies, endpoints, rule names) or by the code (error codes, states).
Names follow Prometheus' conventions: base units in the name (``_seconds``), ``_total`` on
counters, ``_ratio`` on fractions in 0..1; docs/metrics.md lists every metric.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ..strategies import Candidate, Failure, Status

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CIRCUIT_STATES = ("closed", "half_open", "open")

__all__ = [
    "CONTENT_TYPE_LATEST",
    "ProcessorMetrics",
    "UpstreamMetrics",
    "generate_latest",
    "process_registry",
]


def process_registry() -> CollectorRegistry:
    """A registry with what prometheus_client's default one has: the process (CPU,
    memory, open files, start time), the platform (Python version) and the garbage
    collector, so each server's /metrics shows its own process."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def failure_reason(candidate: Candidate) -> str:
    if candidate.status is Status.SKIPPED:
        return "circuit_open"
    if candidate.status is Status.TIMEOUT:
        return "timeout"
    if candidate.failure is Failure.HTTP:
        return f"http_{candidate.http_status}"
    if candidate.failure is not None:
        return candidate.failure.value
    return "invalid_answer"  # arrived, but empty or filtered


class UpstreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "ensemble_requests",
            "Ensemble requests by strategy and outcome",
            ["strategy", "outcome"],
            registry=registry,
        )
        self.rejected = Counter(
            "ensemble_rejected_requests",
            "Requests answered with a 4xx, by error code",
            ["code"],
            registry=registry,
        )
        self.latency = Histogram(
            "ensemble_request_seconds",
            "Ensemble latency",
            ["strategy"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.endpoint_latency = Histogram(
            "ensemble_endpoint_seconds",
            "Latency of finished endpoint calls",
            ["endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.endpoint_errors = Counter(
            "ensemble_endpoint_errors",
            "Failed endpoint calls by reason",
            ["endpoint", "reason"],
            registry=registry,
        )
        self.retries = Counter(
            "ensemble_endpoint_retries",
            "Retried endpoint calls",
            ["endpoint"],
            registry=registry,
        )
        self.cancelled = Counter(
            "ensemble_cancelled_calls",
            "Endpoint calls cancelled (decided early, lost a race)",
            ["endpoint"],
            registry=registry,
        )
        self.circuit = Gauge(
            "ensemble_circuit_state",
            "Circuit breaker state per endpoint: 1 for the state it is in, 0 for the others",
            ["endpoint", "state"],
            registry=registry,
        )
        self.agreement = Histogram(
            "ensemble_agreement_ratio",
            "Winning votes / valid votes",
            ["strategy"],
            buckets=(0.2, 0.4, 0.5, 0.6, 0.8, 0.99, 1.0),
            registry=registry,
        )
        self.tokens = Counter(
            "ensemble_tokens",
            "Tokens reported by endpoints",
            ["model", "kind"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "ensemble_in_flight_requests", "Ensemble requests being served", registry=registry
        )

    def candidate(self, candidate: Candidate) -> None:
        name = candidate.model
        if candidate.status is Status.CANCELLED:
            self.cancelled.labels(name).inc()
            return
        if candidate.status is not Status.SKIPPED:
            self.endpoint_latency.labels(name, candidate.status.value).observe(
                candidate.latency_ms / 1000
            )
        if candidate.attempts > 1:
            self.retries.labels(name).inc(candidate.attempts - 1)
        if not candidate.valid:
            self.endpoint_errors.labels(name, failure_reason(candidate)).inc()
        if candidate.usage is not None:
            self.tokens.labels(name, "prompt").inc(candidate.usage.prompt_tokens)
            self.tokens.labels(name, "completion").inc(candidate.usage.completion_tokens)

    def ensemble(
        self,
        strategy: str,
        outcome: str,
        seconds: float,
        candidates: tuple[Candidate, ...],
        agreement: float | None,
        circuits: dict[str, str],
    ) -> None:
        self.requests.labels(strategy, outcome).inc()
        self.latency.labels(strategy).observe(seconds)
        if agreement is not None:
            self.agreement.labels(strategy).observe(agreement)
        for candidate in candidates:
            self.candidate(candidate)
        for endpoint, state in circuits.items():
            for each in CIRCUIT_STATES:
                self.circuit.labels(endpoint, each).set(1 if each == state else 0)


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.decisions = Counter(
            "extproc_decisions",
            "Decisions by source (header, rule:<name>, adaptive, none, rejected); a rejected "
            "one by its error code (empty for the others)",
            ["decision", "code"],
            registry=registry,
        )
        self.ignored_signals = Counter(
            "extproc_ignored_signals",
            "Unusable confidence signal inputs",
            ["signal"],
            registry=registry,
        )
        self.message_seconds = Histogram(
            "extproc_message_seconds",
            "Processor time per ext_proc message",
            ["phase"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
            registry=registry,
        )
        self.streams = Gauge("extproc_open_streams", "ext_proc streams open", registry=registry)
