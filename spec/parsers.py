"""The two lark grammars, loaded from package data and built as LALR parsers."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Optional

from lark import Lark, Token


@cache
def grammar_text(name: str) -> str:
    return resources.files(__package__).joinpath("grammars", name).read_text()


def lalr(
    name: str, starts: list[str], strict: bool = False, callbacks: Optional[dict[str, Callable[[Token], object]]] = None
) -> Lark:
    # cache=True keeps the LALR tables on disk, keyed by the grammar's hash; strict
    # mode (tests) rebuilds them and fails on any conflict or terminal collision.
    return Lark(
        grammar_text(name),
        parser="lalr",
        start=starts,
        maybe_placeholders=False,
        cache=not strict,
        strict=strict,
        lexer_callbacks=callbacks or {},
    )


# lark types a Token's position Optional (a Token made by hand has none); its lexer sets it on every token.
def tok_line(tok: Token) -> int:
    assert tok.line is not None, "a lexed token has a line"
    return tok.line


def tok_col(tok: Token) -> int:
    assert tok.column is not None, "a lexed token has a column"
    return tok.column
