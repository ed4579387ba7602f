"""The typed AST: frozen dataclasses, a span on every node (ignored by equality).

A program is a tuple of `Definition`s; each body is an `Expr`:
`Apply` (a primitive applied to argument expressions, `logits` has none) or a literal
(`RealConst`, `CountConst`, `WeightsConst`, `BoolConst`). Types follow from the registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from .registry import PRIMITIVES
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


def tunable_constants(e: Expr) -> list[RealConst]:
    """The trainable real literals of `e` in prefix order (fixed ones excluded)."""
    return [n for n in walk(e) if isinstance(n, RealConst) and not n.fixed]


def with_constants(e: Expr, values: list[float]) -> Expr:
    """`e` with its tunable real constants replaced, in prefix order (Lamarckian write-back)."""
    values = [float(v) for v in values]
    n = len(tunable_constants(e))
    if len(values) != n:
        raise ValueError(f"expected {n} constant values, got {len(values)}")
    it = iter(values)

    def go(node: Expr) -> Expr:
        if isinstance(node, RealConst):
            return node if node.fixed else replace(node, value=next(it))
        if isinstance(node, Apply):
            return replace(node, args=tuple(go(a) for a in node.args))
        return node

    return go(e)
