"""Prometheus metrics of the ensemble upstream and of the processor.

Each process owns its registry (no global default registry), created at start-up by
``process_registry`` and handed to the code that observes; label values are bounded by
config (strategies, endpoints, rule names) or by the code (error codes, states).
Names follow Prometheus' conventions: base units in the name (``_seconds``), ``_total`` on
counters, ``_ratio`` on fractions in 0..1; docs/metrics.md lists every metric.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from ..cost.account import NO_PRICE, cost_of
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


M = TypeVar("M", bound=MetricWrapperBase)


class Children(Generic[M]):
    """A labelled metric's children, each looked up once: ``labels()`` checks and locks on
    every call, a few microseconds that each ensemble paid a dozen times. Bounded like the
    label values (by config: strategies, endpoints, statuses)."""

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


def _circuit_is(states: Callable[[], Mapping[str, str]], endpoint: str, state: str) -> float:
    return 1.0 if states()[endpoint] == state else 0.0


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
        # Every metric in this process's registry.
        counter = functools.partial(Counter, registry=registry)
        gauge = functools.partial(Gauge, registry=registry)
        histogram = functools.partial(Histogram, registry=registry)
        self.requests = counter(
            "ensemble_requests",
            "Ensemble requests by strategy and outcome",
            ["strategy", "outcome"],
        )
        self.rejected = counter(
            "ensemble_rejected_requests",
            "Requests answered with a 4xx, by error code",
            ["code"],
        )
        self.latency = histogram(
            "ensemble_request_seconds",
            "Ensemble latency",
            ["strategy"],
            buckets=LATENCY_BUCKETS,
        )
        self.endpoint_latency = histogram(
            "ensemble_endpoint_seconds",
            "Latency of finished endpoint calls",
            ["endpoint", "status"],
            buckets=LATENCY_BUCKETS,
        )
        self.endpoint_errors = counter(
            "ensemble_endpoint_errors",
            "Failed endpoint calls by reason",
            ["endpoint", "reason"],
        )
        self.retries = counter("ensemble_endpoint_retries", "Retried endpoint calls", ["endpoint"])
        self.cancelled = counter(
            "ensemble_cancelled_calls",
            "Endpoint calls cancelled (decided early, lost a race)",
            ["endpoint"],
        )
        self.circuit = gauge(
            "ensemble_circuit_state",
            "Circuit breaker state per endpoint: 1 for the state it is in, 0 for the others",
            ["endpoint", "state"],
        )
        self.agreement = histogram(
            "ensemble_agreement_ratio",
            "Winning votes / valid votes",
            ["strategy"],
            buckets=(0.2, 0.4, 0.5, 0.6, 0.8, 0.99, 1.0),
        )
        self.tokens = counter("ensemble_tokens", "Tokens reported by endpoints", ["model", "kind"])
        self.in_flight = gauge("ensemble_in_flight_requests", "Ensemble requests being served")
        self._requests = Children(self.requests)
        self._latency = Children(self.latency)
        self._endpoint_latency = Children(self.endpoint_latency)
        self._endpoint_errors = Children(self.endpoint_errors)
        self._retries = Children(self.retries)
        self._cancelled = Children(self.cancelled)
        self._agreement = Children(self.agreement)
        self._tokens = Children(self.tokens)
        self.cost = counter(
            "ensemble_cost_usd",
            "US dollars spent on endpoint calls whose cost is known (usage at the model's price)",
            ["model"],
        )
        self.cost_unknown = counter(
            "ensemble_cost_unknown_calls",
            "Endpoint calls whose cost is unknown: no_price (none declared), no_usage (none "
            "reported)",
            ["model", "reason"],
        )
        self.cost_capped = counter(
            "ensemble_cost_capped_calls",
            "Endpoint calls not started: their estimated cost would pass the cost cap",
            ["model"],
        )
        self.resumes = counter(
            "ensemble_stream_resumes",
            "Relayed streams that broke midway, by the model that broke and whether another "
            "model continued them",
            ["model", "outcome"],
        )
        self._cost = Children(self.cost)
        self._cost_unknown = Children(self.cost_unknown)
        self._cost_capped = Children(self.cost_capped)

    def spent(self, candidate: Candidate) -> None:
        """What a call cost, or that its cost is unknown."""
        call = cost_of(candidate)
        if call.usd is not None:
            self._cost(candidate.model).inc(call.usd)
        else:
            reason = "no_price" if call.unknown == NO_PRICE else "no_usage"
            self._cost_unknown(candidate.model, reason).inc()

    def resumed(self, broken: str, resumed_on: str | None) -> None:
        self.resumes.labels(broken, "resumed" if resumed_on else "not_resumed").inc()

    def candidate(self, candidate: Candidate) -> None:
        name = candidate.model
        self.spent(candidate)
        if candidate.status is Status.OVER_BUDGET:
            self._cost_capped(name).inc()
            return
        if candidate.status is Status.CANCELLED:
            self._cancelled(name).inc()
            return
        if candidate.status is not Status.SKIPPED:
            self._endpoint_latency(name, candidate.status.value).observe(
                candidate.latency_ms / 1000
            )
        if candidate.attempts > 1:
            self._retries(name).inc(candidate.attempts - 1)
        if not candidate.valid:
            self._endpoint_errors(name, failure_reason(candidate)).inc()
        if candidate.usage is not None:
            self._tokens(name, "prompt").inc(candidate.usage.prompt_tokens)
            self._tokens(name, "completion").inc(candidate.usage.completion_tokens)

    def ensemble(
        self,
        strategy: str,
        outcome: str,
        seconds: float,
        candidates: tuple[Candidate, ...],
        agreement: float | None,
    ) -> None:
        self._requests(strategy, outcome).inc()
        self._latency(strategy).observe(seconds)
        if agreement is not None:
            self._agreement(strategy).observe(agreement)
        for candidate in candidates:
            self.candidate(candidate)

    def watch_circuits(self, states: Callable[[], Mapping[str, str]]) -> None:
        """Circuit states are read when metrics are scraped (not set after every ensemble,
        once per configured endpoint): ``states`` maps each endpoint to its state, shown
        one-hot (1 on the current state's line)."""
        for endpoint in states():
            for each in CIRCUIT_STATES:
                gauge = self.circuit.labels(endpoint, each)
                gauge.set_function(functools.partial(_circuit_is, states, endpoint, each))


class ProcessorMetrics:
    """The processor's metrics, priced for a hot path that costs tens of microseconds:
    plain counters, read by a collector when /metrics is scraped, and the time of one
    message in ``sample_every`` (a labelled histogram observation costs as much as a
    third of a plain pass-through)."""

    def __init__(self, registry: CollectorRegistry, sample_every: int = 16) -> None:
        self.registry = registry
        # Decisions by source (header, rule:<name>, adaptive, none, rejected) and error
        # code (a rejection's; empty for the others), ignored signal inputs by signal:
        # labels bounded by the config and the ErrorCode registry.
        self.decisions: collections.Counter[tuple[str, str]] = collections.Counter()
        self.ignored_signals: collections.Counter[str] = collections.Counter()
        self.streams_started = 0
        self.streams_ended = 0
        self.sample_every = sample_every
        self._until_sample = sample_every
        self.message_seconds = Histogram(
            "extproc_message_seconds",
            f"Processor time per ext_proc message (one message in {sample_every} timed)",
            ["phase"],
            buckets=(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.05),
            registry=registry,
        )
        registry.register(_ProcessorCounts(self))

    def sampled(self) -> bool:
        """Whether to time the next message."""
        self._until_sample -= 1
        if self._until_sample:
            return False
        self._until_sample = self.sample_every
        return True


class _ProcessorCounts(Collector):
    """The plain counters as Prometheus metrics. Scrapes run in the metrics server's
    thread: they copy each counter (atomic under the GIL) before reading it."""

    def __init__(self, metrics: ProcessorMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        decisions = CounterMetricFamily(
            "extproc_decisions",
            "Decisions by source (header, rule:<name>, adaptive, none, rejected); a rejected "
            "one by its error code (empty for the others)",
            labels=["decision", "code"],
        )
        for (label, code), count in metrics.decisions.copy().items():
            decisions.add_metric([label, code], count)
        ignored = CounterMetricFamily(
            "extproc_ignored_signals", "Unusable confidence signal inputs", labels=["signal"]
        )
        for label, count in metrics.ignored_signals.copy().items():
            ignored.add_metric([label], count)
        started, ended = metrics.streams_started, metrics.streams_ended
        yield decisions
        yield ignored
        yield CounterMetricFamily("extproc_streams", "ext_proc streams opened", value=started)
        yield GaugeMetricFamily(
            "extproc_open_streams", "ext_proc streams open", value=started - ended
        )
