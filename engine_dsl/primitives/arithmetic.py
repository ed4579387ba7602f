"""Arithmetic on Reals: `+ - * / min max`, so evolution can build settings that adapt per row,
e.g. `(temperature logits (* 0.5 (entropy logits)))`.

Values. Literal-only arithmetic in exact mode stays a Python float; anything else is a float64
tensor (0-dim or (B,)). Every result saturates at +-1.7976931348623157e308 (the largest
literal the checker accepts), so no operation makes inf, and so none makes NaN either (their
arguments are finite). `(/ a b)` is protected: a / b where |b| > 1e-12, else a (as if b
were 1). Relaxed mode (tuning): `+ - * /` as in exact mode (differentiable almost
everywhere; the division's gradient is that of its branch); `min`/`max` are the smooth
min(a, b) - softplus(-s |a - b|) / s and max(a, b) + softplus(-s |a - b|) / s with the
tuning sharpness s, so both arguments get a gradient; they tend to min/max as s grows.

A Real slot with a domain. A computed Real standing in a slot with a domain (a temperature
> 0, a probability in (0, 1), a penalty >= 1) is mapped into the domain at run time by one
rule (`semantics.clamp_to_domain`): exact mode clamps it into [lo', hi'], the domain with
open ends pulled in by 1e-6 (a literal there is clamped the same way); relaxed mode first
applies the smooth clamp lo' + sp(v - lo') - sp(v - hi'), sp(z) = softplus(s z) / s with the
tuning sharpness s (one term where an end is infinite), then the same clamp. The smooth
clamp is increasing and stays inside, tends to the clamp as s grows (relaxed tends to
exact), and, unlike the clamp, passes a gradient to the constants of an expression that
strays outside the domain.

The simplifier drops a neutral operand of a computed expression ((+ e 0), (* 1 e), (/ e 1),
(min e e), ...); it folds no literals (the folded literal could lie outside the domain of
the slot it stands in, where the expression was clamped).
"""

from __future__ import annotations

import operator
import sys

from ..nodes import Apply, RealConst
from ..types import ANY, Type
from . import Arg, entry
from ._torch import F, torch

R = Type.REAL
REAL_MAX = sys.float_info.max
DIV_EPS = 1e-12  # (/ a b) is a where |b| <= DIV_EPS


def _f64(v):
    if isinstance(v, torch.Tensor):
        return v.to(torch.float64)
    return torch.tensor(float(v), dtype=torch.float64)


def _saturate(v):
    if isinstance(v, float):
        return min(max(v, -REAL_MAX), REAL_MAX)
    return v.clamp(-REAL_MAX, REAL_MAX)


def _op(on_floats, on_tensors=None):
    """A kernel: Python floats stay floats (exact literals), anything else float64 tensors;
    the result saturated."""

    def kernel(ctx, a, b):
        if isinstance(a, (float, int)) and isinstance(b, (float, int)):
            return _saturate(float(on_floats(a, b)))
        return _saturate((on_tensors or on_floats)(_f64(a), _f64(b)))

    return kernel


def _divide_floats(a, b):
    return a / b if abs(b) > DIV_EPS else a


def _divide_tensors(a, b):
    ok = b.abs() > DIV_EPS
    return torch.where(ok, a / torch.where(ok, b, torch.ones_like(b)), a)


def _smooth(sign: float):
    """Relaxed min (sign -1) / max (sign +1) with the tuning sharpness."""

    def kernel(ctx, a, b):
        a, b = _f64(a), _f64(b)
        s = ctx.sharpness
        hard = torch.maximum(a, b) if sign > 0 else torch.minimum(a, b)
        return _saturate(hard + sign * F.softplus(-s * (a - b).abs()) / s)

    return kernel


def _drop_neutral(value: float, left: bool):
    """(op e v) -> e, and (op v e) -> e when `left`, for a computed e (not a literal)."""

    def rule(e, space, shift_ok):
        a, b = e.args
        for lit, other, ok in ((b, a, True), (a, b, left)):
            if ok and isinstance(lit, RealConst) and lit.value == value \
                    and isinstance(other, Apply):
                return other
        return None

    return rule


def _same(e, space, shift_ok):
    """(min e e) -> e, (max e e) -> e for a computed e."""
    a, b = e.args
    return a if a == b and isinstance(a, Apply) else None


def _args():
    return [Arg("a", R, ANY), Arg("b", R, ANY)]


ENTRIES = [
    entry("+", _args(), R, "arithmetic", "a + b", exact=_op(operator.add),
          rule=_drop_neutral(0.0, left=True)),
    entry("-", _args(), R, "arithmetic", "a - b", exact=_op(operator.sub),
          rule=_drop_neutral(0.0, left=False)),
    entry("*", _args(), R, "arithmetic", "a x b", exact=_op(operator.mul),
          rule=_drop_neutral(1.0, left=True)),
    entry("/", _args(), R, "arithmetic", "a / b where abs(b) > 1e-12, else a (protected division)",
          exact=_op(_divide_floats, _divide_tensors), rule=_drop_neutral(1.0, left=False)),
    entry("min", _args(), R, "arithmetic", "the smaller of a and b (relaxed: smooth min)",
          exact=_op(min, lambda a, b: torch.minimum(a, b)), relaxed=_smooth(-1.0), rule=_same),
    entry("max", _args(), R, "arithmetic", "the larger of a and b (relaxed: smooth max)",
          exact=_op(max, lambda a, b: torch.maximum(a, b)), relaxed=_smooth(1.0), rule=_same),
]
