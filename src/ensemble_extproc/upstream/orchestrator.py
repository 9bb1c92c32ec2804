"""Runs a strategy's plan: all calls, deadlines and cancellation live here.

The plan (a generator, see ``strategies.base``) says what to call and when to stop; this
module turns that into tasks, enforces the per-call timeout and the overall deadline, and
records every call, finished or cancelled, for the response.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ..config import Endpoint, EnsembleSettings
from ..spec import EnsembleSpec
from ..strategies import STRATEGIES
from ..strategies.base import (
    Call,
    CancelRest,
    Candidate,
    Context,
    Failure,
    Launch,
    Plan,
    Progress,
    Role,
    Selection,
    Status,
    Step,
    Wait,
)
from ..trust.service import TrustService
from .client import EndpointClient
from .resilience import CircuitBreaker, endpoint_failed, retry_delay, retryable

log = logging.getLogger(__name__)

# A plan that keeps stepping after everything is over has a bug; stop it rather than spin.
MAX_STEPS = 10_000


@dataclass(frozen=True, slots=True)
class Outcome:
    spec: EnsembleSpec
    # Every call the request caused: members in the request's model order, then the others.
    candidates: tuple[Candidate, ...]
    selection: Selection | None
    deadline_exceeded: bool
    calls_started: int
    calls_cancelled: int
    # Learned trust may count it: every member was asked to the end (a sample), or the
    # strategy could not stop early.
    learning_sample: bool = True

    @property
    def members(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.role is Role.MEMBER)

    @property
    def valid(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.members if c.valid)


class Sink(Protocol):
    """Where relayed chunks go when the client streams (see ``stream_writer``)."""

    on_commit: Callable[[str], None] | None

    async def offer(self, model: str, chunk: Mapping[str, Any]) -> bool: ...


def call_body(
    request: Mapping[str, Any], call: Call, endpoint: Endpoint, streaming: bool
) -> dict[str, Any]:
    """The body sent to one endpoint: the client's, adjusted by the call."""
    body = dict(request)
    if call.messages is not None:
        body["messages"] = list(call.messages)
    for key, value in call.extra.items():
        if value is None:
            body.pop(key, None)  # None removes a field (e.g. tools for a judge)
        else:
            body[key] = value
    # Streaming is the orchestrator's choice, not the client's or the call's.
    body.pop("stream_options", None)
    if streaming:
        # Usage of relayed calls still counts: ask the endpoint to report it.
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    else:
        body.pop("stream", None)
    body["model"] = endpoint.upstream_model
    return body


class Fanout:
    """Runs ensembles for one upstream process; the semaphore caps its parallel model calls."""

    def __init__(
        self,
        endpoints: Mapping[str, Endpoint],
        settings: EnsembleSettings,
        client: EndpointClient,
        trust: TrustService | None = None,
    ) -> None:
        self._endpoints = endpoints
        self._settings = settings
        self._client = client
        # Learned trust: what each ensemble's weights are (None or disabled: configured).
        self._trust = trust if trust is not None and trust.enabled else None
        self._learned = settings.weighted.weights == "learned"
        self._slots = asyncio.Semaphore(settings.max_concurrent_requests)
        # Per-model facts the strategies read, derived once from config.
        self._weights = {name: e.weight for name, e in endpoints.items()}
        self._accuracies = {
            name: e.accuracy for name, e in endpoints.items() if e.accuracy is not None
        }
        self._rng = random.Random()
        # Per endpoint, per process: what each endpoint's recent failures say.
        breaker = settings.breaker
        self._breakers = (
            {name: CircuitBreaker(breaker) for name in endpoints} if breaker is not None else {}
        )

    def circuit_states(self) -> dict[str, str]:
        return {name: b.state.value for name, b in self._breakers.items()}

    def _sampled(self, spec: EnsembleSpec, ctx: Context) -> tuple[Context, bool]:
        """(the context, whether learning may count the ensemble): of the ensembles that
        may stop early, a random share (``trust.sample_share``) asks every member."""
        if self._trust is None or not STRATEGIES[spec.strategy].may_stop_early(ctx):
            return ctx, True
        if self._rng.random() < self._trust.settings.sample_share:
            return replace(ctx, complete=True), True
        return ctx, False

    def context(self, spec: EnsembleSpec, request: Mapping[str, Any]) -> Context:
        trust = self._trust
        plan = (
            trust.weights(spec.profile, spec.models, self._accuracies, learned=self._learned)
            if trust is not None
            else None
        )
        return Context(
            models=spec.models,
            min_responses=spec.min_responses,
            request=request,
            settings=self._settings,
            weights=self._weights,
            accuracies=self._accuracies,
            weight_plan=plan,
        )

    async def call(
        self,
        call: Call,
        request: Mapping[str, Any],
        sink: Sink | None = None,
        client_headers: Mapping[str, str] | None = None,
        deadline_seconds: float | None = None,
    ) -> Candidate:
        """One call, with the endpoint's retries, behind its circuit breaker."""
        breaker = self._breakers.get(call.model)
        if breaker is not None and not breaker.allow():
            error = (
                f"skipped: circuit open after repeated failures ({breaker.reopens_in():.0f} s left)"
            )
            return Candidate(call.model, Status.SKIPPED, role=call.role, error=error)
        try:
            candidate = await self._attempts(call, request, sink, client_headers, deadline_seconds)
        except asyncio.CancelledError:
            if breaker is not None:
                breaker.abandon()
            raise
        if breaker is not None:
            breaker.record(not endpoint_failed(candidate))
        return replace(candidate, role=call.role)

    async def _attempts(
        self,
        call: Call,
        request: Mapping[str, Any],
        sink: Sink | None,
        client_headers: Mapping[str, str] | None,
        deadline_seconds: float | None,
    ) -> Candidate:
        endpoint = self._endpoints[call.model]
        model_timeout = self._settings.model_timeout_seconds or self._settings.timeout_seconds
        # A per-call limit only when it is shorter than the ensemble's deadline; otherwise
        # the deadline (enforced by the run) decides, and says so (504).
        timeout = (
            model_timeout if deadline_seconds is None or model_timeout < deadline_seconds else None
        )
        relay = sink is not None and call.relay
        policy = endpoint.retry or self._settings.retry
        # A relayed stream is not retried: the client may already have part of it.
        attempts = 1 if relay else policy.attempts
        body = call_body(request, call, endpoint, streaming=relay)
        async with self._slots:
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                async with asyncio.timeout(timeout):
                    for attempt in range(1, attempts + 1):
                        if sink is not None and relay:
                            candidate = await self._client.stream(
                                endpoint,
                                body,
                                lambda chunk: sink.offer(call.model, chunk),
                                client_headers,
                            )
                        else:
                            candidate = await self._client.complete(endpoint, body, client_headers)
                        candidate = replace(candidate, attempts=attempt)
                        if attempt == attempts or not retryable(candidate):
                            break
                        delay = retry_delay(policy, attempt - 1, candidate.retry_after, self._rng)
                        if timeout is not None and loop.time() + delay >= started + timeout:
                            break  # no time left for another try: answer with this one
                        await asyncio.sleep(delay)
            except TimeoutError:
                latency = (loop.time() - started) * 1000
                error = f"no answer within model_timeout_seconds ({model_timeout:g} s)"
                candidate = Candidate(call.model, Status.TIMEOUT, latency_ms=latency, error=error)
            except Exception as exc:  # a bug in a client must not take the ensemble down
                log.exception("endpoint client failed on %s", call.model)
                error = f"internal error: {type(exc).__name__}"
                candidate = Candidate(
                    call.model, Status.ERROR, error=error, failure=Failure.INTERNAL
                )
        return candidate

    async def run(
        self,
        spec: EnsembleSpec,
        request: Mapping[str, Any],
        sink: Sink | None = None,
        client_headers: Mapping[str, str] | None = None,
    ) -> Outcome:
        ctx, sample = self._sampled(spec, self.context(spec, request))
        plan = STRATEGIES[spec.strategy].plan(ctx)
        rank = {name: i for i, name in enumerate(spec.models)}
        timeout = spec.timeout_seconds or self._settings.timeout_seconds
        run = _Run(self, request, timeout, rank, sink, client_headers)
        selection = await run.drive(plan)
        candidates = sorted(
            run.finished + run.stopped,
            key=lambda c: (c.role is not Role.MEMBER, rank.get(c.model, len(rank)), c.order),
        )
        return Outcome(
            spec=spec,
            candidates=tuple(candidates),
            selection=selection,
            deadline_exceeded=run.deadline_passed,
            calls_started=run.started,
            calls_cancelled=sum(c.status is Status.CANCELLED for c in run.stopped),
            learning_sample=sample,
        )


def stop_reason(selection: Selection | None) -> str:
    """Why the calls still running when a plan ends are cancelled: the plan either chose an
    answer, or gave up because the quorum became impossible (members failed, or were
    skipped by an open circuit), and the others' answers could not change that."""
    if selection is not None:
        return "the ensemble had its answer"
    return "the quorum could no longer be met"


class _Run:
    """The state of one ensemble request while its plan runs."""

    def __init__(
        self,
        fanout: Fanout,
        request: Mapping[str, Any],
        timeout_seconds: float,
        rank: Mapping[str, int],
        sink: Sink | None,
        client_headers: Mapping[str, str] | None,
    ) -> None:
        self._fanout = fanout
        self._request = request
        self._sink = sink
        self._client_headers = client_headers
        if sink is not None:
            sink.on_commit = self._cancel_other_relays
        self._timeout_seconds = timeout_seconds
        self._rank = rank
        self._running: dict[asyncio.Task[Candidate], Call] = {}
        self._loop = asyncio.get_running_loop()
        self._started_at = self._loop.time()
        self._deadline = self._started_at + timeout_seconds
        self.finished: list[Candidate] = []
        self.stopped: list[Candidate] = []  # cancelled, or cut off by the deadline
        self.started = 0
        self.deadline_passed = False

    def _progress(self) -> Progress:
        running = tuple(sorted(self._running.values(), key=lambda c: self._rank.get(c.model, 0)))
        return Progress(tuple(self.finished), running, self.deadline_passed)

    async def drive(self, plan: Plan) -> Selection | None:
        # What the calls still running are told when the plan ends (the request itself
        # may also end first: the client went away, or a bug).
        reason = "the request ended before the ensemble did"
        try:
            step = next(plan)
            for _ in range(MAX_STEPS):
                step = plan.send(await self._do(step))
            raise RuntimeError(f"strategy plan did not finish in {MAX_STEPS} steps")
        except StopIteration as done:
            result: Selection | None = done.value
            reason = stop_reason(result)
            return result
        finally:
            plan.close()
            await self._stop_running(Status.CANCELLED, f"cancelled: {reason}")

    async def _do(self, step: Step) -> Progress:
        match step:
            case Launch(calls):
                for call in calls:
                    self._launch(call)
            case Wait(seconds):
                await self._wait(seconds)
            case CancelRest(reason):
                await self._stop_running(Status.CANCELLED, f"cancelled: {reason}")
        return self._progress()

    def _launch(self, call: Call) -> None:
        if self.deadline_passed:
            error = "ensemble deadline passed before the call"
            self.stopped.append(Candidate(call.model, Status.TIMEOUT, role=call.role, error=error))
            return
        task = asyncio.create_task(
            self._fanout.call(
                call, self._request, self._sink, self._client_headers, self._timeout_seconds
            )
        )
        self._running[task] = call
        self.started += 1

    async def _wait(self, seconds: float | None) -> None:
        if not self._running:
            return
        remaining = self._deadline - self._loop.time()
        timeout = remaining if seconds is None else min(seconds, remaining)
        done, _ = await asyncio.wait(
            self._running, timeout=max(timeout, 0), return_when=asyncio.FIRST_COMPLETED
        )
        # Calls that finished together are recorded in the request's model order.
        for task in sorted(done, key=lambda t: self._rank.get(self._running[t].model, 0)):
            call = self._running.pop(task)
            if task.cancelled():  # a relay that lost the race (see _cancel_other_relays)
                reason = "cancelled: another model streamed first"
                self.stopped.append(
                    Candidate(call.model, Status.CANCELLED, role=call.role, error=reason)
                )
            else:
                self.finished.append(replace(task.result(), order=len(self.finished)))
        if not done and self._loop.time() >= self._deadline:
            self.deadline_passed = True
            reason = f"ensemble deadline of {self._timeout_seconds:g} s passed"
            await self._stop_running(Status.TIMEOUT, reason)

    def _cancel_other_relays(self, committed: str) -> None:
        """The client is being sent ``committed``'s stream: the other relays are moot."""
        for task, call in self._running.items():
            if call.relay and call.model != committed:
                task.cancel("cancelled: another model streamed first")

    async def _stop_running(self, status: Status, reason: str) -> None:
        if not self._running:
            return
        running, self._running = self._running, {}
        for task in running:
            task.cancel(reason)  # the call's CancelledError says why (upstream.tracing)
        await asyncio.gather(*running, return_exceptions=True)
        elapsed_ms = (self._loop.time() - self._started_at) * 1000
        for task, call in running.items():
            if task.cancelled():
                self.stopped.append(
                    Candidate(
                        call.model, status, role=call.role, latency_ms=elapsed_ms, error=reason
                    )
                )
            else:  # finished in the meantime: keep its answer
                self.finished.append(replace(task.result(), order=len(self.finished)))
