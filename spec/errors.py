"""The tool's base error, and errors for unusable spec input, carrying path:line:col and the source context."""

from __future__ import annotations

from dataclasses import dataclass


class Error(Exception):
    """The base of every error virtgpu-conform raises on purpose: unusable input (a spec source, a
    trace, a saved result), a device target that cannot run, a device or protocol that failed the
    tool. Whatever else escapes is a bug in the tool."""


@dataclass
class SpecSourceError(Error):
    """A spec source (tex, macro file or header) that cannot be used as it stands."""

    path: str
    line: int
    col: int
    message: str
    context: str = ""
    hint: str = ""

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}:{self.col}" if self.line else self.path
        text = f"{where}: {self.message}"
        if self.context:
            text += "\n" + self.context
        if self.hint:
            text += "\n" + self.hint
        return text


def source_context(text: str, line: int, col: int, span: int = 1) -> str:
    """The offending line with a caret under the column, as compilers print it."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return ""
    src = lines[line - 1].expandtabs(1)
    caret = " " * max(col - 1, 0) + "^" * max(span, 1)
    return f"  {line:>5} | {src}\n        | {caret}"
