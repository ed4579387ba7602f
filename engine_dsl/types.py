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

    # One set of transforms for every float use (the torch twin of `constrained` is
    # `engine_dsl.compile.to_domain`, the same formulas on tensors).
    def clamp(self, x: float) -> float:
        """x pulled into the domain (open ends by DOMAIN_EPS)."""
        lo = self.lo + (DOMAIN_EPS if self.lo_open else 0.0)
        hi = self.hi - (DOMAIN_EPS if self.hi_open else 0.0)
        return min(max(float(x), lo), hi) if math.isfinite(lo) or math.isfinite(hi) else x

    def constrained(self, z: float) -> float:
        """The domain value of an unconstrained parameter z (the map tuning uses; z is
        clipped to [-30, 30] first), nudged inside where rounding reached an open end."""
        z = max(-30.0, min(30.0, z))
        if self.transform == "softplus":
            x = self.lo + math.log1p(math.exp(z))
        elif self.transform == "sigmoid":
            x = self.lo + (self.hi - self.lo) / (1.0 + math.exp(-z))
        else:
            x = z
        return x if self.contains(x) else self._nudge_inside(x)

    def _nudge_inside(self, x: float) -> float:
        if not math.isfinite(x):
            x = 0.0
        lo = self.lo if not math.isinf(self.lo) else -1e300
        hi = self.hi if not math.isinf(self.hi) else 1e300
        x = min(max(x, lo), hi)
        if self.lo_open and x <= self.lo:
            x = math.nextafter(self.lo, math.inf) if math.isinf(self.hi) \
                else self.lo + 1e-6 * (self.hi - self.lo)
        if self.hi_open and x >= self.hi:
            x = self.hi - 1e-6 * (self.hi - self.lo) if not math.isinf(self.lo) \
                else math.nextafter(self.hi, -1)
        return x

    def unconstrained(self, value: float) -> float:
        """The parameter whose transform is `value`, ends pulled in by INVERSE_EPS
        (relative), so closed ends such as a mix weight of 0 give finite parameters."""
        if self.transform == "softplus":
            d = max(float(value) - self.lo, INVERSE_EPS)
            return d + math.log(-math.expm1(-d))  # log(expm1(d)), stable for large d
        if self.transform == "sigmoid":
            u = (float(value) - self.lo) / (self.hi - self.lo)
            u = min(max(u, INVERSE_EPS), 1.0 - INVERSE_EPS)
            return math.log(u) - math.log1p(-u)
        return float(value)

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


DOMAIN_EPS = 1e-6  # run-time clamp margin for open domain ends
INVERSE_EPS = 1e-6  # closed domain ends are pulled in this far (relative) before inverting

ANY = Domain("real")
POSITIVE = Domain("positive", lo=0.0, transform="softplus")
NONNEGATIVE = Domain("non-negative", lo=0.0, lo_open=False, transform="softplus")
PROBABILITY = Domain("probability", lo=0.0, hi=1.0, transform="sigmoid")
UNIT = Domain("unit", lo=0.0, hi=1.0, lo_open=False, hi_open=False, transform="sigmoid")
PENALTY = Domain("penalty", lo=1.0, lo_open=False, transform="softplus")
