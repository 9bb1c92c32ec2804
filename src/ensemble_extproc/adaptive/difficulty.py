"""A cheap, model-free estimate of how hard a chat prompt is.

Six features, each in [0, 1], are read off the prompt text and combined linearly::

    difficulty = clamp(bias + sum(weight_i * feature_i), 0, 1)
    confidence = 1 - difficulty

The features are heuristics, not a classifier: they say "this prompt asks for reasoning,
mathematics or code, is long, asks several things, or touches a high-stakes domain", which
is where a single model is most likely to be wrong and a multi-model ensemble is most
likely to pay off.

How it is kept cheap (pure, no I/O; about 25 µs for a short prompt and 150 µs for 4 KB on
one x86 core, see ``python -m bench.difficulty``):

* Keywords are found by splitting the text into lower-case words once and looking each
  word, and each pair of consecutive words, up in a dict. Whole words only, so "taxi" is
  not "tax" and "knowhow does" is not "how does". Multi-word markers are matched by a
  distinctive pair of words ("step by" for "step by step").
* Code and written-out mathematics are found with regular expressions compiled at import
  time. Almost every one starts with a literal ("```", "def", "Traceback", "\\frac"), which
  lets the regex engine skip to candidates with a fast substring search instead of trying
  the pattern at every position. None has nested quantifiers; runs that could otherwise
  be re-scanned use possessive quantifiers (``*+``, ``++``) and every lazy or bounded
  repetition has a fixed cap, so the work per input character is bounded even on
  adversarial input.
* Pattern matching stops as soon as a feature saturates.
* Prompts longer than ``2 * SCAN_EDGE`` characters are scanned only in their first and
  last ``SCAN_EDGE`` characters (see ``SCAN_EDGE``), so the cost of a call is bounded
  whatever the size of the prompt.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import compress, islice

from ..section import Section

__all__ = [
    "DEFAULT_WEIGHTS",
    "SCAN_EDGE",
    "DifficultyWeights",
    "Features",
    "confidence",
    "difficulty",
    "features",
]

# Long prompts are scanned in their first and last SCAN_EDGE characters only. The head
# usually holds the instruction ("prove...", "debug this...") and the tail the actual
# question, while the middle of a very long prompt is usually pasted material (a document,
# a log, a source file) that repeats the kind of content already seen at its edges. Every
# pattern feature saturates after a few hits, so 4 K characters are enough to see it, and
# the cap bounds the cost of a call (it runs on every request in the processor) even for
# a body of megabytes. The length feature still uses the full length.
SCAN_EDGE = 2048

# Length feature: 0 at <= 40 characters, 1 at >= 4000, logarithmic in between.
_LENGTH_MIN = 40
_LENGTH_MAX = 4000
_LOG_LENGTH_SPAN = math.log(_LENGTH_MAX / _LENGTH_MIN)

# Number of hits at which each counted feature reaches 1.0 (linear below that).
_QUESTIONS_SATURATION = 4
_REASONING_SATURATION = 2
_MATH_SATURATION = 2
_CODE_SATURATION = 3
_DOMAIN_SATURATION = 2


class DifficultyWeights(Section, frozen=True):
    """How much each feature adds to the difficulty; the defaults sum to 1.0.

    Reasoning and mathematics weigh most: a short prompt that asks for a proof or a
    derivation is hard however few words it has, and must be able to cross 0.5 on those
    two features alone. Code comes next (a debugging prompt adds length and usually a
    "why" on top). Length and high-stakes domains are weak signals alone (a long prompt is
    often an easy summary, a medical question may be a simple lookup), so they mostly
    order prompts that are otherwise alike. Several question marks add a little.
    """

    length: float = 0.10
    questions: float = 0.05
    reasoning: float = 0.30
    math: float = 0.25
    code: float = 0.20
    domain: float = 0.10
    bias: float = 0.0


@dataclass(frozen=True, slots=True)
class Features:
    """The feature values of one prompt, each in [0, 1]."""

    length: float
    questions: float
    reasoning: float
    math: float
    code: float
    domain: float


DEFAULT_WEIGHTS = DifficultyWeights()

# --- keyword features: words and pairs of consecutive words ------------------------------

_REASONING = "reasoning"
_MATH = "math"
_DOMAIN = "domain"

_REASONING_WORDS = """
    prove proves proved proven proving why
    explain explains explained explaining explanation explanations
    derive derives derived deriving derivation derivations
    compare compares compared comparing comparison comparisons
    contrast contrasts contrasted contrasting
    analyze analyzes analyzed analyzing analyse analyses analysed analysing analysis
    tradeoff tradeoffs justify justifies justified justifying justification
    evaluate evaluates evaluated evaluating evaluation
    assess assesses assessed assessing assessment critique critiques critiqued critiquing
    implication implications reasoning debug debugs debugged debugging
    troubleshoot troubleshoots troubleshooting
    infer infers inferred inferring deduce deduces deduced deducing
"""
_REASONING_PAIRS = """
    step_by trade_off trade_offs pros_and think_through me_through figure_out
    root_cause root_causes in_detail difference_between differences_between
    how_does how_did how_would how_could how_might would_happen
"""
_MATH_WORDS = """
    integral integrals integrate integrates integrating derivative derivatives
    probability probabilities equation equations solve solves solved solving
    calculate calculates calculated calculating calculation calculations
    theorem theorems lemma lemmas corollary corollaries axiom axioms
    polynomial polynomials matrix matrices eigenvalue eigenvalues eigenvector eigenvectors
    determinant determinants logarithm logarithms factorial factorials
    irrational divisible modulo variance algebra algebraic calculus geometry
    trigonometry trigonometric sine sines cosine cosines hypotenuse quadratic arithmetic
    combinatorics permutation permutations binomial
"""
_MATH_PAIRS = """
    square_root square_roots cube_root cube_roots prime_number prime_numbers prime_factors
    prime_factorization standard_deviation expected_value dot_product cross_product
"""
_DOMAIN_WORDS = """
    diagnose diagnoses diagnosed diagnosis diagnosing diagnostic
    dose doses dosage dosages dosing mg symptom symptoms medication medications
    medicine medicines prescribe prescribed prescription prescriptions disease diseases
    cancer tumor tumors tumour tumours chemotherapy surgery surgeries pregnant pregnancy
    antibiotic antibiotics insulin diabetes diabetic overdose overdoses
    contraindicated contraindication contraindications allergy allergies allergic
    infection infections vaccine vaccines vaccination clinical patient patients
    ibuprofen acetaminophen paracetamol opioid opioids seizure seizures cardiac
    kidney kidneys

    contract contracts liability liabilities liable lawsuit lawsuits sued
    attorney attorneys lawyer lawyers plaintiff plaintiffs defendant defendants
    litigation statute statutes legal legally illegal illegally tort torts
    negligence negligent custody divorce copyright copyrighted trademark trademarks
    indemnify indemnity indemnification jurisdiction jurisdictions subpoena subpoenas
    eviction evictions landlord landlords tenant tenants gdpr felony felonies
    misdemeanor misdemeanors misdemeanour misdemeanours arbitration

    tax taxes taxed taxable taxation investment investments invest invests invested
    investing investor investors mortgage mortgages loan loans retirement 401k
    stock stocks portfolio portfolios dividend dividends bankrupt bankruptcy debt debts
    insurance pension pensions annuity annuities irs deduction deductions
    refinance refinanced refinancing securities fiduciary cryptocurrency cryptocurrencies
"""
_DOMAIN_PAIRS = """
    blood_pressure side_effect side_effects heart_attack breach_of
    interest_rate interest_rates capital_gain capital_gains credit_score credit_scores 401_k
"""


def _kind_table(*entries: tuple[str, str]) -> dict[str, str]:
    """Map every whitespace-separated word of each ``(kind, words)`` entry to its kind."""
    table: dict[str, str] = {}
    for kind, words in entries:
        for word in words.split():
            if table.setdefault(word, kind) != kind:
                raise ValueError(f"marker {word!r} belongs to two features")
    return table


_WORD_KIND = _kind_table(
    (_REASONING, _REASONING_WORDS), (_MATH, _MATH_WORDS), (_DOMAIN, _DOMAIN_WORDS)
)
_PAIR_KIND = {
    tuple(pair.split("_")): kind
    for pair, kind in _kind_table(
        (_REASONING, _REASONING_PAIRS), (_MATH, _MATH_PAIRS), (_DOMAIN, _DOMAIN_PAIRS)
    ).items()
}

_PAIR_FIRST = frozenset(first for first, _ in _PAIR_KIND)


def _keyword_counts(words: list[str]) -> Counter[str]:
    """How many marker words and marker pairs of each kind ``words`` holds."""
    counts = Counter(filter(None, map(_WORD_KIND.get, words)))
    # Look pairs up only where the first word can start one: far fewer tuples to build.
    last = len(words) - 1
    for i in compress(range(last), map(_PAIR_FIRST.__contains__, words)):
        kind = _PAIR_KIND.get((words[i], words[i + 1]))
        if kind is not None:
            counts[kind] += 1
    return counts


# Lower-cases ASCII letters and digits and turns every other ASCII character into a space.
_ASCII_WORDS = str.maketrans(
    {chr(c): chr(c).lower() if chr(c).isalnum() else " " for c in range(128)}
)
_WORD = re.compile(r"[^\W_]+")


def _words(text: str) -> list[str]:
    """The lower-case words (runs of letters and digits) of ``text``."""
    if text.isascii():  # O(1) in CPython; translate + split is several times faster
        return text.translate(_ASCII_WORDS).split()
    return _WORD.findall(text.lower())


# --- pattern features: code and written-out mathematics ---------------------------------
# Each pattern runs on the scanned text with a newline added at both ends, so "\n" stands
# for the start and the end of a line.

_CODE_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        r"```",  # fenced block
        r"\n[ \t]*+(?:async[ \t]++)?def[ \t]++\w++[ \t]*+\(",  # def f(
        r"class(?<!\wclass)[ \t]++[A-Z]\w*+[ \t]*+[(:{]",  # class Foo:  class Foo {
        r"\n[ \t]*+return\b",  # return, as a line of code
        r"=>",
        r"[{};][ \t]*+\n",  # a line ending in { or } or ;
        r"#include\b",
        r"\n#!/",
        r"\n[ \t]*+(?:from[ \t]++[\w.]++[ \t]++import|import[ \t]++[\w.]++[ \t]*+(?:as\b|,|\n))",
        r"\n[ \t]*+(?:export[ \t]++)?(?:function|const|let|var|fn|func)[ \t]++\w++[ \t]*+[=(:<]",
        # SQL: SELECT * / DISTINCT / COUNT( / a column list or name followed by , FROM AS.
        r"SELECT(?<!\wSELECT)[ \t\n]++(?:\*|DISTINCT\b|COUNT\(|[\w.]++[ \t]*+(?:,|FROM\b|AS\b))",
        r"select \* from\b",
        r"console\.log\(",
        r"printf?\(",
        r"System\.out\.print",
        r"public[ \t]++(?:static[ \t]++)?(?:void|int|class|String)\b",
        r"</[a-zA-Z]\w*+>",  # closing HTML / XML tag
        r"Traceback \(most recent call last\)",  # Python stack trace
        r'File "[^"\n]{1,300}+", line [0-9]',  # Python stack frame
        r"\n[ \t]++at [\w.$<>]++\(",  # Java / JavaScript stack frame
        r"Error(?<=[A-Za-z]Error)(?!\w)",  # TypeError, ReferenceError
        r"Exception(?<=[A-Za-z]Exception)(?!\w)",  # NullPointerException
        r"egmentation fault",  # Segmentation fault, segmentation fault
        r"core dumped",
        r"panic:",
        r"npm ERR!",
    )
)

_MATH_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        # A number (not part of a word or a version string), maybe with a variable (2x),
        # an operator, then an operand: 12 * 7, 3.5+2, 2x = 6, 10 - 3. Minus and slash
        # only when followed by a space, so dates (2024-05-01, 5/1/24) do not count.
        r"[0-9](?<![\w.][0-9])[0-9]*+(?:\.[0-9]++)?[a-zA-Z]?[ \t]*+"
        r"(?:[+*^=\u00d7\u00f7\u00b7]|[-/](?=[ \t]))[ \t]*+[-(]?[0-9(a-zA-Z]",
        r"\^(?<=[\w)\]}]\^)[ \t]*+[-0-9(a-zA-Z{]",  # x^2, (a+b)^n
        r"\\(?:d?frac|sqrt|sum|i?int|oint|prod|lim|infty|partial|nabla|cdot|times|leq?|geq?"
        r"|neq|approx|mathbb|mathcal|binom|begin\{(?:equation|align)"
        r"|alpha|beta|gamma|delta|epsilon|theta|lambda|sigma|pi)(?![a-zA-Z])",  # LaTeX
        # $...$ with something mathematical inside; not "costs $5 and $7".
        r"\$(?=[^$\n]{0,200}?[\\^_=+{])[^$\s][^$\n]{0,200}+(?<!\s)\$",
    )
)
# Mathematical symbols, and superscripts after a letter or a bracket (x², (a+b)³). Only
# searched when the text is not pure ASCII (then none of them can occur).
_MATH_SYMBOLS = re.compile(r"[∫∑∏√∞≠±∂∇≤≥²³](?<![^a-zA-Z)][²³])")


def _count(patterns: Iterable[re.Pattern[str]], text: str, cap: int) -> int:
    """Non-overlapping matches of each pattern in ``text``, summed; stops at ``cap``."""
    found = 0
    for pattern in patterns:
        found += sum(1 for _ in islice(pattern.finditer(text), cap - found))
        if found >= cap:
            return cap
    return found


def _scan_window(text: str) -> str:
    """The part of ``text`` that the keyword and pattern features look at.

    All of it up to ``2 * SCAN_EDGE`` characters, else its head and tail; the newline
    between them keeps the two halves of a cut word or line from matching as one.
    """
    if len(text) <= 2 * SCAN_EDGE:
        return text
    return text[:SCAN_EDGE] + "\n" + text[-SCAN_EDGE:]


def _length_feature(n_chars: int) -> float:
    if n_chars <= _LENGTH_MIN:
        return 0.0
    if n_chars >= _LENGTH_MAX:
        return 1.0
    return math.log(n_chars / _LENGTH_MIN) / _LOG_LENGTH_SPAN


def features(text: str) -> Features:
    """The feature values of ``text`` (the user's prompt), each in [0, 1]."""
    window = _scan_window(text)
    words = _words(window)
    keywords = _keyword_counts(words)
    lined = f"\n{window}\n"
    math_hits = min(keywords[_MATH], _MATH_SATURATION)
    if math_hits < _MATH_SATURATION:
        math_hits += _count(_MATH_PATTERNS, lined, _MATH_SATURATION - math_hits)
    if math_hits < _MATH_SATURATION and not window.isascii():
        math_hits += _count((_MATH_SYMBOLS,), lined, _MATH_SATURATION - math_hits)
    return Features(
        length=_length_feature(len(text.strip())),
        questions=min(window.count("?"), _QUESTIONS_SATURATION) / _QUESTIONS_SATURATION,
        reasoning=min(keywords[_REASONING], _REASONING_SATURATION) / _REASONING_SATURATION,
        math=math_hits / _MATH_SATURATION,
        code=_count(_CODE_PATTERNS, lined, _CODE_SATURATION) / _CODE_SATURATION,
        domain=min(keywords[_DOMAIN], _DOMAIN_SATURATION) / _DOMAIN_SATURATION,
    )


def difficulty(text: str, weights: DifficultyWeights = DEFAULT_WEIGHTS) -> float:
    """How hard ``text`` looks, in [0, 1]: ``clamp(bias + sum(weight * feature), 0, 1)``."""
    f = features(text)
    score = (
        weights.bias
        + weights.length * f.length
        + weights.questions * f.questions
        + weights.reasoning * f.reasoning
        + weights.math * f.math
        + weights.code * f.code
        + weights.domain * f.domain
    )
    return min(1.0, max(0.0, score))


def confidence(text: str, weights: DifficultyWeights = DEFAULT_WEIGHTS) -> float:
    """How likely a single model is to get ``text`` right: ``1 - difficulty``, in [0, 1]."""
    return 1.0 - difficulty(text, weights)
