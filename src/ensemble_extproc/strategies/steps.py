"""Building blocks of plans, used with ``yield from``."""

from __future__ import annotations

from collections.abc import Generator, Iterable

from .base import Call, Context, Launch, Progress, Step, Wait


def gather(ctx: Context, calls: Iterable[Call]) -> Generator[Step, Progress, Progress | None]:
    """Launch ``calls`` and wait for all of them; None as soon as the quorum is out of reach."""
    yield Launch(tuple(calls))
    while True:
        progress = yield Wait()
        valid = progress.valid_members()
        running = progress.running_members()
        if len(valid) + len(running) < ctx.min_responses:
            return None
        if not progress.running or progress.deadline_passed:
            return progress


def ask(call: Call) -> Generator[Step, Progress, Progress]:
    """Launch one helper call (judge, aggregator) and wait until it is done."""
    yield Launch((call,))
    while True:
        progress = yield Wait()
        if not any(c.role is call.role for c in progress.running) or progress.deadline_passed:
            return progress
