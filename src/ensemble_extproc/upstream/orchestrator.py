"""Runs a strategy's plan: all calls, deadlines, cancellation and the cost cap live here.

The plan (a generator, see ``strategies.base``) says what to call and when to stop; this
module turns that into tasks, enforces the per-call timeout, the overall deadline and the
cost cap (``budget``), resumes a relayed stream that broke (``resume``), and records
every call, finished, cancelled or not started, for the response.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..config import Endpoint, EnsembleSettings
from ..continuation import Style, continuation_body
from ..cost.account import CostSummary, call_cost, summary
from ..cost.estimate import call_estimate
from ..cost.model import CallCost
from ..spec import EnsembleSpec
from ..strategies import STRATEGIES
from ..strategies.base import (
    Call,
    CancelRest,
    Candidate,
    Context,
    Continuation,
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
from .budget import Budget
from .client import EndpointClient, Offer
from .resilience import CircuitBreaker, endpoint_failed, retry_delay, retryable
from .resume import Resume, counted_usage, joined, next_resumer, resumable

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
    # Breaks of the relayed stream, in order, and what became of each.
    resumes: tuple[Resume, ...] = ()
    # What the calls cost, summed once: the headers, the ensemble object and the log
    # line read it.
    cost: CostSummary = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cost", summary(self.candidates, self.spec.max_cost_usd))

    @property
    def members(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.candidates if c.role is Role.MEMBER)

    @property
    def result(self) -> str:
        """How it ended, as metrics and traces label it."""
        if self.selection is not None:
            return "ok"
        return "deadline_exceeded" if self.deadline_exceeded else "quorum_not_met"

    @property
    def valid(self) -> tuple[Candidate, ...]:
        return tuple(c for c in self.members if c.valid)


@dataclass(frozen=True, slots=True)
class Asked:
    """What each call of one ensemble is made with: the client's body, the client's
    headers it may carry (``client.forwardable``), and the ensemble's deadline."""

    request: Mapping[str, Any]
    client_headers: Mapping[str, str] | None
    deadline_seconds: float


@dataclass(frozen=True, slots=True)
class Relay:
    """One relayed call: its model, and its number among the ensemble's calls (a model may
    be called twice: a hedge, then the continuation of a broken stream)."""

    model: str
    serial: int = 0


class Sink(Protocol):
    """Where relayed chunks go when the client streams (see ``stream_writer``)."""

    on_commit: Callable[[Relay], None] | None
    # The relay whose chunks the client is being sent.
    committed: Relay | None

    async def offer(self, relay: Relay, chunk: Mapping[str, Any]) -> bool: ...

    def partial(self) -> Continuation | None:
        """What the client has of the answer, when it can be continued (text, no tool call,
        no finish_reason yet)."""
        ...

    def resume(self, relay: Relay) -> None:
        """Relay ``relay``'s continuation of the answer from now on."""
        ...


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
    if call.continues is not None and endpoint.continuation is not None:
        body = continuation_body(
            body, call.continues.text, call.continues.tokens, endpoint.continuation
        )
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

    def continuation(self, model: str) -> Style | None:
        return self._endpoints[model].continuation

    def cost(self, candidate: Candidate) -> CallCost:
        """What the call cost, at its model's price."""
        return call_cost(candidate, self._endpoints[candidate.model].price)

    def priced(self, candidate: Candidate) -> Candidate:
        """The candidate with what it cost."""
        return replace(candidate, cost=self.cost(candidate))

    def _sampled(self, spec: EnsembleSpec, ctx: Context) -> tuple[Context, bool]:
        """(the context, whether learning may count the ensemble): of the ensembles that
        may stop early, a random share (``trust.sample_share``) asks every member. Not
        under a cost cap: a sample's extra calls are not the client's to pay for."""
        if self._trust is None or not STRATEGIES[spec.strategy].may_stop_early(ctx):
            return ctx, True
        if spec.max_cost_usd is None and self._rng.random() < self._trust.settings.sample_share:
            return replace(ctx, complete=True), True
        return ctx, False

    def budget(
        self, spec: EnsembleSpec, request: Mapping[str, Any], streaming: bool
    ) -> Budget | None:
        """The ensemble's cost cap, if it has one: each call estimated from the body it
        would send."""
        if spec.max_cost_usd is None:
            return None
        endpoints, settings = self._endpoints, self._settings.cost_estimate

        def estimate(call: Call) -> float:
            endpoint = endpoints[call.model]
            body = call_body(request, call, endpoint, streaming=streaming and call.relay)
            return call_estimate(body, endpoint.price, settings)

        return Budget(spec.max_cost_usd, estimate)

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

    async def call(self, call: Call, asked: Asked, offer: Offer | None = None) -> Candidate:
        """One call, with the endpoint's retries, behind its circuit breaker; streamed to
        ``offer`` when it is relayed."""
        breaker = self._breakers.get(call.model)
        if breaker is not None and not breaker.allow():
            error = (
                f"skipped: circuit open after repeated failures ({breaker.reopens_in():.0f} s left)"
            )
            return Candidate(call.model, Status.SKIPPED, role=call.role, error=error, sent=False)
        try:
            candidate = await self._attempts(call, asked, offer)
        except asyncio.CancelledError:
            if breaker is not None:
                breaker.abandon()
            raise
        if breaker is not None:
            breaker.record(not endpoint_failed(candidate))
        # A dataclass replace costs microseconds per call: only when something changes.
        return candidate if candidate.role is call.role else replace(candidate, role=call.role)

    async def _attempts(self, call: Call, asked: Asked, offer: Offer | None) -> Candidate:
        endpoint = self._endpoints[call.model]
        model_timeout = self._settings.model_timeout_seconds or self._settings.timeout_seconds
        # A per-call limit only when it is shorter than the ensemble's deadline; otherwise
        # the deadline (enforced by the run) decides, and says so (504).
        timeout = model_timeout if model_timeout < asked.deadline_seconds else None
        policy = endpoint.retry or self._settings.retry
        # A relayed stream is not retried: the client may already have part of it.
        attempts = 1 if offer is not None else policy.attempts
        body = call_body(asked.request, call, endpoint, streaming=offer is not None)
        async with self._slots:
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                async with asyncio.timeout(timeout):
                    for attempt in range(1, attempts + 1):
                        candidate = await self._client.complete(
                            endpoint, body, asked.client_headers, offer
                        )
                        if candidate.attempts != attempt:
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
        budget = self.budget(spec, request, streaming=sink is not None)
        run = _Run(self, Asked(request, client_headers, timeout), rank, sink, budget)
        selection = await run.drive(plan)
        # Finished calls were priced when they were recorded.
        calls = run.finished + [self.priced(c) for c in run.stopped + run.broken_calls()]
        candidates = sorted(
            calls,
            key=lambda c: (c.role is not Role.MEMBER, rank.get(c.model, len(rank)), c.order),
        )
        return Outcome(
            spec=spec,
            candidates=tuple(candidates),
            selection=selection,
            deadline_exceeded=run.deadline_passed,
            calls_started=run.started,
            calls_cancelled=sum(c.status is Status.CANCELLED for c in run.stopped),
            # A resumed answer is no one member's: nothing to learn from.
            learning_sample=sample and not run.resumes,
            resumes=tuple(run.resumes),
        )


def stop_reason(selection: Selection | None) -> str:
    """Why the calls still running when a plan ends are cancelled: the plan either chose an
    answer, or gave up because the quorum became impossible (members failed, or were
    skipped by an open circuit), and the others' answers could not change that."""
    if selection is not None:
        return "the ensemble had its answer"
    return "the quorum could no longer be met"


@dataclass(slots=True)
class _Running:
    """A call in flight: what it was asked, its relay, its estimated cost."""

    call: Call
    relay: Relay
    estimate: float


class _Run:
    """The state of one ensemble request while its plan runs."""

    def __init__(
        self,
        fanout: Fanout,
        asked: Asked,
        rank: Mapping[str, int],
        sink: Sink | None,
        budget: Budget | None = None,
    ) -> None:
        self._fanout = fanout
        self._asked = asked
        self._sink = sink
        if sink is not None:
            sink.on_commit = self._cancel_other_relays
        self._timeout_seconds = timeout_seconds = asked.deadline_seconds
        self._rank = rank
        self._budget = budget
        self._running: dict[asyncio.Task[Candidate], _Running] = {}
        self._loop = asyncio.get_running_loop()
        self._started_at = self._loop.time()
        self._deadline = self._started_at + timeout_seconds
        self.finished: list[Candidate] = []
        self.stopped: list[Candidate] = []  # cancelled, or cut off by the deadline
        self.started = 0
        self.deadline_passed = False
        # The cost cap's account: finished calls' known costs, else their estimates.
        self._spent = 0.0
        # Broken relayed calls that were resumed (each with the chunks it relayed), the
        # breaks, the models that failed, and the last continuation that finished.
        self._broken: list[tuple[Candidate, int]] = []
        self.resumes: list[Resume] = []
        self._failed: set[str] = set()
        self._last_continuation: Candidate | None = None

    def _progress(self) -> Progress:
        running = tuple(
            sorted(
                (r.call for r in self._running.values()), key=lambda c: self._rank.get(c.model, 0)
            )
        )
        return Progress(tuple(self.finished), running, self.deadline_passed)

    def broken_calls(self) -> list[Candidate]:
        """The broken calls that were resumed, with the usage they are counted."""
        return counted_usage(self._broken, self._last_continuation)

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
            await self._settle()
            return result
        finally:
            plan.close()
            await self._stop_running(Status.CANCELLED, f"cancelled: {reason}")

    async def _do(self, step: Step) -> Progress:
        match step:
            case Launch(calls):
                first = self._budget is not None and not (self.started or self.finished)
                if first and self._budget is not None:
                    # Calls a plan starts before any other must fit together (else 400).
                    self._budget.check_first(calls)
                for call in calls:
                    self._launch(call)
            case Wait(seconds):
                await self._wait(seconds)
            case CancelRest(reason):
                await self._settle()
                await self._stop_running(Status.CANCELLED, f"cancelled: {reason}")
        return self._progress()

    def _committed(self) -> float:
        return self._spent + sum(r.estimate for r in self._running.values())

    def _launch(self, call: Call) -> bool:
        """Start a call, if the deadline and the cost cap allow it (else its candidate
        says why)."""
        if self.deadline_passed:
            error = "ensemble deadline passed before the call"
            self.stopped.append(
                Candidate(call.model, Status.TIMEOUT, role=call.role, error=error, sent=False)
            )
            return False
        estimate = 0.0
        if self._budget is not None:
            estimate = self._budget.estimate(call)
            committed = self._committed()
            if not self._budget.fits(estimate, committed):
                refused = self._budget.refused(call, estimate, committed)
                self._keep(refused, self._fanout.cost(refused))
                return False
        relay = Relay(call.model, self.started)
        sink = self._sink
        offer = functools.partial(sink.offer, relay) if sink is not None and call.relay else None
        task = asyncio.create_task(self._fanout.call(call, self._asked, offer))
        self._running[task] = _Running(call, relay, estimate)
        self.started += 1
        if call.continues is not None and sink is not None:
            sink.resume(relay)
        return True

    def _spend(self, candidate: Candidate, estimate: float) -> CallCost:
        """Account a call that ended: its cost when known, else what it was estimated at."""
        cost = self._fanout.cost(candidate)
        self._spent += cost.usd if cost.usd is not None else estimate
        return cost

    def _keep(self, candidate: Candidate, cost: CallCost) -> None:
        """A call among the finished, in completion order, with its cost (set once: each
        copy of a candidate costs microseconds)."""
        self.finished.append(replace(candidate, order=len(self.finished), cost=cost))

    async def _wait(self, seconds: float | None) -> None:
        until = (
            self._deadline if seconds is None else min(self._loop.time() + seconds, self._deadline)
        )
        while self._running:
            done, _ = await asyncio.wait(
                self._running,
                timeout=max(until - self._loop.time(), 0),
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:
                if self._loop.time() >= self._deadline:
                    self.deadline_passed = True
                    reason = f"ensemble deadline of {self._timeout_seconds:g} s passed"
                    await self._stop_running(Status.TIMEOUT, reason)
                return
            # Calls that finished together are recorded in the request's model order.
            ordered = sorted(done, key=lambda t: self._rank.get(self._running[t].call.model, 0))
            recorded = [self._finish(task) for task in ordered]
            if any(recorded):
                return
            # Only a broken stream, resumed: the plan has nothing new to see yet.

    def _finish(self, task: asyncio.Task[Candidate]) -> bool:
        """Record a call that ended; False when it was a broken stream, resumed."""
        running = self._running.pop(task)
        call = running.call
        if task.cancelled():  # a relay that lost the race (see _cancel_other_relays)
            reason = "cancelled: another model streamed first"
            self.stopped.append(
                Candidate(call.model, Status.CANCELLED, role=call.role, error=reason)
            )
            self._spent += running.estimate
            return True
        candidate = task.result()
        if call.continues is not None:
            candidate = joined(candidate, call.continues)
        cost = self._spend(candidate, running.estimate)
        if self._resume(running, candidate):
            return False
        if not candidate.valid:
            self._failed.add(candidate.model)
        elif call.continues is not None:
            self._last_continuation = candidate
        self._keep(candidate, cost)
        return True

    def _resume(self, running: _Running, candidate: Candidate) -> bool:
        """Continue the client's stream on another model, if the call that broke was the
        one being relayed and the answer so far can be continued (upstream.resume)."""
        sink = self._sink
        if sink is None or sink.committed != running.relay or not resumable(candidate):
            return False
        partial = sink.partial()
        if partial is None:
            return False  # a tool call, or a finished answer: today's error event
        self._failed.add(candidate.model)
        before = running.call.continues.tokens if running.call.continues is not None else 0
        chunks = partial.tokens - before
        why = candidate.error or candidate.invalid_reason
        model = next_resumer(list(self._rank), self._failed, self._fanout.continuation)
        if model is None:
            return self._not_resumed(
                candidate, chunks, partial, why, "no other model can continue it"
            )
        call = replace(running.call, model=model, continues=partial)
        if self._budget is not None:
            estimate = self._budget.estimate(call)
            if not self._budget.fits(estimate, self._committed()):
                return self._not_resumed(
                    candidate,
                    chunks,
                    partial,
                    why,
                    f"{model}'s continuation would pass the cost cap",
                )
        if self.deadline_passed or not self._launch(call):
            return self._not_resumed(candidate, chunks, partial, why, "the deadline passed")
        self.resumes.append(Resume(candidate.model, model, chunks, len(partial.text), why))
        error = f"{why}; the stream broke after {chunks} chunks and was resumed on {model}"
        self._broken.append((replace(candidate, error=error), chunks))
        return True

    def _not_resumed(
        self, candidate: Candidate, chunks: int, partial: Continuation, why: str, because: str
    ) -> bool:
        self.resumes.append(
            Resume(
                candidate.model, None, chunks, len(partial.text), f"{why}; not resumed: {because}"
            )
        )
        return False

    def _cancel_other_relays(self, committed: Relay) -> None:
        """The client is being sent ``committed``'s stream: the other relays are moot."""
        for task, running in self._running.items():
            if running.call.relay and running.relay != committed:
                task.cancel("cancelled: another model streamed first")

    async def _settle(self) -> None:
        """Before the calls still running are cancelled, one turn of the event loop lets
        those whose answers have already arrived finish: cancelling one would throw away an
        answer that was paid for, and close its pooled HTTP/1.1 connection, which the next
        ensemble would open again. Calls still waiting for their model are cancelled as
        before (that stops the generation at vLLM-style servers); so are relayed streams."""
        if self._running and self._sink is None:
            await asyncio.sleep(0)

    async def _stop_running(self, status: Status, reason: str) -> None:
        if not self._running:
            return
        running, self._running = self._running, {}
        for task in running:
            task.cancel(reason)  # the call's CancelledError says why (upstream.tracing)
        await asyncio.gather(*running, return_exceptions=True)
        elapsed_ms = (self._loop.time() - self._started_at) * 1000
        for task, entry in running.items():
            call = entry.call
            if task.cancelled():
                self.stopped.append(
                    Candidate(
                        call.model, status, role=call.role, latency_ms=elapsed_ms, error=reason
                    )
                )
                self._spent += entry.estimate
            else:  # finished in the meantime: keep its answer
                candidate = task.result()
                if call.continues is not None:
                    candidate = joined(candidate, call.continues)
                self._keep(candidate, self._spend(candidate, entry.estimate))
