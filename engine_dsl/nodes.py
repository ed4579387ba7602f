"""The typed AST: frozen dataclasses, a span on every node (ignored by equality).

A program is a tuple of `Definition`s; each body is an `Expr`:
`Apply` (a primitive applied to argument expressions, `logits` has none) or a literal
(`RealConst`, `CountConst`, `WeightsConst`, `BoolConst`). Types follow from the registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from .types import Type


@dataclass(frozen=True)
class Span:
    filename: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}:{self.col}"


def _span():
    return field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class RealConst:
    value: float
    fixed: bool = False  # (fixed c): tuning must not move it
    span: Span | None = _span()


@dataclass(frozen=True)
class CountConst:
    value: int
    span: Span | None = _span()


@dataclass(frozen=True)
class WeightsConst:
    values: tuple[float, ...]
    span: Span | None = _span()


@dataclass(frozen=True)
class BoolConst:
    value: bool
    span: Span | None = _span()


@dataclass(frozen=True)
class Apply:
    op: str
    args: tuple[Expr, ...] = ()
    span: Span | None = _span()


Expr = RealConst | CountConst | WeightsConst | BoolConst | Apply
Literal = RealConst | CountConst | WeightsConst | BoolConst

LITERAL_TYPES: dict[type, Type] = {
    RealConst: Type.REAL,
    CountConst: Type.COUNT,
    WeightsConst: Type.WEIGHTS,
    BoolConst: Type.BOOL,
}


@dataclass(frozen=True)
class Definition:
    name: str
    body: Expr
    comments: tuple[str, ...] = ()  # the ';' comment lines above it (provenance), verbatim
    span: Span | None = _span()


def type_of(e: Expr) -> Type:
    if isinstance(e, Apply):
        from .registry import PRIMITIVES  # the registry's entries hold nodes: import late

        return PRIMITIVES[e.op].returns
    return LITERAL_TYPES[type(e)]


def walk(e: Expr) -> Iterator[Expr]:
    """Nodes in prefix order (the order of DEAP's PrimitiveTree), without recursion."""
    stack = [e]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, Apply):
            stack.extend(reversed(node.args))


def size(e: Expr) -> int:
    return sum(1 for _ in walk(e))


def height(e: Expr) -> int:
    """Edges on the longest root-to-leaf path; a lone leaf has height 0 (as in DEAP)."""
    best, stack = 0, [(e, 0)]
    while stack:
        node, depth = stack.pop()
        best = max(best, depth)
        if isinstance(node, Apply):
            stack.extend((a, depth + 1) for a in node.args)
    return best


def tunable_constants(e: Expr) -> list[RealConst | WeightsConst]:
    """The trainable literals of `e` in prefix order: non-fixed reals and Weights vectors
    (a compiled program's parameters; `with_constants` writes values back)."""
    return [n for n in walk(e)
            if (isinstance(n, RealConst) and not n.fixed) or isinstance(n, WeightsConst)]


def with_constants(e: Expr | Definition, values) -> Expr | Definition:
    """`e` with its tunable constants (trainable reals and Weights vectors, in prefix order:
    the order of a compiled program's parameters) replaced by `values` (Lamarckian
    write-back). Constants whose value is unchanged keep their node."""
    values = list(values)
    if isinstance(e, Definition):
        return replace(e, body=with_constants(e.body, values))
    it = iter(values)
    count = 0

    def go(node: Expr) -> Expr:
        nonlocal count
        if isinstance(node, RealConst) and not node.fixed:
            count += 1
            v = float(next(it))
            return node if v == node.value else replace(node, value=v)
        if isinstance(node, WeightsConst):
            count += 1
            v = next(it)
            if isinstance(v, (int, float)):
                raise ValueError(f"a Weights literal needs a vector, got {v!r}")
            v = tuple(float(x) for x in v)
            return node if v == node.values else replace(node, values=v)
        if isinstance(node, Apply):
            return replace(node, args=tuple(go(a) for a in node.args))
        return node

    try:
        out = go(e)
    except StopIteration:
        raise ValueError(f"{len(values)} values for more constants") from None
    if count != len(values):
        raise ValueError(f"{len(values)} values for {count} constants")
    return out
