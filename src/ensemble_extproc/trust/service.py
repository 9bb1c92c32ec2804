"""The trust book at the edge: fed by the upstream, saved to and restored from disk.

``TrustService`` is what the upstream app holds. It turns each finished ensemble into an
observation for the book, restores this replica's snapshot (and reads its peers') at
start-up, saves every ``snapshot_interval_seconds`` and once more at shutdown. File I/O
runs in a worker thread so the event loop never waits on a disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..strategies.base import Candidate
from .book import TrustBook, ensemble_key, priors_from
from .feed import observation
from .model import TrustSettings
from .persist import Peers, Snapshot, SnapshotError, read, read_peers, snapshot_path, write_atomic
from .weights import WeightPlan, plan_weights

log = logging.getLogger(__name__)


def default_replica_id(port: int) -> str:
    """Host name and upstream port: distinct for the replicas of one machine (``run``),
    and for pods (their host names)."""
    return f"{socket.gethostname()}-{port}"


@dataclass(slots=True)
class PersistenceStatus:
    """What the operator report says about snapshots."""

    path: str | None = None
    restored: str | None = None  # what start-up restored from, or why nothing
    last_saved: float | None = None  # unix time
    last_error: str | None = None
    peers: dict[str, float] = field(default_factory=dict)  # replica -> written_at
    ignored: tuple[str, ...] = ()


class TrustService:
    def __init__(
        self,
        settings: TrustSettings,
        accuracies: Mapping[str, float | None],
        similarity: float,
        replica: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.replica = replica
        self.book = TrustBook(settings, priors_from(accuracies, settings))
        self.status = PersistenceStatus()
        self._similarity = similarity
        self._clock = clock
        self.accepted = 0
        self.refused = 0  # capped client, or fewer than two answers
        # Ensembles that may have stopped early, outside the sample (not learned from).
        self.not_sampled = 0
        if settings.snapshot_dir is not None:
            self.status.path = str(self._path)

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def _path(self) -> Path:
        assert self.settings.snapshot_dir is not None
        return snapshot_path(self.settings.snapshot_dir, self.replica)

    # ---------------------------------------------------------------- observing

    def observe(
        self,
        profile: str | None,
        models: Sequence[str],
        candidates: Sequence[Candidate],
        client: str,
        grouped: Sequence[Sequence[str]] | None = None,
    ) -> bool:
        """Feed one finished ensemble (every strategy; see trust.feed for what counts).
        ``grouped``: the strategy's groups of agreeing members, when it made them."""
        if not self.enabled:
            return False
        try:
            seen = observation(candidates, self._similarity, client, grouped)
            counted = self.book.observe(ensemble_key(profile, models), models, seen)
        except Exception:  # learning must never fail a request that was answered
            log.exception("trust: could not count an ensemble of %s", ",".join(models))
            counted = False
        if counted:
            self.accepted += 1
        else:
            self.refused += 1
        return counted

    def weights(
        self,
        profile: str | None,
        models: Sequence[str],
        configured: Mapping[str, float],
        *,
        learned: bool = True,
    ) -> WeightPlan:
        """The weights of one ensemble (``trust.weights.plan_weights``) from what its key
        learned so far: what a strategy's context carries. With learning off, or if
        reading the book fails (logged), the configured accuracies and independent
        members: a bug in learning never fails a request."""
        settings = self.settings
        view = None
        if self.enabled:
            try:
                view = self.book.view(ensemble_key(profile, models))
            except Exception:
                log.exception("trust: could not read the weights of %s", ",".join(models))
        return plan_weights(
            view,
            models,
            configured,
            learned=learned,
            correlation=settings.correlation,
            fixed_alternatives=settings.k,
        )

    # -------------------------------------------------------------- persistence

    async def restore(self) -> None:
        """Start-up: this replica's own snapshot, then the peers'. A missing or unusable
        snapshot is logged and the book starts empty: learning never blocks serving."""
        if self.settings.snapshot_dir is None:
            return
        path = self._path
        if path.exists():
            try:
                own = await asyncio.to_thread(read, path)
            except SnapshotError as exc:
                log.warning("trust: not restored: %s", exc)
                self.status.restored = f"nothing: {exc}"
            else:
                self.book.restore(own.keys)
                self.status.restored = f"{path} (written at {own.written_at:.0f})"
                log.info("trust: restored %d key(s) from %s", len(own.keys), path)
        else:
            self.status.restored = f"nothing: {path} does not exist yet"
        await self.load_peers()

    async def load_peers(self) -> None:
        if self.settings.snapshot_dir is None:
            return
        peers: Peers = await asyncio.to_thread(
            read_peers,
            Path(self.settings.snapshot_dir),
            self.replica,
            self._clock(),
            self.settings.peer_max_age_seconds,
        )
        for problem in peers.ignored:
            if problem not in self.status.ignored:
                log.warning("trust: peer snapshot ignored: %s", problem)
        self.status.ignored = peers.ignored
        self.status.peers = {name: s.written_at for name, s in peers.snapshots.items()}
        self.book.set_peers({name: s.keys for name, s in peers.snapshots.items()})

    async def save(self) -> None:
        if self.settings.snapshot_dir is None:
            return
        now = self._clock()
        snapshot = Snapshot(self.replica, now, self.book.own())
        try:
            await asyncio.to_thread(write_atomic, self._path, snapshot)
        except OSError as exc:
            self.status.last_error = f"cannot write {self._path}: {exc.strerror or exc}"
            log.error("trust: %s", self.status.last_error)
            return
        self.status.last_saved = now
        self.status.last_error = None

    async def _periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.snapshot_interval_seconds)
            await self.save()
            await self.load_peers()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Restore, save periodically while the app runs, save at the end."""
        if not self.enabled or self.settings.snapshot_dir is None:
            yield
            return
        await self.restore()
        task = asyncio.create_task(self._periodically())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await self.save()
