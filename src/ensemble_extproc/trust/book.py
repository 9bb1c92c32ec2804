"""The trust book: one upstream process's learned trust, per key.

It owns the live statistics of every key this process has seen (bounded: ``max_keys``,
least recently observed evicted), the latest statistics of its peers (other replicas'
snapshots), and a cached fit per key, refitted after ``refit_every`` new observations.
It does no I/O: the service (``trust.service``) saves and loads snapshots.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .fit import Fit, Prior, fit
from .model import Observation, Source, TrustSettings, TrustView
from .stats import KeyStats, Totals

log = logging.getLogger(__name__)


def set_key(models: Iterable[str]) -> str:
    """The key of an ensemble named by its models rather than a profile."""
    return "models:" + ",".join(sorted(models))


def ensemble_key(profile: str | None, models: Iterable[str]) -> str:
    """Per profile when a profile decided (its traffic is one kind of question), else per
    set of models."""
    return f"profile:{profile}" if profile else set_key(models)


def priors_from(
    accuracies: Mapping[str, float | None], settings: TrustSettings
) -> dict[str, Prior]:
    """Configured accuracies are the priors; others get ``default_accuracy``."""
    return {
        model: Prior(accuracy, Source.CONFIGURED)
        if accuracy is not None
        else Prior(settings.default_accuracy, Source.DEFAULT)
        for model, accuracy in accuracies.items()
    }


@dataclass(slots=True)
class _Cached:
    fit: Fit
    observations: int  # own + peers' observations it was fitted on
    peers_version: int


class TrustBook:
    def __init__(self, settings: TrustSettings, priors: Mapping[str, Prior]) -> None:
        self.settings = settings
        self._priors = dict(priors)
        self._keys: OrderedDict[str, KeyStats] = OrderedDict()
        self._fits: dict[str, _Cached] = {}
        # Replica name -> key -> statistics, from the peers' latest snapshots.
        self._peers: dict[str, Mapping[str, Totals]] = {}
        self._peers_version = 0
        # What every key's live statistics are made with (decay, client cap, change detection).
        self._stats_settings = (
            settings.decay,
            settings.client_cap,
            settings.change_threshold or None,
        )

    # ------------------------------------------------------------------ writing

    def observe(self, key: str, members: Sequence[str], observation: Observation) -> bool:
        """Count one ensemble of ``key``; False when refused (the client is at its cap, or
        fewer than two members answered: no agreement to learn from)."""
        if len(observation.answers) < 2:
            return False
        stats = self._stats(key, members)
        return stats.add(observation, self.settings.max_clients)

    def _stats(self, key: str, members: Sequence[str]) -> KeyStats:
        stats = self._keys.get(key)
        if stats is None or set(stats.members) != set(members):
            if stats is not None:
                log.warning("trust key %s changed members: its statistics start over", key)
            stats = KeyStats(members, *self._stats_settings)
            self._keys[key] = stats
            self._fits.pop(key, None)
            while len(self._keys) > self.settings.max_keys:
                evicted, _ = self._keys.popitem(last=False)
                self._fits.pop(evicted, None)
        self._keys.move_to_end(key)
        return stats

    def restore(self, saved: Mapping[str, Totals]) -> None:
        """Continue from this replica's own snapshot (start-up)."""
        for key, totals in saved.items():
            members = [m for m in totals.members if m in self._priors]
            if len(members) < 2:
                continue  # its models are no longer configured
            restricted = totals.restricted(members)
            self._keys[key] = KeyStats.from_totals(restricted, *self._stats_settings)
            self._fits.pop(key, None)
        while len(self._keys) > self.settings.max_keys:
            self._keys.popitem(last=False)

    def set_peers(self, peers: Mapping[str, Mapping[str, Totals]]) -> None:
        """Replace what the peers know (their latest snapshots)."""
        self._peers = dict(peers)
        self._peers_version += 1

    # ------------------------------------------------------------------ reading

    def own(self) -> dict[str, Totals]:
        """This replica's statistics (what its snapshot holds: never the peers')."""
        return {key: stats.totals() for key, stats in self._keys.items()}

    def keys(self) -> list[str]:
        known = dict.fromkeys(self._keys)
        for saved in self._peers.values():
            known.update(dict.fromkeys(saved))
        return list(known)

    def totals(self, key: str) -> Totals | None:
        """Own and peers' statistics of ``key``, merged; None if nobody has any."""
        parts: list[Totals] = []
        stats = self._keys.get(key)
        if stats is not None:
            parts.append(stats.totals())
        for saved in self._peers.values():
            peer = saved.get(key)
            if peer is not None:
                parts.append(peer.restricted(m for m in peer.members if m in self._priors))
        if not parts:
            return None
        merged = parts[0]
        for part in parts[1:]:
            merged = merged.merged(part)
        return merged if len(merged.members) >= 2 else None

    def sources(self, key: str) -> int:
        """How many replicas (this one included) contribute statistics to ``key``."""
        own = 1 if key in self._keys else 0
        return own + sum(1 for saved in self._peers.values() if key in saved)

    def view(self, key: str, refit: bool = False) -> TrustView | None:
        """The current estimate of ``key`` (refitted when due, or now with ``refit``); None
        if nothing is known."""
        cached = self._fits.get(key)
        observations = self._observations(key)
        if (
            not refit
            and cached is not None
            and cached.peers_version == self._peers_version
            and observations - cached.observations < self.settings.refit_every
        ):
            return cached.fit.view
        totals = self.totals(key)
        if totals is None:
            return None
        priors = {m: self._priors[m] for m in totals.members}
        start = cached.fit if cached is not None else None
        result = fit(totals, priors, self.settings, key=key, start=start)
        self._fits[key] = _Cached(result, observations, self._peers_version)
        return result.view

    def fitted(self, key: str) -> Fit | None:
        """The fit behind ``view(key)`` (for the influence bound)."""
        if self.view(key) is None:
            return None
        cached = self._fits.get(key)
        return cached.fit if cached is not None else None

    def views(self, refit: bool = False) -> list[TrustView]:
        return [view for key in self.keys() if (view := self.view(key, refit)) is not None]

    def _observations(self, key: str) -> int:
        stats = self._keys.get(key)
        own = stats.observations if stats is not None else 0
        return own + sum(saved[key].observations for saved in self._peers.values() if key in saved)
