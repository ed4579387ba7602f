"""Text -> datum trees with positions: Scheme through Lark, Hy through Hy's reader.

Neither reader evaluates anything: Lark only tokenises and parses, and Hy's reader is given a
fresh `HyReader` that knows only the built-in reader macros (user `defreader`s are never run).
Both produce the same `Datum` tree, which the checker turns into the typed AST.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from importlib.resources import files
from typing import Any

from .errors import DslError, line_of
from .nodes import Span

# Caps that keep reading linear and bounded (DESIGN §6), applied while reading, before any
# later stage could recurse on nesting or scan a huge token more than once.
MAX_NESTING = 200  # brackets open at once
MAX_TOKEN = 1024  # characters of one symbol, number or string
MAX_ITEMS = 4096  # datums in one list or vector (the default `Limits.max_weights`)
MAX_CHARS = 4 * 1024 * 1024  # characters of one file

_HEX_ESCAPE = re.compile(r"\\x[0-9a-fA-F]+;")  # inside a Scheme identifier: `a\x41;`
_SCHEME_SPECIAL = re.compile(r'[";|\\#]')  # where a string, comment, |id|, escape may start
_HY_SPECIAL = re.compile(r'[";]')
_NOT_NEWLINE = re.compile(r"[^\n]")
_BRACKET_OR_ATOM = re.compile(r"[()\[\]{}]|(?<![^\s()\[\]{}])[^\s()\[\]{}]")
_LONG_TOKEN = re.compile(r"[^\s()\[\]{}]{" + str(MAX_TOKEN + 1) + ",}")


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
    text: str  # one line of comment, from its first ';', trailing blanks removed


def read_datums(text: str, filename: str = "<string>", max_items: int = MAX_ITEMS
                ) -> tuple[list[Datum], list[Comment]]:
    """All top-level datums of a file and its comments; `.hy` picks Hy's reader.

    Comments are every `;` comment and, as `;`-prefixed lines, every Scheme block comment
    `#| |#` and datum comment `#;`, so that printing a program loses none of them. Line ends
    are LF, CRLF or CR."""
    text = normalize_newlines(text)
    if len(text) > MAX_CHARS:
        raise DslError(f"file of {len(text)} characters exceeds the cap of {MAX_CHARS}",
                       filename)
    scan = _scan(text, filename, hy=filename.endswith(".hy"))
    scan.check_shape(max_items)
    if filename.endswith(".hy"):
        return _read_hy(text, filename, scan), scan.comments
    datums, dropped = _read_scheme(scan)
    return datums, sorted(scan.comments + dropped, key=lambda c: c.line)


def normalize_newlines(text: str) -> str:
    """CRLF and lone CR read as LF (a CR-only file is many lines, not one)."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _comment_lines(line: int, text: str) -> list[Comment]:
    """A block or datum comment's text as `;` comment lines starting at `line`."""
    return [Comment(line + k, f"; {part}".rstrip())
            for k, part in enumerate(text.split("\n"))]


# --- comments, strings and brackets: one pass over the raw text -----------------------------


@dataclass
class _Scan:
    text: str
    filename: str
    blanked: str  # comments replaced by spaces: what the Scheme grammar reads (so the grammar
    # and this scan cannot disagree about where a comment is)
    skeleton: str  # also ';' comments and all but the first character of strings,
    # characters and |ids| blanked: brackets and where each datum starts
    comments: list[Comment]

    def error(self, pos: int, message: str) -> DslError:
        line = self.text.count("\n", 0, pos) + 1
        col = pos - self.text.rfind("\n", 0, pos)
        return DslError(message, self.filename, line, col, line_of(self.text, line))

    def check_shape(self, max_items: int) -> None:
        """Refuse absurd nesting, tokens and lists with a positioned error, so no later stage
        blows the stack or does more than linear work."""
        long = _LONG_TOKEN.search(self.skeleton)
        if long:
            raise self.error(long.start(), f"a token longer than {MAX_TOKEN} characters")
        stack: list[list[int]] = []  # [opening position, items so far]
        sk, datum_start = self.skeleton, 0
        for m in _BRACKET_OR_ATOM.finditer(sk):
            pos, c = m.start(), m.group()
            starts = c not in ")]}" and (pos == 0 or sk[pos - 1].isspace()
                                         or sk[pos - 1] in "()[]{}")
            if starts:
                datum_start = pos
                if stack:
                    stack[-1][1] += 1
                    if stack[-1][1] > max_items:
                        raise self.error(stack[-1][0], f"more than {max_items} items in one "
                                                       f"form (the cap max_weights = {max_items})")
            if c in "([{":
                stack.append([datum_start, 0])  # `#(` starts at its '#'

                if len(stack) > MAX_NESTING:
                    raise self.error(pos, f"nesting deeper than {MAX_NESTING} levels")
            elif c in ")]}" and stack:
                stack.pop()

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
    """Blank out `#| |#` block comments (they nest), collect comments, find strings: the
    tokens the grammar reads, in the same order (a `;` ending a hex escape in an identifier
    starts no comment). Line and column numbers survive: blanked characters become spaces."""
    comments: list[Comment] = []
    i, n = 0, len(text)
    line, line_pos = 1, 0  # the line of position line_pos, advanced as the scan moves on
    hidden: list[tuple[int, int, bool]] = []  # (start, end, also from the grammar), in order

    def line_at(pos: int) -> int:
        nonlocal line, line_pos
        line += text.count("\n", line_pos, pos)
        line_pos = pos
        return line

    def blank(a: int, b: int, grammar: bool = False) -> None:
        hidden.append((a, b, grammar))

    def blanked(grammar: bool) -> str:
        """The text with the hidden ranges (only those `grammar` hides, if set) as spaces."""
        out, last = [], 0
        for a, b, g in hidden:
            if g or not grammar:
                out += [text[last:a], _NOT_NEWLINE.sub(" ", text[a:b])]
                last = b
        out.append(text[last:])
        return "".join(out)

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

    special = _HY_SPECIAL if hy else _SCHEME_SPECIAL
    while (m := special.search(text, i)) is not None:
        i = m.start()
        c = text[i]
        if c == '"':
            j = quoted_end(i, '"', "string")
            blank(i + 1, j)
            i = j
        elif c == ";":
            j = text.find("\n", i)
            j = n if j < 0 else j
            comments.append(Comment(line_at(i), text[i:j].rstrip()))
            blank(i, j, grammar=True)
            i = j
        elif c == "|":
            j = quoted_end(i, "|", "|identifier|")
            blank(i + 1, j)
            i = j
        elif c == "\\" and (m := _HEX_ESCAPE.match(text, i)):
            i = m.end()
        elif text.startswith("#\\", i):
            blank(i + 1, min(i + 3, n))
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
            comments.extend(_comment_lines(line_at(start), text[start:i]))
            blank(start, i, grammar=True)
        else:
            i += 1
    return _Scan(text, filename, blanked(grammar=True), blanked(grammar=False), comments)


# --- Scheme ---------------------------------------------------------------------------------


@cache
def _scheme_parser():
    from lark import Lark

    grammar = files("grammars").joinpath("scheme.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False)


def _read_scheme(scan: _Scan) -> tuple[list[Datum], list[Comment]]:
    """The datums of Scheme source, and its datum comments `#; datum` as comment lines."""
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
    builder = _SchemeBuilder(filename, text)
    return builder.build(tree), builder.datum_comments()


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
        self.skipped: list[tuple[int, int, int]] = []  # datum comments: (start, end, line)

    def datum_comments(self) -> list[Comment]:
        """The outermost datum comments' text, as comment lines."""
        out, reach = [], -1
        for start, end, line in sorted(self.skipped, key=lambda s: (s[0], -s[1])):
            if start >= reach:
                out.extend(_comment_lines(line, self.text[start:end]))
                reach = end
        return out

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
            self.skipped.append((node.meta.start_pos, node.meta.end_pos, node.meta.line))
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
            # Hy reads control characters (a NUL) into a symbol; the Scheme grammar, as
            # every printer, does not
            bad = next((k for k, ch in enumerate(name) if unicodedata.category(ch) == "Cc"),
                       None)
            if bad is not None:
                raise DslError(f"unexpected character {name[bad]!r}", filename, s.line,
                               s.col + bad, line_of(text, s.line))
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
