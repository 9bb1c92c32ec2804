"""Types of the trust estimator: its settings, one observation, and what it reports."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from msgspec import Meta
from msgspec.structs import force_setattr

from ..section import Count, Fraction, Positive, Section

# 95 % two-sided normal quantile: the intervals of accuracies and of c.
Z95 = 1.959963984540054


class TrustSettings(Section, frozen=True):
    """``ensemble.trust``, declared once (see config.model and docs/trust.md)."""

    # Off: nothing is observed, learned or saved; /admin/trust says so.
    enabled: bool = False
    correlation: Annotated[
        bool,
        Meta(
            description="members that move together share a vote (voting, weighted) and are "
            "one voice (cascade); false: flagged and reported only"
        ),
    ] = True
    # Of the ensembles whose strategy may stop early (voting and weighted with
    # min_responses below the number of members, cascade, first_success), this share asks
    # every member to the end and is learned from; the others are not (an early stop leaves
    # out slow members exactly when the fast ones agree: a biased sample). Ensembles that
    # cannot stop early are all learned from.
    sample_share: Annotated[
        Fraction,
        Meta(
            description="the share of ensembles that may stop early which ask every member "
            "to the end and are learned from"
        ),
    ] = 0.1
    # Questions (observations of one key) after which old evidence weighs half.
    half_life: Positive = 500.0
    # Labelled-question equivalents an estimate needs before it replaces the prior.
    min_evidence: Annotated[float, Meta(ge=0)] = 100.0
    # The prior of each member's accuracy counts as this many labelled questions.
    prior_strength: Positive = 10.0
    # Prior of a member that config gives no accuracy.
    default_accuracy: Annotated[float, Meta(gt=0, lt=1)] = 0.7
    # Plausible wrong answers per question (k): fixes c = 1/k. auto (None once read, as is
    # null): c is learned.
    alternatives: Annotated[
        Annotated[int, Meta(ge=1)] | Literal["auto"] | None,
        Meta(
            description="auto or a whole number >= 1: the plausible wrong answers per question "
            "(3 for 4-option quizzes); auto learns it"
        ),
    ] = "auto"
    # Prior of the learned c (probability that two wrong answers agree) and its weight.
    wrong_agreement_prior: ClassVar[float] = 0.1
    wrong_agreement_prior_strength: ClassVar[float] = 2.0
    # A pair stands out (and its cluster may be flagged) when its excess agreement is at
    # least min_excess and flag_z standard errors above what independent members show.
    flag_z: Positive = 4.5
    min_excess: Annotated[float, Meta(ge=0, lt=1)] = 0.05
    # No client holds more than this share of a key's full evidence (1: no cap).
    max_client_share: Fraction = 0.05
    # Bounded memory: keys (LRU) and clients per key (smallest evicted).
    max_keys: Count = 64
    max_clients: Count = 4096
    # Forget a member's old evidence when a CUSUM of its agreement with the others passes
    # this (a model update; see trust.change). False: only decay follows changes.
    change_threshold: Annotated[
        Positive | Literal[False],
        Meta(
            description="a CUSUM threshold > 0 or false: false turns change detection off "
            "(decay alone then follows model updates)"
        ),
    ] = 25.0
    # A key's estimate is refitted when read after this many new observations.
    refit_every: Count = 50
    # Persistence: <snapshot_dir>/<replica_id>.json, written every snapshot_interval.
    snapshot_dir: (
        Annotated[str, Meta(pattern=r"\S", description="name a directory, or remove it")] | None
    ) = None
    snapshot_interval_seconds: Positive = 60.0
    replica_id: str = ""  # empty: <hostname>-<upstream port>
    # Peers' snapshots older than this are ignored (a replica that is gone); config.load
    # checks that it is longer than snapshot_interval_seconds.
    peer_max_age_seconds: Positive = 3600.0

    def __post_init__(self) -> None:
        if self.alternatives == "auto":
            force_setattr(self, "alternatives", None)
        if self.change_threshold is None:  # built in code: None is off, as false is in YAML
            force_setattr(self, "change_threshold", False)

    @property
    def k(self) -> int | None:
        """The configured number of alternatives; None for auto (c is learned)."""
        return self.alternatives if isinstance(self.alternatives, int) else None

    @property
    def decay(self) -> float:
        """Per-observation decay factor: evidence ``half_life`` questions old weighs 1/2."""
        return float(2.0 ** (-1.0 / self.half_life))

    @property
    def full_mass(self) -> float:
        """The evidence mass of a key with unbroken traffic: 1 / (1 - decay)."""
        return 1.0 / (1.0 - self.decay)

    @property
    def client_cap(self) -> float:
        """The most evidence mass one client may hold in one key."""
        return self.max_client_share * self.full_mass


@dataclass(frozen=True, slots=True)
class Observation:
    """One ensemble, as the estimator sees it.

    ``answers`` maps each member that answered to its answer group (members with the
    same group agree); ``failed`` lists members asked that gave no usable answer.
    Members that were cancelled or skipped appear in neither.
    """

    answers: Mapping[str, int]
    failed: frozenset[str] = frozenset()
    # Who sent the request (a hashed API key or address): bounds one client's influence.
    client: str = ""


class Source(StrEnum):
    """Where an accuracy used for a weight came from."""

    LEARNED = "learned"  # learned from agreement, with enough evidence
    CONFIGURED = "configured"  # the model's configured accuracy (the prior)
    DEFAULT = "default"  # neither: the default prior (``default_accuracy``)


@dataclass(frozen=True, slots=True)
class MemberEstimate:
    model: str
    accuracy: float  # the fitted accuracy (data and prior)
    low: float  # 95 % interval
    high: float
    # Labelled-question equivalents of the data behind it (prior excluded).
    evidence: float
    prior: float
    prior_source: Source
    # The fitted accuracy replaced the prior (enough evidence, see TrustView.usable).
    learned: bool
    # Decayed count of questions this member answered / failed.
    answered: float
    failed: float
    # Sudden changes detected (a model update): each one forgot most old evidence.
    changes: int = 0

    @property
    def used(self) -> float:
        """The accuracy a strategy should use: learned, else the prior."""
        return self.accuracy if self.learned else self.prior

    @property
    def source(self) -> Source:
        return Source.LEARNED if self.learned else self.prior_source

    @property
    def failure_rate(self) -> float:
        total = self.answered + self.failed
        return self.failed / total if total > 0 else 0.0


@dataclass(frozen=True, slots=True)
class PairEstimate:
    """Two members' agreement, against what independent members would show."""

    a: str
    b: str
    observed: float  # decayed share of questions both answered on which they agreed
    expected: float  # p_a p_b + c (1 - p_a)(1 - p_b)
    evidence: float  # effective number of questions both answered
    z: float  # (observed - expected) / its standard error
    flagged: bool

    @property
    def excess(self) -> float:
        return self.observed - self.expected

    @property
    def kappa(self) -> float:
        """Excess agreement as a share of the possible excess (1: they always agree)."""
        if self.expected >= 1.0:
            return 0.0
        return min(1.0, max(0.0, self.excess / (1.0 - self.expected)))


@dataclass(frozen=True, slots=True)
class TrustView:
    """Everything learned about one key (profile or model set), at one moment."""

    key: str
    members: Mapping[str, MemberEstimate]
    pairs: tuple[PairEstimate, ...]
    # c: probability that two wrong answers to one question agree; with its interval.
    wrong_agreement: float
    wrong_agreement_low: float
    wrong_agreement_high: float
    wrong_agreement_learned: bool
    observations: int  # accepted observations, ever (not decayed)
    mass: float  # decayed evidence mass of the key
    # Share of the key's evidence held by its largest client, and the most one client may
    # hold (client_cap / mass): the bound on one client's influence on any agreement rate.
    top_client_share: float
    client_share_bound: float
    rejected: int = 0  # observations refused by the per-client cap
    groups: tuple[tuple[str, ...], ...] = field(default=())

    @property
    def flagged(self) -> tuple[PairEstimate, ...]:
        return tuple(p for p in self.pairs if p.flagged)

    def pair(self, a: str, b: str) -> PairEstimate | None:
        for pair in self.pairs:
            if {pair.a, pair.b} == {a, b}:
                return pair
        return None


def interval(value: float, se: float, low: float = 0.0, high: float = 1.0) -> tuple[float, float]:
    """value ± 1.96 se, clipped to [low, high]."""
    if not math.isfinite(se):
        return low, high
    return max(low, value - Z95 * se), min(high, value + Z95 * se)
