"""The one error type of the language, rendered as `file:line:col: error: ...` + line + caret."""

from __future__ import annotations

from .nodes import Span


class DslError(Exception):
    """A program error at a source position. `str()` is the rendered message. `others`: the
    further errors the checker found in the same file, in source order (`check` shows all)."""

    others: tuple[DslError, ...] = ()

    def __init__(
        self,
        message: str,
        filename: str = "<string>",
        line: int = 1,
        col: int = 1,
        source_line: str | None = None,
    ):
        self.message = message
        self.filename = filename
        self.line = line
        self.col = col
        self.source_line = source_line
        super().__init__(self.render())

    @classmethod
    def at(cls, span: Span | None, message: str, text: str | None = None) -> DslError:
        """An error at `span`, quoting its line from `text` when given."""
        if span is None:
            return cls(message)
        return cls(message, span.filename, span.line, span.col, line_of(text, span.line))

    def render(self) -> str:
        head = f"{self.filename}:{self.line}:{self.col}: error: {self.message}"
        if self.source_line is None:
            return head
        shown = self.source_line.expandtabs(1).rstrip("\r\n")
        caret = " " * (max(self.col, 1) - 1) + "^"
        return f"{head}\n  {shown}\n  {caret}"

    def __str__(self) -> str:
        return self.render()


def line_of(text: str | None, line: int) -> str | None:
    if text is None:
        return None
    lines = text.splitlines()
    return lines[line - 1] if 1 <= line <= len(lines) else None
