"""Text -> datum trees with positions: Scheme through Lark, Hy through Hy's reader.

Neither reader evaluates anything: Lark only tokenises and parses, and Hy's reader is given a
fresh `HyReader` that knows only the built-in reader macros (user `defreader`s are never run).
Both produce the same `Datum` tree, which the checker turns into the typed AST.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from importlib.resources import files
from typing import Any

from .errors import DslError, line_of
from .nodes import Span

# Nesting deeper than this is refused by the reader itself, before anything recurses.
MAX_NESTING = 200


@dataclass(frozen=True)
class Datum:
    """One datum. kind: list | vector | symbol | number | bool | string | char | quote | other.

    value: a tuple of Datums for list/vector/quote, the name for symbol, a Python number,
    bool, str; for `other` a short description of what it was (e.g. "a Hy keyword").
    """

    kind: str
    value: Any
    span: Span


@dataclass(frozen=True)
class Comment:
    line: int
    text: str  # the whole comment, from its first ';', trailing blanks removed


def read_datums(text: str, filename: str = "<string>") -> tuple[list[Datum], list[Comment]]:
    """All top-level datums of a file and its ';' comments; `.hy` picks Hy's reader."""
    scan = _scan(text, filename, hy=filename.endswith(".hy"))
    scan.check_nesting()
    if filename.endswith(".hy"):
        return _read_hy(text, filename, scan), scan.comments
    return _read_scheme(scan), scan.comments


# --- comments, strings and brackets: one pass over the raw text -----------------------------


@dataclass
class _Scan:
    text: str
    filename: str
    blanked: str  # block comments replaced by spaces: what the Scheme grammar reads
    skeleton: str  # also strings, characters, |ids| and ';' comments blanked: brackets only
    comments: list[Comment]

    def error(self, pos: int, message: str) -> DslError:
        line = self.text.count("\n", 0, pos) + 1
        col = pos - self.text.rfind("\n", 0, pos)
        return DslError(message, self.filename, line, col, line_of(self.text, line))

    def check_nesting(self) -> None:
        """Refuse absurd nesting with a positioned error, so no later stage blows the stack."""
        depth = 0
        for pos, c in enumerate(self.skeleton):
            if c in "([{":
                depth += 1
                if depth > MAX_NESTING:
                    raise self.error(pos, f"nesting deeper than {MAX_NESTING} levels")
            elif c in ")]}":
                depth -= 1

    def eof_error(self) -> DslError:
        """End of input inside an open list: point at the innermost unclosed bracket."""
        stack = []
        for pos, c in enumerate(self.skeleton):
            if c in "([{":
                stack.append(pos)
            elif c in ")]}" and stack:
                stack.pop()
        if stack:
            opener = self.skeleton[stack[-1]]
            closer = {"(": ")", "[": "]", "{": "}"}[opener]
            return self.error(stack[-1], f"unclosed '{opener}': end of input before its '{closer}'")
        return self.error(len(self.text.rstrip()), "unexpected end of input")


def _scan(text: str, filename: str, hy: bool) -> _Scan:
    """Blank out `#| |#` block comments (they nest), collect `;` line comments, find strings.

    Line and column numbers survive: blanked characters become spaces, newlines stay.
    """
    blanked, skeleton = list(text), list(text)
    comments: list[Comment] = []
    i, n = 0, len(text)

    def blank(a: int, b: int, *outs: list[str]) -> None:
        for out in outs:
            for k in range(a, b):
                if out[k] != "\n":
                    out[k] = " "

    def fail(pos: int, message: str) -> DslError:
        return _Scan(text, filename, text, text, []).error(pos, message)

    def quoted_end(i: int, quote: str, what: str) -> int:
        """Just past the `quote` that closes the one at i (backslash escapes skipped)."""
        j = i + 1
        while j < n and text[j] != quote:
            j += 2 if text[j] == "\\" else 1
        if j >= n:
            raise fail(i, f"unterminated {what}")
        return j + 1

    while i < n:
        c = text[i]
        if c == '"':
            j = quoted_end(i, '"', "string")
            blank(i, j, skeleton)
            i = j
        elif c == ";":
            j = text.find("\n", i)
            j = n if j < 0 else j
            comments.append(Comment(text.count("\n", 0, i) + 1, text[i:j].rstrip()))
            blank(i, j, skeleton)
            i = j
        elif hy:
            i += 1
        elif c == "|":
            j = quoted_end(i, "|", "|identifier|")
            blank(i, j, skeleton)
            i = j
        elif text.startswith("#\\", i):
            blank(i, min(i + 3, n), skeleton)
            i += 3
        elif text.startswith("#;", i):
            i += 2
        elif text.startswith("#|", i):
            start, depth = i, 0
            while i < n:
                if text.startswith("#|", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("|#", i):
                    depth, i = depth - 1, i + 2
                    if depth == 0:
                        break
                else:
                    i += 1
            if depth:
                raise fail(start, "unterminated block comment: '#|' has no matching '|#'")
            blank(start, i, blanked, skeleton)
        else:
            i += 1
    return _Scan(text, filename, "".join(blanked), "".join(skeleton), comments)


# --- Scheme ---------------------------------------------------------------------------------


@cache
def _scheme_parser():
    from lark import Lark

    grammar = files("grammars").joinpath("scheme.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _read_scheme(scan: _Scan) -> list[Datum]:
    from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

    text, filename, blanked = scan.text, scan.filename, scan.blanked
    try:
        tree = _scheme_parser().parse(blanked)
    except UnexpectedEOF:
        raise scan.eof_error() from None
    except UnexpectedCharacters as e:
        ch = blanked[e.pos_in_stream] if e.pos_in_stream < len(blanked) else ""
        msg = _bad_char_message(blanked, e.pos_in_stream, ch)
        raise DslError(msg, filename, e.line, e.column, line_of(text, e.line)) from None
    except UnexpectedInput as e:
        token = getattr(e, "token", None)
        if token is None or token.type == "$END":
            raise scan.eof_error() from None
        msg = f"unexpected {_describe_token(token)}"
        if token.type == "RPAR" or str(token) in (")", "]"):
            msg = f"unexpected '{token}': no list is open here"
        elif token.type == "DOT":
            msg = "unexpected '.': a dot only goes before the last datum of a list"
        raise DslError(msg, filename, token.line, token.column, line_of(text, token.line)) from None
    return _SchemeBuilder(filename, text).build(tree)


def _describe_token(token) -> str:
    return f"'{token}'"


def _bad_char_message(text: str, pos: int, ch: str) -> str:
    if ch == '"':
        return "unterminated string"
    if ch == "#":
        word = text[pos:pos + 12].split()[0] if text[pos:pos + 12].split() else "#"
        return f"unknown '#' syntax '{word}'"
    if ch == "|":
        return "unterminated |identifier|"
    return f"unexpected character {ch!r}"


class _SchemeBuilder:
    """Lark parse tree -> Datums, iteratively (no recursion on nesting depth)."""

    def __init__(self, filename: str, text: str):
        self.filename = filename
        self.text = text

    def span(self, meta) -> Span:
        return Span(self.filename, meta.line, meta.column)

    def build(self, tree) -> list[Datum]:
        from lark import Token, Tree

        # post-order over the tree with an explicit stack
        results: dict[int, Datum | None] = {}
        stack: list[tuple[Any, bool]] = [(tree, False)]
        while stack:
            node, done = stack.pop()
            if isinstance(node, Token):
                continue
            if not done:
                stack.append((node, True))
                stack.extend((c, False) for c in node.children if isinstance(c, Tree))
                continue
            results[id(node)] = self.node(node, results)
        top = results[id(tree)]
        return list(top.value) if top else []

    def kids(self, node, results) -> tuple[Datum, ...]:
        from lark import Token

        out = []
        for c in node.children:
            if isinstance(c, Token):
                continue
            d = results[id(c)]
            if d is not None:
                out.append(d)
        return tuple(out)

    def node(self, node, results) -> Datum | None:
        from lark import Token

        rule = node.data
        if rule == "datum_comment":
            return None
        if rule == "start":
            return Datum("list", self.kids(node, results), Span(self.filename, 1, 1))
        span = self.span(node.meta)
        if rule in ("list", "vector", "bytevector", "dotted_list"):
            kind = {"list": "list", "vector": "vector"}.get(rule, "other")
            if kind == "other":
                what = "a bytevector" if rule == "bytevector" else "a dotted list"
                return Datum("other", what, span)
            return Datum(kind, self.kids(node, results), span)
        if rule == "quoted":
            return Datum("quote", self.kids(node, results), span)
        tok = next(c for c in node.children if isinstance(c, Token))
        text = str(tok)
        if rule == "number":
            try:
                return Datum("number", parse_number(text), span)
            except (ValueError, ZeroDivisionError):
                raise DslError.at(span, f"bad number literal '{text}'", self.text) from None
        if rule == "boolean":
            return Datum("bool", text in ("#t", "#true"), span)
        if rule == "string":
            return Datum("string", text[1:-1], span)
        if rule == "character":
            return Datum("char", text[2:], span)
        if rule == "symbol":
            return Datum("symbol", text, span)
        raise AssertionError(f"unhandled grammar rule {rule}")


def parse_number(text: str) -> int | float | Fraction | complex:
    """The value of an R7RS number literal (exactness prefixes honoured)."""
    radix, exact = 10, None
    while text.startswith("#"):
        p = text[1].lower()
        if p in "xbod":
            radix = {"x": 16, "b": 2, "o": 8, "d": 10}[p]
        else:
            exact = p == "e"
        text = text[2:]
    if text.endswith("i"):
        return complex(text[:-1].replace("inf.0", "inf").replace("nan.0", "nan") + "j"
                       if text[:-1] not in "+-" else text[:-1] + "1j")
    if radix != 10:
        value: Any = Fraction(*(int(x, radix) for x in text.split("/"))) if "/" in text \
            else int(text, radix)
    elif "/" in text:
        value = Fraction(text)
    elif text.lstrip("+-") in ("inf.0", "nan.0"):
        value = float(text.replace(".0", ""))
    elif any(c in text for c in ".eE"):
        value = float(text)
    else:
        value = int(text)
    if exact is True and isinstance(value, float) and math.isfinite(value):
        value = Fraction(value)
    elif exact is False:
        value = float(value)
    if isinstance(value, Fraction) and value.denominator == 1:
        value = int(value)
    return value


# --- Hy -------------------------------------------------------------------------------------


def _read_hy(text: str, filename: str, scan: _Scan) -> list[Datum]:
    import hy.models as m
    from hy.reader import read_many
    from hy.reader.exceptions import LexException, PrematureEndOfInput
    from hy.reader.hy_reader import HyReader

    try:
        forms = list(read_many(text, filename=filename, reader=HyReader()))
    except PrematureEndOfInput:
        raise scan.eof_error() from None
    except LexException as e:
        line, col = e.lineno or 1, e.offset or 1
        msg = str(e.msg).strip().splitlines()[0] if getattr(e, "msg", None) else "syntax error"
        raise DslError(msg.rstrip("."), filename, line, col, line_of(text, line)) from None
    except (ValueError, RecursionError) as e:
        raise DslError(f"cannot read Hy source: {e}", filename, 1, 1, line_of(text, 1)) from None

    def span(model) -> Span:
        return Span(filename, getattr(model, "start_line", 1) or 1,
                    getattr(model, "start_column", 1) or 1)

    def convert(model) -> Datum:
        s = span(model)
        if isinstance(model, m.Expression):
            return Datum("list", tuple(convert(x) for x in model), s)
        if isinstance(model, m.List):
            return Datum("vector", tuple(convert(x) for x in model), s)
        if isinstance(model, m.Symbol):
            name = str(model)
            if name in ("True", "False"):
                return Datum("bool", name == "True", s)
            return Datum("symbol", name, s)
        if isinstance(model, m.Integer):
            return Datum("number", int(model), s)
        if isinstance(model, m.Float):
            return Datum("number", float(model), s)
        if isinstance(model, m.Complex):
            return Datum("number", complex(model), s)
        if isinstance(model, m.String):
            return Datum("string", str(model), s)
        if isinstance(model, m.Keyword):
            return Datum("other", f"the Hy keyword ':{model.name}'", s)
        return Datum("other", f"a Hy {type(model).__name__.lower()}", s)

    return [convert(f) for f in forms]
