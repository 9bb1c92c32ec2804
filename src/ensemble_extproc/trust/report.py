"""What operators see: the JSON of ``GET /admin/trust`` and the Prometheus metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .influence import client_influence
from .model import TrustView
from .service import TrustService


def _r(value: float) -> float:
    return round(value, 4)


def trust_report(service: TrustService) -> dict[str, Any]:
    """The operator's view: per key, each member's accuracy with its interval, and the
    pairs flagged as moving together with their excess agreement."""
    settings = service.settings
    if not service.enabled:
        return {
            "enabled": False,
            "hint": "learning is off: set ensemble.trust.enabled: true (see docs/trust.md)",
            "keys": [],
        }
    status = service.status
    return {
        "enabled": True,
        "replica": service.replica,
        "settings": {
            "half_life": settings.half_life,
            "min_evidence": settings.min_evidence,
            "alternatives": settings.alternatives,
            "flag_z": settings.flag_z,
            "min_excess": settings.min_excess,
            "max_client_share": settings.max_client_share,
            "correlation": settings.correlation,
            "sample_share": settings.sample_share,
        },
        "observations": {
            "accepted": service.accepted,
            "refused": service.refused,
            "not_sampled": service.not_sampled,
        },
        "snapshots": {
            "path": status.path,
            "restored": status.restored,
            "last_saved": status.last_saved,
            "last_error": status.last_error,
            "peers": [{"replica": r, "written_at": t} for r, t in sorted(status.peers.items())],
            "ignored": list(status.ignored),
        },
        # Refitted now: strategies refit a key every refit_every ensembles, and the
        # operator reads the current state (the strategies then use the same fit).
        "keys": [_key_report(service, view) for view in service.book.views(refit=True)],
    }


def _key_report(service: TrustService, view: TrustView) -> dict[str, Any]:
    book = service.book
    totals = book.totals(view.key)
    result = book.fitted(view.key)
    influence: dict[str, float] = {}
    if totals is not None and result is not None:
        priors = {m: e.prior for m, e in view.members.items()}
        influence = client_influence(
            result, totals, priors, service.settings, book.sources(view.key)
        )
    return {
        "key": view.key,
        "observations": view.observations,
        "evidence": _r(view.mass),
        "refused_by_client_cap": view.rejected,
        "replicas": book.sources(view.key),
        "wrong_answer_agreement": {
            "value": _r(view.wrong_agreement),
            "interval": [_r(view.wrong_agreement_low), _r(view.wrong_agreement_high)],
            "learned": view.wrong_agreement_learned,
        },
        "clients": {
            "largest_share": _r(view.top_client_share),
            "share_bound": _r(view.client_share_bound),
        },
        "members": [
            {
                "model": e.model,
                "accuracy": _r(e.accuracy),
                "interval": [_r(e.low), _r(e.high)],
                "evidence": round(e.evidence, 1),
                "learned": e.learned,
                "used": _r(e.used),
                "source": e.source.value,
                "prior": _r(e.prior),
                "failure_rate": _r(e.failure_rate),
                "changes": e.changes,
                "client_influence": _r(influence[e.model]) if e.model in influence else None,
            }
            for e in view.members.values()
        ],
        "flagged_pairs": [
            {
                "models": [p.a, p.b],
                "observed": _r(p.observed),
                "expected": _r(p.expected),
                "excess": _r(p.excess),
                "z": round(p.z, 2),
                "kappa": _r(p.kappa),
                "evidence": round(p.evidence, 1),
            }
            for p in view.flagged
        ],
        "groups": [list(g) for g in view.groups],
        **_hint(service, view),
    }


def _hint(service: TrustService, view: TrustView) -> dict[str, str]:
    """Why nothing is learned, when the reason is the operator's to fix."""
    share = service.settings.max_client_share
    if view.top_client_share > max(0.5, share) or view.rejected > view.observations:
        return {
            "hint": "one client sends most of this traffic, so the per-client cap "
            f"(max_client_share {share:g}) holds learning back; if all clients are trusted "
            "(a single tenant), raise ensemble.trust.max_client_share (1 turns the cap off)"
        }
    return {}


class TrustCollector(Collector):
    """Prometheus metrics of the trust book, read at scrape time (no stale label sets:
    a pair that is no longer flagged simply stops being exported)."""

    def __init__(self, service: TrustService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        accuracy = GaugeMetricFamily(
            "ensemble_trust_accuracy_ratio",
            "Learned accuracy of a member, by trust key",
            labels=["key", "model"],
        )
        low = GaugeMetricFamily(
            "ensemble_trust_accuracy_low_ratio",
            "Lower end of the 95 % interval of the learned accuracy",
            labels=["key", "model"],
        )
        high = GaugeMetricFamily(
            "ensemble_trust_accuracy_high_ratio",
            "Upper end of the 95 % interval of the learned accuracy",
            labels=["key", "model"],
        )
        learned = GaugeMetricFamily(
            "ensemble_trust_learned",
            "1 when the learned accuracy has enough evidence to replace the configured one",
            labels=["key", "model"],
        )
        excess = GaugeMetricFamily(
            "ensemble_trust_excess_agreement_ratio",
            "Agreement of a flagged pair beyond what independent members would show",
            labels=["key", "model_a", "model_b"],
        )
        evidence = GaugeMetricFamily(
            "ensemble_trust_evidence",
            "Decayed number of ensembles behind a trust key",
            labels=["key"],
        )
        observations = CounterMetricFamily(
            "ensemble_trust_observations",
            "Ensembles fed to the trust book, by outcome (refused: client cap, or < 2 "
            "answers; not_sampled: may have stopped early, outside the sample)",
            labels=["outcome"],
        )
        if self._service.enabled:
            for view in self._service.book.views():
                for e in view.members.values():
                    labels = [view.key, e.model]
                    accuracy.add_metric(labels, e.accuracy)
                    low.add_metric(labels, e.low)
                    high.add_metric(labels, e.high)
                    learned.add_metric(labels, 1.0 if e.learned else 0.0)
                for p in view.flagged:
                    excess.add_metric([view.key, p.a, p.b], p.excess)
                evidence.add_metric([view.key], view.mass)
        observations.add_metric(["accepted"], self._service.accepted)
        observations.add_metric(["not_sampled"], self._service.not_sampled)
        observations.add_metric(["refused"], self._service.refused)
        yield from (accuracy, low, high, learned, excess, evidence, observations)
