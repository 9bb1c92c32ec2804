"""A deterministic, virtual-time driver of strategy plans, for table tests.

Each model is scripted with a latency and an answer; the simulator plays the part of the
orchestrator (Launch, Wait, CancelRest) without I/O or real time. With a ``Budget`` it
keeps the cost cap as the orchestrator does (the orchestrator's own ``Budget``): the first
launch must fit, a later call that does not fit is not started (``over_budget``), and a
call counts its scripted cost once it finished, its estimate until then.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec

from ensemble_extproc.strategies import STRATEGIES, Candidate, Context, Status, StrategySettings
from ensemble_extproc.strategies.base import (
    Call,
    CancelRest,
    Launch,
    Plan,
    Progress,
    Role,
    Selection,
    Wait,
)
from ensemble_extproc.trust.weights import WeightPlan
from ensemble_extproc.upstream.budget import Budget


@dataclass(frozen=True)
class Reply:
    """A scripted answer: text (None: the call fails), latency, optional confidence."""

    text: str | None
    ms: float = 10.0
    confidence: float | None = None
    finish_reason: str = "stop"
    # What the call cost once finished (None: its estimate).
    usd: float | None = None


def candidate(model: str, reply: Reply, role: Role = Role.MEMBER) -> Candidate:
    if reply.text is None:
        return Candidate(model, Status.ERROR, latency_ms=reply.ms, error="HTTP 500", role=role)
    return Candidate(
        model,
        Status.OK,
        message={"role": "assistant", "content": reply.text},
        finish_reason=reply.finish_reason,
        latency_ms=reply.ms,
        role=role,
        mean_logprob=math.log(reply.confidence) if reply.confidence is not None else None,
    )


@dataclass
class Trace:
    selection: Selection | None
    launched: list[Call] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    finished: list[Candidate] = field(default_factory=list)
    # Calls the cost cap kept from starting; what the calls cost (or were estimated at).
    refused: list[str] = field(default_factory=list)
    spent: float = 0.0

    @property
    def launched_models(self) -> list[str]:
        return [c.model for c in self.launched]


def context(
    models: Sequence[str],
    min_responses: int = 1,
    request: Mapping[str, Any] | None = None,
    weights: Mapping[str, float] | None = None,
    accuracies: Mapping[str, float] | None = None,
    weight_plan: WeightPlan | None = None,
    complete: bool = False,
    **settings: Any,
) -> Context:
    return Context(
        models=tuple(models),
        min_responses=min_responses,
        request=request or {"messages": [{"role": "user", "content": "What is 6 x 7?"}]},
        settings=msgspec.convert(settings, StrategySettings),
        weights=weights or {},
        accuracies=accuracies or {},
        weight_plan=weight_plan,
        complete=complete,
    )


def simulate(
    strategy: str,
    ctx: Context,
    replies: Mapping[str, Reply],
    helpers: Mapping[str, Reply] | None = None,
    deadline_ms: float = 10_000,
    budget: Budget | None = None,
) -> Trace:
    """Drive the plan; ``helpers`` script judge/aggregator replies by model name."""
    plan: Plan = STRATEGIES[strategy].plan(ctx)
    trace = Trace(None)
    now = 0.0
    # (finish time, launch index, call, estimated cost)
    running: list[tuple[float, int, Call, float]] = []
    finished: list[Candidate] = []
    deadline_passed = False

    def progress() -> Progress:
        calls = tuple(r[2] for r in sorted(running, key=lambda r: (r[0], r[1])))
        return Progress(tuple(finished), calls, deadline_passed)

    def committed() -> float:
        return trace.spent + sum(r[3] for r in running)

    def launch(call: Call) -> None:
        estimate = budget.estimate(call) if budget is not None else 0.0
        if budget is not None and not budget.fits(estimate, committed()):
            refused = budget.refused(call, estimate, committed())
            finished.append(replace(refused, order=len(finished)))
            trace.refused.append(call.model)
            return
        trace.launched.append(call)
        running.append((now + reply_for(call).ms, len(trace.launched), call, estimate))

    def cancel() -> None:
        trace.cancelled += [r[2].model for r in running]
        trace.spent += sum(r[3] for r in running)
        running.clear()

    def reply_for(call: Call) -> Reply:
        table = replies if call.role is Role.MEMBER else (helpers or {})
        return table[call.model]

    try:
        step = next(plan)
        for _ in range(1000):
            match step:
                case Launch(calls):
                    if budget is not None and not trace.launched and not finished:
                        budget.check_first(calls)  # the client's 400, as in the orchestrator
                    for call in calls:
                        launch(call)
                case Wait(seconds):
                    if running:
                        soonest = min(r[0] for r in running)
                        limit = now + seconds * 1000 if seconds is not None else math.inf
                        now = min(soonest, limit, deadline_ms)
                        for item in sorted(running, key=lambda r: (r[0], r[1])):
                            if item[0] <= now:
                                running.remove(item)
                                reply = reply_for(item[2])
                                trace.spent += item[3] if reply.usd is None else reply.usd
                                done = candidate(item[2].model, reply, item[2].role)
                                finished.append(replace(done, order=len(finished)))
                        if now >= deadline_ms and running:
                            deadline_passed = True
                            cancel()
                case CancelRest():
                    cancel()
            step = plan.send(progress())
        raise AssertionError("plan did not finish")
    except StopIteration as stop:
        trace.selection = stop.value
    # As the orchestrator does: whatever still runs when the plan ends is cancelled.
    cancel()
    trace.finished = finished
    return trace
