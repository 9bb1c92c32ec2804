"""One client with crafted traffic moves a member's learned accuracy (and weight) at most
by the stated bound: its capped share of the evidence, through the fit's sensitivity."""

from __future__ import annotations

import math
import random

import pytest

from ensemble_extproc.trust.book import TrustBook, priors_from
from ensemble_extproc.trust.influence import client_influence
from ensemble_extproc.trust.model import Observation, TrustSettings
from ensemble_extproc.trust.weights import log_odds
from trust_sim import answers

TRUTH = {"a": 0.85, "b": 0.75, "c": 0.7, "d": 0.65, "e": 0.6}
KEY = "profile:p"


def honest_book(settings_: TrustSettings) -> TrustBook:
    book = TrustBook(settings_, priors_from(dict.fromkeys(TRUTH), settings_))
    rng = random.Random(7)
    for _ in range(3000):
        seen = Observation(answers(TRUTH, rng), client=f"honest-{rng.randrange(200)}")
        book.observe(KEY, list(TRUTH), seen)
    return book


def crafted(target: str, push_down: bool) -> Observation:
    """Prompts on which the target answers alone (down), or everyone agrees with it (up)."""
    if push_down:
        return Observation({m: 9 if m == target else 0 for m in TRUTH}, client="attacker")
    return Observation(dict.fromkeys(TRUTH, 0), client="attacker")


def stated_bound(book: TrustBook) -> dict[str, float]:
    result = book.fitted(KEY)
    totals = book.totals(KEY)
    assert result is not None
    assert totals is not None
    priors = {m: e.prior for m, e in result.view.members.items()}
    return client_influence(result, totals, priors, book.settings)


def attack(book: TrustBook, target: str, push_down: bool, count: int) -> int:
    return sum(book.observe(KEY, list(TRUTH), crafted(target, push_down)) for _ in range(count))


@pytest.mark.parametrize("target", ["a", "e"])
@pytest.mark.parametrize("push_down", [True, False])
def test_a_burst_from_one_client_moves_an_accuracy_at_most_by_the_bound(
    target: str, push_down: bool
) -> None:
    settings_ = TrustSettings(enabled=True)  # max_client_share 0.05
    book = honest_book(settings_)
    before = book.view(KEY)
    assert before is not None
    assert before.members[target].learned
    bound = stated_bound(book)[target]
    accepted = attack(book, target, push_down, 10_000)
    after = book.view(KEY, refit=True)
    assert after is not None
    # The cap let only a few of the 10,000 crafted observations in: as many as take its
    # decayed mass to the cap, decay^t = 1 - max_client_share.
    assert accepted <= math.log(1 - settings_.max_client_share) / math.log(settings_.decay) + 1
    moved = after.members[target].accuracy - before.members[target].accuracy
    assert moved < 0 if push_down else moved > 0  # the attack does push
    assert abs(moved) <= bound
    assert bound < 0.1  # and the bound is a useful one
    if push_down:  # the worst pattern for these members: it gets near the bound
        assert abs(moved) > bound / 2
    # The weight a strategy would use (log-odds) moves at most by the bound times the
    # steepest slope of log(p / (1 - p)) between the two accuracies.
    p = before.members[target].accuracy
    slope = max(1 / (q * (1 - q)) for q in (p, p + moved))
    assert abs(log_odds(p + moved, 3) - log_odds(p, 3)) <= bound * slope


def test_without_the_cap_the_same_burst_moves_it_much_further() -> None:
    """The control: the cap is what bounds the attack (the test above can fail)."""
    capped = honest_book(TrustSettings(enabled=True))
    bound = stated_bound(capped)["a"]
    open_book = honest_book(TrustSettings(enabled=True, max_client_share=1.0))
    before = open_book.view(KEY)
    assert before is not None
    attack(open_book, "a", push_down=True, count=10_000)
    after = open_book.view(KEY, refit=True)
    assert after is not None
    assert before.members["a"].accuracy - after.members["a"].accuracy > 3 * bound


def test_the_bound_shrinks_as_honest_evidence_grows() -> None:
    small = TrustSettings(enabled=True, max_client_share=0.02)
    large = TrustSettings(enabled=True, max_client_share=0.1)
    assert stated_bound(honest_book(small))["a"] < stated_bound(honest_book(large))["a"]


def test_a_client_cannot_fake_a_correlated_pair_beyond_its_share() -> None:
    """Crafted prompts on which two members always agree: their observed agreement rises
    by at most the client's share, so the pair's kappa (and the vote discount) stays
    within that share."""
    book = honest_book(TrustSettings(enabled=True))
    for _ in range(10_000):
        fake = {m: i for i, m in enumerate(TRUTH)}  # everyone differs ...
        fake["e"] = fake["d"]  # ... but d and e agree
        book.observe(KEY, list(TRUTH), Observation(fake, client="attacker"))
    view = book.view(KEY, refit=True)
    assert view is not None
    pair = view.pair("d", "e")
    assert pair is not None
    assert pair.kappa <= view.client_share_bound + 0.05
