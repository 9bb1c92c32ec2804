"""The strategies' config: the ``ensemble.<strategy>`` blocks, declared once (see config.model)."""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from ..section import Count, Fraction, Section

ModelName = Annotated[str, Meta(description="the name of a configured model")]


class Weighted(Section, frozen=True):
    use_confidence: bool = False
    # k: log-odds weights become log(k p / (1 - p)), the optimal weights for independent
    # voters whose errors spread over k answers. auto: the limit of large k, votes first and
    # log-odds break ties, never worse than voting whatever the number of wrong answers.
    alternatives: Annotated[
        Count | Literal["auto"],
        Meta(description="wrong answers per question, e.g. 3 for four options; or auto"),
    ] = "auto"
    # configured: the configured accuracies; learned: learned ones where there is enough
    # evidence (ensemble.trust), the configured ones before, and k learned from c unless
    # alternatives sets it. config.load checks that trust is on for learned.
    weights: Annotated[
        Literal["configured", "learned"],
        Meta(
            description="configured: the models' configured accuracies; learned: accuracies "
            "and k learned from agreement (needs ensemble.trust.enabled), the configured "
            "ones until there is enough evidence"
        ),
    ] = "configured"

    @property
    def k(self) -> int | None:
        """The configured number of alternatives; None for auto."""
        return None if self.alternatives == "auto" else self.alternatives


class FirstSuccess(Section, frozen=True):
    # None: call every model at once; else the next one after this long without an answer.
    hedge_delay_ms: Annotated[float, Meta(ge=0)] | None = None


class ScoreAveraging(Section, frozen=True):
    numeric: Literal["none", "mean", "median"] = "none"


class Reranking(Section, frozen=True):
    judge_model: ModelName | None = None


class Fusion(Section, frozen=True):
    aggregator_model: ModelName | None = None


class Cascade(Section, frozen=True):
    order: tuple[str, ...] = ()
    confidence_threshold: Fraction = 0.8
    agreement: Count = 2
    escalation: Literal["next", "ensemble"] = "next"


class StrategySettings(Section, frozen=True):
    """Config of the strategies, compiled once; the ``ensemble`` section extends it."""

    similarity_threshold: Fraction = 0.9
    weighted: Weighted = Weighted()
    first_success: FirstSuccess = FirstSuccess()
    score_averaging: ScoreAveraging = ScoreAveraging()
    reranking: Reranking = Reranking()
    fusion: Fusion = Fusion()
    cascade: Cascade = Cascade()
