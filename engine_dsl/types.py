"""The program types and constant domains of DESIGN §2. No torch here."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


class Type(Enum):
    """A program type; `value` is the name users see."""

    LOGITS = "Logits"
    REAL = "Real"
    BOOL = "Bool"
    COUNT = "Count"
    WEIGHTS = "Weights"
    DECODER = "Decoder"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Domain:
    """Where a real constant may live, and how tuning reaches it.

    `transform` names the map from an unconstrained parameter to the domain:
    "identity", "softplus" (lo + softplus(x)), "sigmoid" (lo + (hi - lo) * sigmoid(x)).
    """

    name: str
    lo: float = -math.inf
    hi: float = math.inf
    lo_open: bool = True
    hi_open: bool = True
    transform: str = "identity"

    def contains(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        if x < self.lo or (self.lo_open and x == self.lo):
            return False
        return not (x > self.hi or (self.hi_open and x == self.hi))

    def describe(self) -> str:
        """Human text of the set, e.g. 'in (0, 1)' or '>= 1'."""
        if math.isinf(self.lo) and math.isinf(self.hi):
            return "finite"
        if math.isinf(self.hi):
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if math.isinf(self.lo):
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        left = "(" if self.lo_open else "["
        right = ")" if self.hi_open else "]"
        return f"in {left}{_num(self.lo)}, {_num(self.hi)}{right}"


def _num(x: float) -> str:
    return str(int(x)) if x == int(x) else repr(x)


ANY = Domain("real")
POSITIVE = Domain("positive", lo=0.0, transform="softplus")
NONNEGATIVE = Domain("non-negative", lo=0.0, lo_open=False, transform="softplus")
PROBABILITY = Domain("probability", lo=0.0, hi=1.0, transform="sigmoid")
UNIT = Domain("unit", lo=0.0, hi=1.0, lo_open=False, hi_open=False, transform="sigmoid")
PENALTY = Domain("penalty", lo=1.0, lo_open=False, transform="softplus")
