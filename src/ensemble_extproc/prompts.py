"""Prompts for the judge (reranking) and the aggregator (fusion).

Kept in one place: strategies build them, and the demo backends recognise them (a demo
judge answers with a candidate number, a demo aggregator answers the question).
"""

from __future__ import annotations

from collections.abc import Sequence

JUDGE_INSTRUCTION = (
    "You are judging candidate answers to a user's request. Pick the single best candidate: "
    "the one that is correct and answers exactly what was asked. "
    "Reply with the number of the best candidate only, for example: 2"
)
AGGREGATOR_INSTRUCTION = (
    "You are given several candidate answers to a user's request, written by different "
    "models. Write one final answer to the request. Where the candidates contradict each "
    "other, work out which is right instead of mixing them. Keep exactly the output format "
    "the request asks for. Reply with the final answer only."
)
QUESTION_HEADING = "## Request"
CANDIDATES_HEADING = "## Candidates"


def candidate_heading(number: int) -> str:
    return f"### Candidate {number}"


def candidates_prompt(instruction: str, question: str, candidates: Sequence[str]) -> str:
    """One user message: the instruction, the request, then the numbered candidates."""
    parts = [instruction, "", QUESTION_HEADING, question, "", CANDIDATES_HEADING]
    for number, text in enumerate(candidates, start=1):
        parts += ["", candidate_heading(number), text]
    return "\n".join(parts)
