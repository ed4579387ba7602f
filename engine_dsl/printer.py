"""Canonical printers: the typed AST -> Scheme or Hy source.

The output is a function of the AST alone, so printing is idempotent and `read(print(p)) == p`.
A form stays on one line when it fits in `WIDTH` columns; otherwise its head and first argument
share a line and the other arguments line up under the first. Floats print as Python's
shortest round-trip repr. Each definition's comment block is printed above it, verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass

from .nodes import Apply, BoolConst, CountConst, Definition, Expr, RealConst, WeightsConst

WIDTH = 88


@dataclass(frozen=True)
class _Dialect:
    define: str
    true: str
    false: str
    vector_open: str
    vector_close: str


SCHEME = _Dialect("define", "#t", "#f", "#(", ")")
HY = _Dialect("setv", "True", "False", "[", "]")


def to_scheme(defs: tuple[Definition, ...] | list[Definition]) -> str:
    """Canonical Scheme text of a program (definitions separated by one blank line)."""
    return _program(defs, SCHEME)


def to_hy(defs: tuple[Definition, ...] | list[Definition]) -> str:
    """Canonical Hy text of a program."""
    return _program(defs, HY)


def expr_to_scheme(e: Expr) -> str:
    return _expr(e, 0, SCHEME)


def expr_to_hy(e: Expr) -> str:
    return _expr(e, 0, HY)


def format_real(x: float) -> str:
    """Shortest text that reads back to exactly `x`."""
    return repr(float(x))


def _program(defs, dialect: _Dialect) -> str:
    return "\n".join(_definition(d, dialect) for d in defs)


def _definition(d: Definition, dialect: _Dialect) -> str:
    lines = list(d.comments)
    head = f"({dialect.define} {d.name} "
    flat = _flat(d.body, dialect)
    if len(head) + len(flat) + 1 <= WIDTH:
        lines.append(f"{head}{flat})")
    else:
        lines.append(f"({dialect.define} {d.name}")
        lines.append("  " + _expr(d.body, 2, dialect) + ")")
    return "\n".join(lines) + "\n"


def _flat(e: Expr, dialect: _Dialect) -> str:
    if isinstance(e, RealConst):
        return f"(fixed {format_real(e.value)})" if e.fixed else format_real(e.value)
    if isinstance(e, CountConst):
        return str(e.value)
    if isinstance(e, BoolConst):
        return dialect.true if e.value else dialect.false
    if isinstance(e, WeightsConst):
        inner = " ".join(format_real(v) for v in e.values)
        return f"{dialect.vector_open}{inner}{dialect.vector_close}"
    if isinstance(e, Apply):
        if not e.args:
            return e.op
        return "(" + " ".join([e.op, *(_flat(a, dialect) for a in e.args)]) + ")"
    raise TypeError(f"not an expression: {e!r}")


def _expr(e: Expr, indent: int, dialect: _Dialect) -> str:
    """`e` printed starting at column `indent` (continuation lines are indented to match)."""
    flat = _flat(e, dialect)
    if indent + len(flat) <= WIDTH:
        return flat
    if isinstance(e, WeightsConst):
        return _fill(e, indent, dialect)
    if not isinstance(e, Apply) or not e.args:
        return flat
    col = indent + len(e.op) + 2
    parts = [_expr(a, col, dialect) for a in e.args]
    return f"({e.op} " + ("\n" + " " * col).join(parts) + ")"


def _fill(w: WeightsConst, indent: int, dialect: _Dialect) -> str:
    """A long vector, filled line by line, continuation lines aligned after its opener."""
    col = indent + len(dialect.vector_open)
    lines, line = [], ""
    for item in map(format_real, w.values):
        if line and col + len(line) + 1 + len(item) > WIDTH - 1:
            lines.append(line)
            line = item
        else:
            line = f"{line} {item}" if line else item
    lines.append(line)
    return dialect.vector_open + ("\n" + " " * col).join(lines) + dialect.vector_close
