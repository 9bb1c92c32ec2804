"""Learned trust: members' accuracies from their agreement, and members that move together.

See docs/trust.md. The pure parts: ``stats`` (decayed sufficient statistics), ``fit``
(the one-coin estimate, flags, intervals), ``weights`` (what strategies use),
``influence`` (one client's bound). The edges: ``service`` (feeding, snapshots),
``persist`` (files), ``report`` (JSON and Prometheus).
"""

from __future__ import annotations

from .book import TrustBook, ensemble_key, priors_from, set_key
from .feed import client_identity, observation
from .fit import Fit, Prior, fit
from .model import (
    MemberEstimate,
    Observation,
    PairEstimate,
    Source,
    TrustSettings,
    TrustView,
)
from .weights import MemberWeight, WeightPlan, alternatives_of, log_odds, plan_weights

__all__ = [
    "Fit",
    "MemberEstimate",
    "MemberWeight",
    "Observation",
    "PairEstimate",
    "Prior",
    "Source",
    "TrustBook",
    "TrustSettings",
    "TrustView",
    "WeightPlan",
    "alternatives_of",
    "client_identity",
    "ensemble_key",
    "fit",
    "log_odds",
    "observation",
    "plan_weights",
    "priors_from",
    "set_key",
]
