"""Hypothesis strategies: random well-typed programs (from the registry) and S-expressions."""

from __future__ import annotations

import os

from hypothesis import strategies as st

from engine_dsl import (
    PRIMITIVES,
    Apply,
    BoolConst,
    CountConst,
    Definition,
    RealConst,
    Type,
    WeightsConst,
)
from engine_dsl.registry import Limits, producing

# the language's own laws get thousands of examples in CI (HYPOTHESIS_PROFILE=ci)
LANGUAGE_EXAMPLES = 1000 if os.environ.get("HYPOTHESIS_PROFILE") == "ci" else 300

_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _in_domain(domain):
    if domain is None:
        return _finite
    lo = domain.lo if domain.lo > -1e300 else -1e6
    hi = domain.hi if domain.hi < 1e300 else 1e6
    return st.floats(lo, hi, exclude_min=domain.lo_open, exclude_max=domain.hi_open,
                     allow_nan=False)


def literal(t: Type, slot=None):
    if t is Type.REAL:
        dom = slot.domain if slot else None
        return st.builds(RealConst, _in_domain(dom), st.booleans())
    if t is Type.COUNT:
        cap = getattr(Limits(), slot.cap) if slot and slot.cap else 100
        return st.builds(CountConst, st.integers(1, cap))
    if t is Type.WEIGHTS:
        return st.builds(WeightsConst, st.lists(_finite, min_size=1, max_size=6).map(tuple))
    if t is Type.BOOL:
        return st.builds(BoolConst, st.booleans())
    raise ValueError(t)


@st.composite
def expr(draw, t: Type, depth: int = 4, slot=None):
    """A random well-typed expression of type t, at most `depth` applications deep."""
    has_literal = t in (Type.REAL, Type.COUNT, Type.WEIGHTS, Type.BOOL)
    prims = [p for p in producing(t) if depth > 0 or not p.args]
    if not prims and not has_literal:  # e.g. Decoder: no leaf, so end with its shortest form
        prims = [p for p in producing(t) if t not in p.arg_types]
    choice = draw(st.integers(0, len(prims) - (0 if has_literal else 1)))
    if choice == len(prims):
        return draw(literal(t, slot))
    p = prims[choice]
    return Apply(p.name, tuple(draw(expr(a.type, depth - 1, a)) for a in p.args))


names = st.from_regex(r"[a-z][a-z0-9\-]{0,12}", fullmatch=True).filter(
    lambda s: s not in PRIMITIVES and s not in ("define", "fixed", "setv", "if")
)
comments = st.lists(st.from_regex(r";+ [ -~]{0,30}", fullmatch=True).map(str.rstrip),
                    max_size=3).map(tuple)


@st.composite
def programs(draw, max_defs: int = 3):
    """A random program: distinct names, Decoder bodies of bounded size, comment blocks."""
    limits = Limits()
    n = draw(st.integers(1, max_defs))
    chosen = draw(st.lists(names, min_size=n, max_size=n, unique=True))
    out = []
    for name in chosen:
        from engine_dsl import height, size
        from engine_dsl.checker import within_caps

        body = draw(expr(Type.DECODER, 4).filter(
            lambda b: size(b) <= limits.max_size and height(b) <= limits.max_height
            and within_caps(b, limits)))
        out.append(Definition(name, body, draw(comments)))
    return tuple(out)


# --- arbitrary S-expression text -----------------------------------------------------------

_atoms = st.one_of(
    st.sampled_from(list(PRIMITIVES) + ["define", "fixed", "setv", "x", "+", "...", "->x"]),
    st.integers(-1000, 1000).map(str),
    _finite.map(repr),
    st.sampled_from(["#t", "#f", "#true", "#\\a", "#\\space", '"s\\"q"', ".5", "1e-3", "#x1F",
                     "1/2", "+inf.0", "|a b|", "#e1.5", "-i", "1+2i"]),
    st.text(max_size=4),
)


def sexpr_text():
    """Text that is often well-formed S-expressions and sometimes garbage."""
    tree = st.recursive(
        _atoms,
        lambda inner: st.tuples(
            st.sampled_from(["(", "[", "#(", "'(", "#;(", "#|x|#("]),
            st.lists(inner, max_size=4),
        ).map(lambda t: t[0] + " ".join(t[1]) + (")" if t[0][-1] == "(" else "]")),
        max_leaves=12,
    )
    return st.lists(tree, min_size=0, max_size=3).map("\n".join)


# --- chains an engine can express (export tests) ---------------------------------------------


def exportable(engine: str, reads=frozenset()) -> list[str]:
    """The transforms `engine` expresses with constant settings, reading at most `reads`
    besides the logits (no mode switch such as llama.cpp's mirostat), in the engine's own
    processing order (`Export.rank`, then registry order)."""
    ops = [p for p in PRIMITIVES.values()
           if p.family == "transform" and engine in p.export and p.export[engine].mode is None
           and set(p.reads) <= set(reads)]
    return [p.name for p in sorted(ops, key=lambda p: p.export[engine].rank)]


def slot_literal(slot):
    """Literal text for a Real or Count slot, within its `test_range` (else its domain or
    cap)."""
    if slot.type is Type.COUNT:
        lo, hi = slot.test_range or (1, getattr(Limits(), slot.cap) if slot.cap else 100)
        return st.integers(int(lo), int(hi)).map(str)
    lo, hi = slot.test_range or (None, None)
    values = _in_domain(slot.domain) if lo is None else st.floats(lo, hi)
    return values.map(repr)


@st.composite
def transform_chains(draw, ops: list[str], args=None, choosers=("sample",), ordered=False,
                     max_size: int = 4):
    """`(chooser (op_n ... (op_1 logits ...) ...) ...)` over distinct `ops`, in the order of
    `ops` when `ordered` (an engine with a fixed order), else in any order; each op's
    constants from `args[op]` (a strategy of their text) where given, else from the
    registry's test ranges."""
    chosen = draw(st.lists(st.sampled_from(ops), unique=True, min_size=1, max_size=max_size))
    if ordered:
        chosen.sort(key=ops.index)
    text = "logits"
    for op in chosen:
        if args and op in args:
            consts = str(draw(args[op]))
        else:
            consts = " ".join(draw(slot_literal(a)) for a in PRIMITIVES[op].args[1:])
        text = f"({op} {text} {consts})"
    return f"({draw(st.sampled_from(choosers))} {text})"
