"""Simplify evolved programs without changing what they do (exact mode).

Rewrites run bottom-up to a fixpoint. Each rule keeps the exact-mode output of its
Logits/Real/Bool form (up to float rounding where constants merge) and every Decoder's
answers; `tests/evolution/test_evo_simplify.py` checks this on random logits.

Logits
  (temperature (temperature L a) b)      -> (temperature L a*b)      a, b literals, same fixedness
  (temperature L 1.0)                    -> L
  (repetition-penalty L 1.0)             -> L
  (top-k L k), k >= vocabulary size      -> L
  (top-k (top-k L a) b)                  -> (top-k L min(a, b))
  (min-p (min-p L a) b)                  -> (min-p L max(a, b))
  (layer n_layer)                        -> logits
  (if c A A)                             -> A
  (if #t A B) -> A, (if #f A B) -> B, (if (not c) A B) -> (if c B A)
  (mix A A w)                            -> A    only where the result is read up to a
                                                 per-row additive shift (see below)
Bool
  (not (not c)) -> c, (not #t) -> #f, (and c c) / (or c c) -> c,
  (and #t c) -> c, (and #f c) -> #f, (or #f c) -> c, (or #t c) -> #t,
  (< x y), (> x y) of two literals -> #t / #f
  (< m c), (> m c), (< c m), (> c m) -> #t / #f where the measure m's range (the registry's
      `bounds`: entropy >= 0, max-prob and margin in [0, 1]) decides it for every row, by
      more than float rounding (BOUNDS_SLACK): e.g. (< (max-prob L) 1.1) -> #t
Decoder
  (greedy T) -> (greedy L) where T is temperature/top-k/top-p/min-p of L (all keep the
  argmax, and greedy reads nothing else)

Shift context. `(mix A A w)` is log_softmax(A): A shifted by a per-row constant (the same
kept set). Its value differs from A, but nothing changes where every consumer on the way to
the decoder reads its input only up to a per-row shift: sample/greedy, the log-softmax of
mix/contrast and the measures (entropy, max-prob, margin) are shift-invariant; temperature,
top-k, top-p, min-p, typical and the branches of `if` are shift-equivariant (a shifted input
gives the same output, shifted), so they pass the context on; repetition-penalty (the sign
of a score matters) and everything else break it. A top-level Logits expression is read
exactly (no shift allowed); a Decoder's distribution is the same.
"""

from __future__ import annotations

from dataclasses import replace

from engine_dsl.nodes import Apply, BoolConst, CountConst, Expr, RealConst
from engine_dsl.registry import PRIMITIVES

from .bridge import SearchSpace

ARGMAX_KEEPING = ("temperature", "top-k", "top-p", "min-p")
SHIFT_INVARIANT = ("sample", "greedy", "mix", "contrast", "entropy", "max-prob", "margin")
SHIFT_EQUIVARIANT = ("temperature", "top-k", "top-p", "min-p", "typical")
BOUNDS_SLACK = 1e-4  # a measure may leave its range by float rounding (entropy -1e-7)


def simplify(expr: Expr, space: SearchSpace | None = None, max_rounds: int = 50) -> Expr:
    """The simplified form of `expr` (a fixpoint of the rules above). `space` gives the
    vocabulary size and depth for the rules that need them (skipped when None)."""
    for _ in range(max_rounds):
        new = _rewrite(expr, space)
        if new == expr:
            return new
        expr = new
    return expr


def _child_shift_ok(op: str, index: int, shift_ok: bool) -> bool:
    """May argument `index` of `op` be replaced by a per-row shift of itself, given whether
    `op`'s own result may be (`shift_ok`)?"""
    if op in SHIFT_INVARIANT:
        return True
    if op in SHIFT_EQUIVARIANT:
        return shift_ok and index == 0
    if op == "if":
        return shift_ok and index > 0
    return False


def _rewrite(e: Expr, space: SearchSpace | None, shift_ok: bool = False) -> Expr:
    if not isinstance(e, Apply) or not e.args:
        return e
    e = replace(e, args=tuple(_rewrite(a, space, _child_shift_ok(e.op, i, shift_ok))
                              for i, a in enumerate(e.args)))
    if shift_ok and e.op == "mix" and e.args[0] == e.args[1]:
        return e.args[0]
    return _rule(e, space)


def _lit(e, cls=RealConst) -> bool:
    return isinstance(e, cls)


def _is_one(e) -> bool:
    return isinstance(e, RealConst) and e.value == 1.0


def _rule(e: Apply, space: SearchSpace | None) -> Expr:
    op, a = e.op, e.args
    if op == "temperature":
        inner, t = a
        if _is_one(t):
            return inner
        if (isinstance(inner, Apply) and inner.op == "temperature" and _lit(t)
                and _lit(inner.args[1]) and inner.args[1].fixed == t.fixed):
            return Apply("temperature", (inner.args[0],
                                         RealConst(inner.args[1].value * t.value, t.fixed)))
    elif op == "repetition-penalty":
        if _is_one(a[1]):
            return a[0]
    elif op == "top-k":
        inner, k = a
        if space is not None and k.value >= space.vocab_size:
            return inner
        if isinstance(inner, Apply) and inner.op == "top-k":
            return Apply("top-k", (inner.args[0],
                                   CountConst(min(k.value, inner.args[1].value))))
    elif op == "min-p":
        inner, p = a
        if isinstance(inner, Apply) and inner.op == "min-p" and _lit(p) and _lit(inner.args[1]) \
                and p.fixed == inner.args[1].fixed:
            return Apply("min-p", (inner.args[0],
                                   RealConst(max(p.value, inner.args[1].value), p.fixed)))
    elif op == "layer":
        if space is not None and a[0].value == space.n_layer:
            return Apply("logits")
    elif op == "if":
        c, x, y = a
        if x == y:
            return x
        if _lit(c, BoolConst):
            return x if c.value else y
        if isinstance(c, Apply) and c.op == "not":
            return Apply("if", (c.args[0], y, x))
    elif op == "not":
        (c,) = a
        if isinstance(c, Apply) and c.op == "not":
            return c.args[0]
        if _lit(c, BoolConst):
            return BoolConst(not c.value)
    elif op in ("and", "or"):
        x, y = a
        if x == y:
            return x
        absorbing = op == "or"  # #t absorbs `or`, #f absorbs `and`
        for lit, other in ((x, y), (y, x)):
            if _lit(lit, BoolConst):
                return lit if lit.value == absorbing else other
    elif op in ("<", ">"):
        x, y = a
        if _lit(x) and _lit(y):
            return BoolConst(x.value < y.value if op == "<" else x.value > y.value)
        decided = _by_bounds(op, x, y)
        if decided is not None:
            return BoolConst(decided)
    elif op == "greedy":
        (x,) = a
        if isinstance(x, Apply) and x.op in ARGMAX_KEEPING:
            return Apply("greedy", (x.args[0],))
    return e


def _by_bounds(op: str, x: Expr, y: Expr) -> bool | None:
    """The value of (op x y) on every row when one side is a literal and the other a
    primitive whose range (`bounds`) lies wholly on one side of it; else None."""
    if _lit(x):  # (< c m) is (> m c)
        op, x, y = ("<" if op == ">" else ">"), y, x
    bounds = PRIMITIVES[x.op].bounds if isinstance(x, Apply) else None
    if bounds is None or not _lit(y):
        return None
    lo, hi = bounds
    c = y.value
    if c > hi + BOUNDS_SLACK:  # every m < c
        return op == "<"
    if c < lo - BOUNDS_SLACK:  # every m > c
        return op == ">"
    return None
