"""Datums -> the typed AST, checking names, arity, types, constant domains and caps.

Every rule is one `require(condition, datum, message)` away from a positioned `DslError`, so
the evaluator and the GP bridge can assume well-formed programs.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from fractions import Fraction

from .errors import DslError, line_of
from .nodes import (
    Apply,
    BoolConst,
    CountConst,
    Definition,
    Expr,
    RealConst,
    WeightsConst,
    height,
    size,
    type_of,
)
from .reader import Comment, Datum, normalize_newlines, read_datums
from .registry import MAX_COUNT, PRIMITIVES, SPECIAL_FORMS, Arg, Limits
from .types import Type

DEFINE_FORMS = ("define", "setv")  # Scheme, Hy


def read(text: str | bytes, filename: str = "<string>", limits: Limits | None = None
         ) -> tuple[Definition, ...]:
    """Read and check a whole program file; raises `DslError` on any problem."""
    text = _decode(text, filename)
    limits = limits or Limits()
    datums, comments = read_datums(text, filename, limits.max_weights)
    checker = _Checker(text, filename, limits)
    defs = checker.program(datums, comments)
    checker.raise_errors()
    return defs


def read_expr(text: str, expected: Type = Type.LOGITS, filename: str = "<expr>",
              limits: Limits | None = None) -> Expr:
    """Read one expression of type `expected` (e.g. a Logits expression for `logits_fn`)."""
    text = _decode(text, filename)
    limits = limits or Limits()
    datums, _ = read_datums(text, filename, limits.max_weights)
    checker = _Checker(text, filename, limits)
    if len(datums) != 1:
        where = datums[1].span if len(datums) > 1 else None
        raise DslError.at(where, f"expected one expression, found {len(datums)}", text) \
            if where else DslError("expected one expression, found none", filename)
    try:
        return checker.expr(datums[0], expected, None)
    except _Reported:
        checker.raise_errors()
        raise


def _decode(text: str | bytes, filename: str) -> str:
    """UTF-8 text with LF line ends (CRLF and CR read as line ends everywhere); a leading
    byte order mark, which some editors write, is dropped."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            before = _decode(text[:e.start].decode("utf-8"), filename)
            line = before.count("\n") + 1
            col = len(before) - before.rfind("\n")  # in characters, as the reader counts
            shown = line_of(_decode(text.decode("utf-8", errors="replace"), filename), line)
            raise DslError(f"file is not valid UTF-8 (byte 0x{text[e.start]:02x})",
                           filename, line, col, shown) from None
    return normalize_newlines(text.removeprefix("\ufeff"))


def within_caps(expr: Expr, limits: Limits) -> bool:
    """Whether every product of nested capped counts in `expr` (the decodes per answer of
    nested `vote`/`best-of`) is within its cap: the rule `read` applies, for programs that
    are built rather than read (the GP's)."""
    stack: list[tuple[Expr, dict[str, int]]] = [(expr, {})]
    while stack:
        node, products = stack.pop()
        if not isinstance(node, Apply):
            continue
        inner = dict(products)
        for arg, a in zip(PRIMITIVES[node.op].args, node.args, strict=True):
            if arg.cap and isinstance(a, CountConst):
                inner[arg.cap] = inner.get(arg.cap, 1) * a.value
                if inner[arg.cap] > getattr(limits, arg.cap):
                    return False
        stack.extend((a, inner) for a in node.args)
    return True


def _nearest(name: str, candidates) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return ("; did you mean " + ", ".join(f"'{c}'" for c in close) + "?") if close else ""


def _what(d: Datum) -> str:
    """How a datum is named in an error message."""
    return {
        "list": "an application" if d.value else "an empty list '()'",
        "vector": "a vector",
        "symbol": f"'{d.value}'",
        "number": f"the number {_show_number(d.value)}",
        "bool": "a boolean",
        "string": "a string",
        "char": "a character",
        "quote": "a quoted datum",
    }.get(d.kind, str(d.value))


def _to_float(v) -> float:
    """A real number's float value; inf where it is too large for a float."""
    try:
        return float(v) if not isinstance(v, Fraction) else v.numerator / v.denominator
    except OverflowError:
        return math.inf


def _show_number(v) -> str:
    return repr(v) if isinstance(v, float) else str(v)


class _Reported(Exception):
    """A part of the program failed and its errors are recorded: skip the enclosing form."""


class _Checker:
    """Checks on past an error: each definition, and each argument of an application, is
    checked on its own, so one pass finds every error (the first is raised, carrying the
    others)."""

    def __init__(self, text: str, filename: str, limits: Limits):
        self.define = "setv" if filename.endswith(".hy") else "define"
        self.text = text
        self.filename = filename
        self.limits = limits
        self.errors: list[DslError] = []
        # cap name -> product of the capped counts enclosing the node being checked (nested
        # `vote`/`best-of` multiply: the cap bounds the decodes per answer, not each count)
        self.products: dict[str, int] = {}

    def raise_errors(self) -> None:
        if self.errors:
            first = self.errors[0]
            first.others = tuple(self.errors[1:])
            raise first

    def fail(self, d: Datum, message: str) -> DslError:
        return DslError.at(d.span, message, self.text)

    def require(self, ok: bool, d: Datum, message: str) -> None:
        if not ok:
            raise self.fail(d, message)

    # --- definitions ---------------------------------------------------------------------

    def program(self, datums: list[Datum], comments: list[Comment]) -> tuple[Definition, ...]:
        defs: list[Definition] = []
        seen: dict[str, Datum] = {}
        for d in datums:
            try:
                definition = self.definition(d)
            except DslError as e:
                self.errors.append(e)
                continue
            except _Reported:
                continue
            if definition.name in seen:
                first = seen[definition.name].span
                self.errors.append(self.fail(d, f"'{definition.name}' is already defined at "
                                                f"line {first.line}"))
                continue
            seen[definition.name] = d
            defs.append(definition)
        return tuple(self.attach_comments(defs, datums, comments))

    def attach_comments(self, defs, datums, comments):
        """Every ';' comment goes to the definition it precedes or sits in (none are lost);
        comments after the last definition join that one's block."""
        if not defs:
            return defs
        ends = [_end_line(d) for d in datums]
        out, k = [], 0
        for i, definition in enumerate(defs):
            mine = []
            while k < len(comments) and (comments[k].line <= ends[i] or i == len(defs) - 1):
                mine.append(comments[k].text)
                k += 1
            out.append(Definition(definition.name, definition.body, tuple(mine),
                                  definition.span))
        return out

    def definition(self, d: Datum) -> Definition:
        self.require(d.kind == "list" and d.value, d,
                     f"expected a definition '({self.define} NAME EXPR)', found {_what(d)}")
        head, *rest = d.value
        if head.kind != "symbol" or head.value not in DEFINE_FORMS:
            found = f"'({head.value} ...)'" if head.kind == "symbol" else _what(d)
            raise self.fail(d, f"expected a definition '({self.define} NAME EXPR)', "
                               f"found {found}")
        self.require(len(rest) == 2, d,
                     f"'{head.value}' takes a name and one expression, found {len(rest)} "
                     f"part{'s' if len(rest) != 1 else ''}")
        name, body = rest
        self.require(name.kind == "symbol", name,
                     f"a definition's name must be a symbol, found {_what(name)}")
        self.require(name.value not in PRIMITIVES and name.value not in SPECIAL_FORMS, name,
                     f"'{name.value}' is a primitive and cannot be redefined")
        deepest = _deepest(body)
        self.require(deepest[1] <= self.limits.max_height, deepest[0],
                     f"program height exceeds the cap max_height = {self.limits.max_height}")
        expr = self.expr(body, Type.DECODER, None)
        n, h = size(expr), height(expr)
        self.require(n <= self.limits.max_size, body,
                     f"program size {n} exceeds the cap max_size = {self.limits.max_size}")
        self.require(h <= self.limits.max_height, body,
                     f"program height {h} exceeds the cap max_height = {self.limits.max_height}")
        return Definition(name.value, expr, (), d.span)

    # --- expressions ---------------------------------------------------------------------

    def expr(self, d: Datum, expected: Type, slot: Slot | None) -> Expr:
        """Check datum `d` where a value of type `expected` is needed (in slot `slot`)."""
        if d.kind == "list":
            return self.application(d, expected, slot)
        if d.kind == "symbol":
            return self.symbol(d, expected)
        if d.kind == "number":
            return self.number(d, expected, slot)
        if d.kind == "bool":
            self.require(expected is Type.BOOL, d, f"expected {expected}, found a boolean")
            return BoolConst(bool(d.value), d.span)
        if d.kind == "vector":
            return self.weights(d, expected, slot)
        raise self.fail(d, f"expected {expected}, found {_what(d)}, which has no meaning "
                           "in a decoding program")

    def symbol(self, d: Datum, expected: Type) -> Expr:
        name = d.value
        prim = PRIMITIVES.get(name)
        if prim is None:
            if name in SPECIAL_FORMS:
                raise self.fail(d, f"'{name}' is a special form and must be applied")
            raise self.fail(d, f"unknown name '{name}'" + _nearest(name, PRIMITIVES))
        if prim.args:
            raise self.fail(d, f"'{name}' is a primitive of {len(prim.args)} argument"
                               f"{'s' if len(prim.args) != 1 else ''}; write {prim.usage()}")
        node = Apply(name, (), d.span)
        self.require(prim.returns is expected, d, f"expected {expected}, found '{name}' "
                                                  f"of type {prim.returns}")
        return node

    def application(self, d: Datum, expected: Type, slot: Slot | None) -> Expr:
        self.require(bool(d.value), d, f"expected {expected}, found an empty list '()'")
        head, *args = d.value
        self.require(head.kind == "symbol", head,
                     f"expected a primitive name at the head of an application, "
                     f"found {_what(head)}")
        name = head.value
        if name == "fixed":
            return self.fixed(d, args, expected, slot)
        if name in DEFINE_FORMS:
            raise self.fail(d, f"'{name}' is only allowed at the top level")
        prim = PRIMITIVES.get(name)
        if prim is None:
            raise self.fail(head, f"unknown primitive '{name}'" + _nearest(name, PRIMITIVES))
        if not prim.args:
            raise self.fail(d, f"'{name}' takes no arguments; write it bare, without parentheses")
        self.require(len(args) == len(prim.args), d,
                     f"'{name}' takes {len(prim.args)} argument"
                     f"{'s' if len(prim.args) != 1 else ''} {prim.usage()}, found {len(args)}")
        self.require(prim.returns is expected, d,
                     f"expected {expected}, found ({name} ...) of type {prim.returns}")
        checked, failed = [], False
        outer = dict(self.products)
        for a, arg in zip(args, prim.args, strict=True):
            try:
                checked.append(self.expr(a, arg.type, Slot(name, arg)))
            except DslError as e:
                self.errors.append(e)
                failed = True
            except _Reported:
                failed = True
            else:  # a capped count multiplies the work of the arguments after it
                if arg.cap and isinstance(checked[-1], CountConst):
                    self.products[arg.cap] = self.products.get(arg.cap, 1) * checked[-1].value
        self.products = outer
        if failed:
            raise _Reported
        return Apply(name, tuple(checked), d.span)

    def fixed(self, d: Datum, args: list[Datum], expected: Type, slot: Slot | None) -> Expr:
        self.require(expected is Type.REAL, d, f"expected {expected}, found (fixed ...), "
                                               "which is a Real constant")
        self.require(len(args) == 1 and args[0].kind == "number", d,
                     "'fixed' takes one number: (fixed 0.7)")
        const = self.number(args[0], Type.REAL, slot)
        return RealConst(const.value, True, d.span)

    def number(self, d: Datum, expected: Type, slot: Slot | None) -> Expr:
        v = d.value
        shown = _show_number(v)
        if isinstance(v, complex):
            raise self.fail(d, f"expected {expected}, found the complex number {shown}")
        if expected is Type.COUNT:
            self.require(isinstance(v, int), d,
                         f"expected a Count (a positive integer), found {shown}")
            self.require(v >= 1, d, f"a Count must be >= 1, found {shown}")
            self.require(v <= MAX_COUNT, d, f"a Count must be at most {MAX_COUNT} (engines "
                                            f"read it as a 32-bit integer), found {shown}")
            cap = slot.arg.cap if slot else None
            if cap:
                limit, outer = getattr(self.limits, cap), self.products.get(cap, 1)
                self.require(v <= limit, d, f"{v} exceeds the cap {cap} = {limit}")
                self.require(outer * v <= limit, d,
                             f"nested counts multiply to {outer} x {v} = {outer * v}, which "
                             f"exceeds the cap {cap} = {limit} (it bounds their product)")
            return CountConst(int(v), d.span)
        if expected is Type.REAL:
            x = _to_float(v)
            self.require(math.isfinite(x), d, f"a Real constant must be finite, found {shown}")
            dom = slot.arg.domain if slot else None
            if dom is not None:
                self.require(dom.contains(x), d,
                             f"{slot} must be {dom.describe()}, found {shown}")
            return RealConst(x, False, d.span)
        raise self.fail(d, f"expected {expected}, found the number {shown}")

    def weights(self, d: Datum, expected: Type, slot: Slot | None) -> Expr:
        self.require(expected is Type.WEIGHTS, d, f"expected {expected}, found a vector")
        values = []
        for item in d.value:
            self.require(item.kind == "number" and not isinstance(item.value, complex), item,
                         f"a Weights vector holds real numbers, found {_what(item)}")
            x = _to_float(item.value)
            self.require(math.isfinite(x), item, f"weights must be finite, found {item.value}")
            values.append(x)
        self.require(bool(values), d, "a Weights vector needs at least one entry")
        self.require(len(values) <= self.limits.max_weights, d,
                     f"{len(values)} weights exceed the cap max_weights = "
                     f"{self.limits.max_weights}")
        return WeightsConst(tuple(values), d.span)


@dataclass(frozen=True)
class Slot:
    """An argument slot of a particular application, for messages: "top-p's p"."""

    owner: str
    arg: Arg

    def __str__(self) -> str:
        return f"{self.arg.name} of {self.owner}"


def _deepest(d: Datum) -> tuple[Datum, int]:
    """The first most deeply nested datum under `d` and its depth (iteratively)."""
    best, stack = (d, 0), [(d, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > best[1]:
            best = (node, depth)
        if node.kind in ("list", "vector", "quote"):
            # an application's head is not a node of the program tree
            kids = node.value[1:] if node.kind == "list" else node.value
            stack.extend((k, depth + 1) for k in reversed(kids))
    return best


def _end_line(d: Datum) -> int:
    """The last line a datum's text reaches (its deepest-rightmost descendant's start)."""
    node = d
    while node.kind in ("list", "vector", "quote") and node.value:
        node = node.value[-1]
    return node.span.line


__all__ = ["read", "read_expr", "type_of", "within_caps"]
