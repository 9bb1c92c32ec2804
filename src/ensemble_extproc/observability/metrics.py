"""Prometheus metrics of the ensemble upstream and of the processor.

Each process owns its registry (no global default registry), created at start-up and
handed to the code that observes; label values are bounded by config (strategies,
endpoints, rule names).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from ..cost.account import NO_PRICE, cost_of
from ..strategies import Candidate, Failure, Status

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}

__all__ = ["CONTENT_TYPE_LATEST", "ProcessorMetrics", "UpstreamMetrics", "generate_latest"]


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
            "Circuit breaker per endpoint: 0 closed, 1 half open, 2 open",
            ["endpoint"],
            registry=registry,
        )
        self.agreement = Histogram(
            "ensemble_agreement",
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
            "ensemble_in_flight", "Ensemble requests being served", registry=registry
        )
        self.cost = Counter(
            "ensemble_cost_usd",
            "US dollars spent on endpoint calls whose cost is known (usage at the model's price)",
            ["model"],
            registry=registry,
        )
        self.cost_unknown = Counter(
            "ensemble_cost_unknown_calls",
            "Endpoint calls whose cost is unknown: no_price (none declared), no_usage (none "
            "reported)",
            ["model", "reason"],
            registry=registry,
        )
        self.cost_capped = Counter(
            "ensemble_cost_capped_calls",
            "Endpoint calls not started: their estimated cost would pass the cost cap",
            ["model"],
            registry=registry,
        )
        self.resumes = Counter(
            "ensemble_stream_resumes",
            "Relayed streams that broke midway, by the model that broke and whether another "
            "model continued them",
            ["model", "outcome"],
            registry=registry,
        )

    def spent(self, candidate: Candidate) -> None:
        """What a call cost, or that its cost is unknown."""
        call = cost_of(candidate)
        if call.usd is not None:
            self.cost.labels(candidate.model).inc(call.usd)
        else:
            reason = "no_price" if call.unknown == NO_PRICE else "no_usage"
            self.cost_unknown.labels(candidate.model, reason).inc()

    def resumed(self, broken: str, resumed_on: str | None) -> None:
        self.resumes.labels(broken, "resumed" if resumed_on else "not_resumed").inc()

    def candidate(self, candidate: Candidate) -> None:
        name = candidate.model
        self.spent(candidate)
        if candidate.status is Status.OVER_BUDGET:
            self.cost_capped.labels(name).inc()
            return
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
            self.circuit.labels(endpoint).set(CIRCUIT_VALUES[state])


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.decisions = Counter(
            "extproc_decisions",
            "Decisions by source (header, rule:<name>, adaptive, none, rejected)",
            ["decision"],
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
