"""Fan-out: call the spec's models in parallel, stop as soon as the strategy has enough.

All I/O, deadlines and cancellation live here; strategies only look at candidates.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..config import Endpoint, EnsembleSettings
from ..spec import EnsembleSpec
from ..strategies import STRATEGIES, Candidate, Selection, Status
from .client import EndpointClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    spec: EnsembleSpec
    # One per requested model, in the request's model order.
    candidates: tuple[Candidate, ...]
    selection: Selection | None
    deadline_exceeded: bool

    @property
    def valid(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.valid)


class Fanout:
    """Runs ensembles for one upstream process; the semaphore caps its parallel model calls."""

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        settings: EnsembleSettings,
        client: EndpointClient,
    ) -> None:
        self._endpoints = endpoints
        self._settings = settings
        self._client = client
        self._slots = asyncio.Semaphore(settings.max_concurrent_requests)

    async def _call(self, name: str, body: Mapping[str, Any]) -> Candidate:
        # The overall deadline is enforced by ``run``, which cancels what is still running.
        timeout = self._settings.model_timeout_seconds
        async with self._slots:
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                async with asyncio.timeout(timeout):
                    return await self._client.complete(self._endpoints[name], body)
            except TimeoutError:
                latency = (loop.time() - started) * 1000
                error = f"no answer within model_timeout_seconds ({timeout:g} s)"
                return Candidate(name, Status.TIMEOUT, latency_ms=latency, error=error)
            except Exception as exc:  # a bug in a client must not take the ensemble down
                log.exception("endpoint client failed on %s", name)
                return Candidate(name, Status.ERROR, error=f"internal error: {type(exc).__name__}")

    async def run(self, spec: EnsembleSpec, body: Mapping[str, Any]) -> Outcome:
        strategy = STRATEGIES[spec.strategy]
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._settings.timeout_seconds
        rank = {name: i for i, name in enumerate(spec.models)}
        tasks = {
            asyncio.create_task(self._call(name, body), name=f"ensemble:{name}"): name
            for name in spec.models
        }
        pending = set(tasks)
        finished: list[Candidate] = []
        deadline_exceeded = False
        cancel_reason = "cancelled: the ensemble had its answer"
        try:
            while pending:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    deadline_exceeded = True
                    break
                done, pending = await asyncio.wait(
                    pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                for task in sorted(done, key=lambda t: rank[tasks[t]]):
                    finished.append(replace(task.result(), order=len(finished)))
                valid = [c for c in finished if c.valid]
                if len(valid) >= spec.min_responses and strategy.enough(valid, len(pending)):
                    break
                if len(valid) + len(pending) < spec.min_responses:
                    cancel_reason = "cancelled: the quorum could no longer be met"
                    break  # answer now rather than wait for calls that cannot help
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

        elapsed_ms = (loop.time() - started) * 1000
        unfinished_status = Status.TIMEOUT if deadline_exceeded else Status.CANCELLED
        unfinished_error = (
            f"ensemble deadline of {self._settings.timeout_seconds:g} s passed"
            if deadline_exceeded
            else cancel_reason
        )
        candidates = finished + [
            Candidate(tasks[t], unfinished_status, latency_ms=elapsed_ms, error=unfinished_error)
            for t in pending
        ]
        candidates.sort(key=lambda c: rank[c.model])
        valid = [c for c in finished if c.valid]
        selection = (
            strategy.select(sorted(valid, key=lambda c: c.order), spec.models)
            if len(valid) >= spec.min_responses
            else None
        )
        return Outcome(spec, tuple(candidates), selection, deadline_exceeded)
