"""The base of every declared config section, and the constrained numbers they share.

A leaf: the strategies (``strategies.settings``), adaptive signals
(``adaptive.difficulty``) and learned trust (``trust.model``) declare their own blocks,
and ``config.model`` imports them all, so the base cannot live in the config package.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta, Struct

Positive = Annotated[float, Meta(gt=0)]
Count = Annotated[int, Meta(gt=0)]
Fraction = Annotated[float, Meta(gt=0, le=1)]


class Section(Struct, frozen=True, forbid_unknown_fields=True):
    """Base of every declared config mapping: read-only, and unknown keys are errors."""
