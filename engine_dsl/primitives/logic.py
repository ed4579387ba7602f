"""Conditions and the row-wise choice: comparisons, and/or/not, `if`.

Exact: Python bools or (B,) bool tensors. Relaxed (tuning): log-odds. Comparisons give
sharpness * (b - a); `and`/`or` are the smooth min/max of log-odds (-logaddexp(-a, -b),
logaddexp(a, b): both sides always get a gradient, and they tend to min/max as the log-odds
grow with sharpness), `not` is negation; `if` is the probability mixture of its branches
weighted by sigmoid(log-odds), shifted back by the blended log-normaliser so it tends to the
exact row choice.
"""

from __future__ import annotations

from ..nodes import Apply, BoolConst, RealConst
from ..types import ANY, Type
from . import Arg, entry
from ._torch import NEG_INF, F, as_tensor, excluded, torch

L, R, B = Type.LOGITS, Type.REAL, Type.BOOL
BOUNDS_SLACK = 1e-4  # a measure may leave its range by float rounding (entropy -1e-7)


# ----------------------------------------------------------------------------- if


def if_exact(ctx, c, a, b):
    if isinstance(c, bool):
        return a if c else b
    c = c.to(device=a.device)
    return torch.where(c.view(-1, 1) if c.dim() else c, a, b)


def if_relaxed(ctx, c, a, b):
    z = as_tensor(c).to(a.dtype)
    z = z.view(-1, 1) if z.dim() else z
    lse_a = torch.logsumexp(a, dim=-1, keepdim=True)
    lse_b = torch.logsumexp(b, dim=-1, keepdim=True)
    ta = F.logsigmoid(z) + (a - lse_a)
    tb = F.logsigmoid(-z) + (b - lse_b)
    both = excluded(ta) & excluded(tb)
    zero = torch.zeros_like(ta)
    mixed = torch.logaddexp(torch.where(both, zero, ta), torch.where(both, zero, tb))
    shift = torch.sigmoid(z) * lse_a + torch.sigmoid(-z) * lse_b
    return torch.where(both, NEG_INF, mixed + shift)


def _if_rule(e, space, shift_ok):
    c, x, y = e.args
    if x == y:
        return x
    if isinstance(c, BoolConst):
        return x if c.value else y
    if isinstance(c, Apply) and c.op == "not":
        return Apply("if", (c.args[0], y, x))
    return None


# ----------------------------------------------------------------------------- comparisons


def lt_exact(ctx, a, b):
    return a < b


def gt_exact(ctx, a, b):
    return a > b


def lt_relaxed(ctx, a, b):
    return ctx.sharpness * (as_tensor(b) - as_tensor(a))


def gt_relaxed(ctx, a, b):
    return ctx.sharpness * (as_tensor(a) - as_tensor(b))


def _compare_rule(less: bool):
    """Two literals compare now; a measure whose range (`bounds`) lies wholly on one side of
    a literal, by more than float rounding, decides the comparison for every row:
    (< (max-prob L) 1.1) -> #t."""

    def rule(e, space, shift_ok):
        from ..registry import PRIMITIVES

        x, y = e.args
        if isinstance(x, RealConst) and isinstance(y, RealConst):
            return BoolConst(x.value < y.value if less else x.value > y.value)
        lt = less
        if isinstance(x, RealConst):  # (< c m) is (> m c)
            lt, x, y = not lt, y, x
        bounds = PRIMITIVES[x.op].bounds if isinstance(x, Apply) else None
        if bounds is None or not isinstance(y, RealConst):
            return None
        lo, hi = bounds
        if y.value > hi + BOUNDS_SLACK:  # every m < c
            return BoolConst(lt)
        if y.value < lo - BOUNDS_SLACK:  # every m > c
            return BoolConst(not lt)
        return None

    return rule


# ----------------------------------------------------------------------------- and, or, not


def and_exact(ctx, a, b):
    if isinstance(a, bool) and isinstance(b, bool):
        return a and b
    return torch.as_tensor(a) & torch.as_tensor(b)


def or_exact(ctx, a, b):
    if isinstance(a, bool) and isinstance(b, bool):
        return a or b
    return torch.as_tensor(a) | torch.as_tensor(b)


def not_exact(ctx, a):
    return (not a) if isinstance(a, bool) else ~a


def and_relaxed(ctx, a, b):
    return -torch.logaddexp(-as_tensor(a), -as_tensor(b))  # smooth min of log-odds


def or_relaxed(ctx, a, b):
    return torch.logaddexp(as_tensor(a), as_tensor(b))  # smooth max of log-odds


def not_relaxed(ctx, a):
    return -as_tensor(a)


def _junction_rule(absorbing: bool):
    """(op c c) -> c; a literal either absorbs (#t for or, #f for and) or drops out."""

    def rule(e, space, shift_ok):
        x, y = e.args
        if x == y:
            return x
        for lit, other in ((x, y), (y, x)):
            if isinstance(lit, BoolConst):
                return lit if lit.value == absorbing else other
        return None

    return rule


def _not_rule(e, space, shift_ok):
    (c,) = e.args
    if isinstance(c, Apply) and c.op == "not":
        return c.args[0]
    if isinstance(c, BoolConst):
        return BoolConst(not c.value)
    return None


ENTRIES = [
    entry("if", [Arg("c", B), Arg("A", L), Arg("B", L)], L, "transform",
          "row-wise choice: A where c holds, else B", exact=if_exact, relaxed=if_relaxed,
          shift="equivariant", rule=_if_rule),
    entry("<", [Arg("a", R, ANY), Arg("b", R, ANY)], B, "logic", "row-wise a < b",
          exact=lt_exact, relaxed=lt_relaxed, rule=_compare_rule(True)),
    entry(">", [Arg("a", R, ANY), Arg("b", R, ANY)], B, "logic", "row-wise a > b",
          exact=gt_exact, relaxed=gt_relaxed, rule=_compare_rule(False)),
    entry("and", [Arg("a", B), Arg("b", B)], B, "logic", "row-wise conjunction",
          exact=and_exact, relaxed=and_relaxed, rule=_junction_rule(False)),
    entry("or", [Arg("a", B), Arg("b", B)], B, "logic", "row-wise disjunction",
          exact=or_exact, relaxed=or_relaxed, rule=_junction_rule(True)),
    entry("not", [Arg("a", B)], B, "logic", "row-wise negation", exact=not_exact,
          relaxed=not_relaxed, rule=_not_rule),
]
