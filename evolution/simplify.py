"""Simplify evolved programs without changing what they do (exact mode).

Rewrites run bottom-up to a fixpoint. Every rule comes from the facts in the primitives'
registry entries (`engine_dsl.primitives.Primitive`), so a new primitive brings its own:

  neutral      (op L v) -> L where v is the neutral value (temperature 1.0, a penalty 1.0;
               "vocab": a Count at least the vocabulary size, e.g. top-k)
  merge        (op (op L a) b) -> (op L merge(a, b)) for literals of the same fixedness
               (temperature: a*b, top-k: min, min-p: max)
  argmax_only  (chooser T) -> (chooser L) where the chooser reads only the top token and T
               is a transform that keeps_argmax (greedy of temperature/top-k/top-p/min-p)
  commutes     (a (b L y) x) -> (b (a L x) y) when a and b commute and a comes first in
               the registry: equivalent programs print in one canonical order, e.g.
               (temperature (repetition-penalty L r) t) -> (repetition-penalty (temperature L t) r)
  rule         anything else an entry knows about itself: dead `if` branches, (if c A A),
               (if (not c) A B), double negation, and/or with literals, comparisons of
               literals or of a measure with a constant outside its `bounds`,
               (layer n_layer) -> logits, (mix A A w) -> A in a shift context

Each rule keeps the exact-mode output of its Logits/Real/Bool form (up to float rounding
where constants merge or commuting transforms swap) and every Decoder's answers;
`tests/evolution/test_evo_simplify.py` checks this on random logits.

Shift context. `(mix A A w)` is log_softmax(A): A shifted by a per-row constant. Its value
differs from A, but nothing changes where every consumer on the way to the decoder reads its
input only up to a per-row shift: entries whose `shift` is "invariant" (choosers, the
log-softmax of mix/contrast, the measures) make their arguments shift-free; "equivariant"
ones (temperature, the truncations, the branches of `if`) pass the context on to their
Logits arguments; everything else (a penalty: the sign of a score matters) breaks it. A
top-level Logits expression is read exactly (no shift allowed).
"""

from __future__ import annotations

from dataclasses import replace

from engine_dsl.nodes import Apply, CountConst, Expr, RealConst
from engine_dsl.registry import PRIMITIVES
from engine_dsl.types import Type

from .bridge import SearchSpace


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
    prim = PRIMITIVES[op]
    if prim.shift == "invariant":
        return True
    if prim.shift == "equivariant":
        return shift_ok and prim.args[index].type is Type.LOGITS
    return False


def _rewrite(e: Expr, space: SearchSpace | None, shift_ok: bool = False) -> Expr:
    if not isinstance(e, Apply) or not e.args:
        return e
    e = replace(e, args=tuple(_rewrite(a, space, _child_shift_ok(e.op, i, shift_ok))
                              for i, a in enumerate(e.args)))
    return _rule(e, space, shift_ok)


def _rule(e: Apply, space: SearchSpace | None, shift_ok: bool) -> Expr:
    prim = PRIMITIVES[e.op]
    if prim.rule is not None:
        out = prim.rule(e, space, shift_ok)
        if out is not None:
            return out
    if prim.neutral is not None and _is_neutral(prim.neutral, e.args[-1], space):
        return e.args[0]
    inner = e.args[0] if e.args else None
    if not isinstance(inner, Apply):
        return e
    inner_prim = PRIMITIVES[inner.op]
    if prim.merge is not None and inner.op == e.op:
        merged = _merge(prim.merge, inner.args[-1], e.args[-1])
        if merged is not None:
            return Apply(e.op, (inner.args[0], *e.args[1:-1], merged))
    if prim.argmax_only and inner_prim.keeps_argmax:
        return Apply(e.op, (inner.args[0], *e.args[1:]))
    if (inner.op in prim.commutes or e.op in inner_prim.commutes) and _rank(e.op) < _rank(
            inner.op):
        return Apply(inner.op, (Apply(e.op, (inner.args[0], *e.args[1:])), *inner.args[1:]))
    return e


def _rank(op: str) -> int:
    return list(PRIMITIVES).index(op)


def _is_neutral(neutral, arg, space: SearchSpace | None) -> bool:
    if neutral == "vocab":
        return isinstance(arg, CountConst) and space is not None \
            and arg.value >= space.vocab_size
    return isinstance(arg, (RealConst, CountConst)) and arg.value == neutral


def _merge(fn, a, b):
    """The literal (op L merge(a, b)) takes, or None when a and b cannot merge."""
    if isinstance(a, RealConst) and isinstance(b, RealConst) and a.fixed == b.fixed:
        return RealConst(fn(a.value, b.value), b.fixed)
    if isinstance(a, CountConst) and isinstance(b, CountConst):
        return CountConst(fn(a.value, b.value))
    return None
