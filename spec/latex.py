"""Parse the spec's LaTeX with the structural grammar into a flat stream of positioned events."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from typing import Optional, Union, cast

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from .errors import SpecSourceError, source_context
from .parsers import lalr, tok_col, tok_line

# Arity of the spec's own macros as this grammar reads them; spec lint compares
# it with what the macro file (commands.tex) declares.
GRAMMAR_ARITY = {"field": 1, "devicenormative": 3, "drivernormative": 3, "conformance": 2}
KNOWN_MACROS = (
    "section subsection subsubsection paragraph label begin end item field ref nameref "
    "href emph textbf textit texttt devicenormative drivernormative conformance newcommand"
).split()


@cache
def latex_parser(strict: bool = False) -> Lark:
    return lalr("latex.lark", ["chapter", "macros"], strict)


# ---- events -----------------------------------------------------------------


@dataclass
class Heading:
    level: str
    title: str
    line: int
    col: int


@dataclass
class Normative:
    kind: str  # devicenormative | drivernormative
    level: str
    title: str
    label: str
    line: int
    col: int


@dataclass
class Conformance:
    level: str
    title: str
    line: int
    col: int


@dataclass
class Label:
    target: str
    line: int
    col: int


@dataclass
class EnvBegin:
    name: str
    line: int


@dataclass
class EnvEnd:
    name: str
    line: int


@dataclass
class Item:
    label: Optional[str]  # None for a bare \item
    fields: list[str]  # \field{} names inside the label
    line: int
    col: int


@dataclass
class Listing:
    body: str
    body_line: int  # line of the first body character
    line: int


@dataclass
class Text:
    text: str
    line: int
    col: int


@dataclass
class FieldRef:
    name: str
    line: int
    col: int


@dataclass
class Ref:
    target: str
    line: int
    col: int
    named: bool = False


@dataclass
class Href:
    url: str
    text: str
    line: int
    col: int


@dataclass
class BareGroup:
    """A {group} standing in running text: often a missing macro name."""

    text: str
    prev_word: str
    line: int
    col: int


@dataclass
class ParBreak:
    line: int


@dataclass
class NewCommand:
    name: str
    arity: int
    line: int


Event = Union[
    Heading,
    Normative,
    Conformance,
    Label,
    EnvBegin,
    EnvEnd,
    Item,
    Listing,
    Text,
    FieldRef,
    Ref,
    Href,
    BareGroup,
    ParBreak,
    NewCommand,
]


@dataclass
class TexDocument:
    path: str
    text: str
    events: list[Event] = field(default_factory=list)


# ---- parsing ------------------------------------------------------------------


def parse_tex(text: str, path: str, start: str = "chapter") -> TexDocument:
    """Parse a chapter (or the macro file with start='macros'); raise SpecSourceError."""
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise SpecSourceError(
            path, line, 1, "binary data (NUL byte) in a LaTeX source", hint="point --spec-dir at a virtio-spec checkout"
        )
    try:
        tree = latex_parser().parse(text, start=start)
    except UnexpectedInput as exc:
        raise _translate(exc, text, path) from None
    doc = TexDocument(path, text)
    _walk(tree, doc.events)
    _check_envs(doc)
    return doc


def _translate(exc: UnexpectedInput, text: str, path: str) -> SpecSourceError:
    line, col = getattr(exc, "line", 0) or 0, getattr(exc, "column", 0) or 0
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            return _unexpected_end(text, path)
        if tok.type == "UNKNOWN_CMD":
            return SpecSourceError(
                path,
                line,
                col,
                f"unknown macro {tok.value}",
                source_context(text, line, col, len(tok)),
                "the structural grammar knows: " + ", ".join("\\" + m for m in KNOWN_MACROS),
            )
        expected = ", ".join(sorted(_pretty(t) for t in exc.expected)[:8])
        return SpecSourceError(
            path,
            line,
            col,
            f"unexpected {_pretty(tok.type)} {tok.value!r}; expected {expected}",
            source_context(text, line, col, max(len(tok), 1)),
        )
    if isinstance(exc, UnexpectedEOF):
        return _unexpected_end(text, path)
    if isinstance(exc, UnexpectedCharacters):
        pos = cast(int, exc.pos_in_stream)  # UnexpectedCharacters sets it; lark types the base class's None
        ch = text[pos] if pos < len(text) else "?"
        if text.startswith("\\begin{lstlisting}", pos):
            return SpecSourceError(
                path,
                line,
                col,
                "\\begin{lstlisting} is never closed",
                source_context(text, line, col, 18),
                "the file may be truncated: add \\end{lstlisting}",
            )
        return SpecSourceError(path, line, col, f"unexpected character {ch!r}", source_context(text, line, col))
    return SpecSourceError(path, line, col, str(exc).splitlines()[0])


_PRETTY = {
    "RBRACE": "'}'",
    "LBRACE": "'{'",
    "RSQB": "']'",
    "LSQB": "'['",
    "WORD": "text",
    "WS": "space",
    "PARBREAK": "blank line",
    "$END": "end of file",
}


def _pretty(name: str) -> str:
    return _PRETTY.get(name, name.lower())


def _unexpected_end(text: str, path: str) -> SpecSourceError:
    """Name the construct left open: the last unclosed \\begin or brace."""
    stack: list[tuple[str, int, int]] = []
    skip_to = 0
    for m in re.finditer(r"\\(begin|end)\{([^}]*)\}|(?<!\\)([{}])|%[^\n]*", text):
        if m.group(0).startswith("%") or m.start() < skip_to:
            continue
        line = text.count("\n", 0, m.start()) + 1
        col = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
        if m.group(1) == "begin" and m.group(2) == "lstlisting":
            close = text.find("\\end{lstlisting}", m.end())
            again = text.find("\\begin{lstlisting}", m.end())
            if close < 0 or 0 <= again < close:  # never closed; its braces are C, not LaTeX
                stack.append((m.group(0), line, col))
                break
            skip_to = close
        elif m.group(1) == "begin":
            stack.append((f"\\begin{{{m.group(2)}}}", line, col))
        elif m.group(1) == "end":
            while stack and stack[-1][0] in "{":
                stack.pop()
            if stack:
                stack.pop()
        elif m.group(3) == "{":
            stack.append(("{", line, col))
        elif m.group(3) == "}" and stack and stack[-1][0] == "{":
            stack.pop()
    end_line = text.count("\n") + 1
    if stack:
        what, line, col = stack[-1]
        return SpecSourceError(
            path,
            line,
            col,
            f"{what} opened here is never closed (end of file at line {end_line})",
            source_context(text, line, col, len(what)),
            "the file may be truncated",
        )
    return SpecSourceError(path, end_line, 1, "unexpected end of file", hint="the file may be truncated")


def _check_envs(doc: TexDocument) -> None:
    for ev in doc.events:
        if isinstance(ev, EnvBegin) and ev.name == "lstlisting":  # not lexed as a verbatim block
            raise SpecSourceError(
                doc.path,
                ev.line,
                1,
                "\\begin{lstlisting} is never closed before the next one",
                source_context(doc.text, ev.line, 1, 18),
                "add the missing \\end{lstlisting}",
            )
        if isinstance(ev, EnvEnd) and ev.name.startswith("!"):
            begin, end = ev.name[1:].split("|")
            raise SpecSourceError(
                doc.path,
                ev.line,
                1,
                f"\\end{{{end}}} closes \\begin{{{begin}}}",
                source_context(doc.text, ev.line, 1),
                "fix the environment name",
            )


def _tok_text(node: Union[Tree, Token]) -> str:
    """Plain text of a subtree: words with whitespace folded, macros reduced to their text."""
    if isinstance(node, Token):
        if node.type in ("WS", "PARBREAK"):
            return " "
        if node.type == "ESCAPED":
            return node.value[1:] if node.value != "\\\\" else " "
        if node.type == "TILDE":
            return " "
        if node.type in ("LBRACE", "RBRACE"):
            return ""
        return node.value
    if node.data in ("field", "style", "ref", "nameref", "label"):
        return _tok_text(node.children[1])
    if node.data == "href":
        return _tok_text(node.children[2])
    return "".join(_tok_text(c) for c in node.children)


def group_text(node: Tree) -> str:
    return " ".join(_tok_text(node).split())


def _first_token(node: Union[Tree, Token]) -> Token:
    while isinstance(node, Tree):
        node = node.children[0]
    return node


def _walk(node: Tree, out: list[Event], prev_word: str = "") -> None:
    prev = prev_word
    for child in node.children:
        if isinstance(child, Token):
            t = child.type
            if t == "WORD":
                out.append(Text(child.value, tok_line(child), tok_col(child)))
                prev = child.value
            elif t in ("WS", "TILDE"):
                out.append(Text(" ", tok_line(child), tok_col(child)))
                prev = ""
            elif t == "PARBREAK":
                out.append(ParBreak(tok_line(child)))
                prev = ""
            elif t == "ESCAPED":
                out.append(Text(_tok_text(child), tok_line(child), tok_col(child)))
            elif t in ("LSQB", "RSQB"):
                out.append(Text(child.value, tok_line(child), tok_col(child)))
            continue
        kind = child.data
        head = cast(Token, child.children[0])
        if kind == "heading":
            out.append(
                Heading(
                    head.value.lstrip("\\").rstrip("*"), group_text(child.children[1]), tok_line(head), tok_col(head)
                )
            )
        elif kind == "normative":
            level = cast(Token, child.children[2]).value.lstrip("\\").rstrip("*")
            out.append(
                Normative(
                    head.value.lstrip("\\"),
                    level,
                    group_text(child.children[4]),
                    group_text(child.children[5]),
                    tok_line(head),
                    tok_col(head),
                )
            )
        elif kind == "conformance":
            level = cast(Token, child.children[2]).value.lstrip("\\").rstrip("*")
            out.append(Conformance(level, group_text(child.children[4]), tok_line(head), tok_col(head)))
        elif kind == "label":
            out.append(Label(group_text(child.children[1]), tok_line(head), tok_col(head)))
        elif kind == "env":
            begin_name = cast(Token, child.children[2]).value
            end_name = cast(Token, child.children[-2]).value
            out.append(EnvBegin(begin_name, tok_line(head)))
            inner = Tree("body", child.children[4:-4])
            _walk(inner, out)
            end_tok = cast(Token, child.children[-4])
            name = end_name if end_name == begin_name else f"!{begin_name}|{end_name}"
            out.append(EnvEnd(name, tok_line(end_tok)))
        elif kind == "listing":
            raw = head.value
            start = raw.index("}") + 1
            body = raw[start : raw.rindex("\\end{lstlisting}")]
            out.append(Listing(body, tok_line(head) + raw.count("\n", 0, start), tok_line(head)))
        elif kind == "item":
            if head.type == "ITEM":
                out.append(Item(None, [], tok_line(head), tok_col(head)))
            else:
                label_tree = Tree("item_label", child.children[1:-1])
                fields = [group_text(f.children[1]) for f in label_tree.iter_subtrees_topdown() if f.data == "field"]
                out.append(Item(group_text(label_tree), fields, tok_line(head), tok_col(head)))
        elif kind == "field":
            out.append(FieldRef(group_text(child.children[1]), tok_line(head), tok_col(head)))
            prev = ""
        elif kind in ("ref", "nameref"):
            out.append(Ref(group_text(child.children[1]), tok_line(head), tok_col(head), named=kind == "nameref"))
        elif kind == "href":
            text = group_text(child.children[2])
            out.append(Href(_tok_text(child.children[1]).strip(), text, tok_line(head), tok_col(head)))
            out.append(Text(text, tok_line(head), tok_col(head)))
        elif kind == "style":
            _walk(child.children[1], out, prev)
        elif kind == "newcommand":
            name_tok = cast(Token, child.children[2])
            arity = 0
            if len(child.children) > 5 and isinstance(child.children[4], Token) and child.children[4].type == "LSQB":
                digits = cast(Token, child.children[5]).value
                arity = int(digits) if digits.isdigit() else -1
            out.append(NewCommand(name_tok.value.lstrip("\\"), arity, tok_line(head)))
        elif kind == "group":
            tok = _first_token(child)
            text = group_text(child)
            out.append(BareGroup(text, prev, tok_line(tok), tok_col(tok)))
            if not prev.endswith("field"):  # else the builder recovers it as a \field
                _walk(child, out)
        elif kind == "raw_group":
            continue  # macro-file material outside \newcommand: nothing to extract
        else:  # pragma: no cover - grammar and walker are kept in step by tests
            raise AssertionError(f"unhandled LaTeX node {kind}")
