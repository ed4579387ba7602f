"""The one error type of the language, rendered as `file:line:col: error: ...` + line + caret."""

from __future__ import annotations

from .nodes import Span

WINDOW = 200  # characters of a long source line quoted in a message


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
        # a control character would act on the terminal: each shows as one '?'
        shown = "".join(c if c.isprintable() else "?"
                        for c in self.source_line.expandtabs(1).rstrip("\r\n"))
        col = max(self.col, 1) - 1
        if len(shown) > WINDOW:  # quote a window of a long line around the column
            start = min(max(0, col - WINDOW // 2), len(shown) - WINDOW)
            shown = ("..." if start else "") + shown[start:start + WINDOW] + \
                ("..." if start + WINDOW < len(shown) else "")
            col = col - start + (3 if start else 0)
        return f"{head}\n  {shown}\n  {' ' * col}^"

    def __str__(self) -> str:
        return self.render()


def line_of(text: str | None, line: int) -> str | None:
    """Line `line` (1-based) of `text`, whose lines end with LF only."""
    if text is None or line < 1:
        return None
    start = 0
    for _ in range(line - 1):
        start = text.find("\n", start) + 1
        if start == 0:
            return None
    end = text.find("\n", start)
    return text[start:] if end < 0 else text[start:end]
