"""Parse C declarations (spec listings and the uapi header) with the C grammar, keeping file:line."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Optional, Union, cast

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken

from .errors import SpecSourceError, source_context
from .parsers import lalr, tok_col, tok_line


@cache
def c_parser(strict: bool = False) -> Lark:
    # Comments are ignored by the grammar, but the header uses them to say which
    # command a struct belongs to, so the lexer hands them to a sink on the side.
    return lalr("cdecl.lark", ["unit", "define_body"], strict, {"COMMENT": _SINK.append})


_SINK: list[Token] = []


@dataclass
class CMember:
    name: str
    type: str  # primitive spelling as written (le32, __le32, char) or "struct NAME"
    array: Optional[str]  # array length expression as written; "" for a flexible []
    array_value: Optional[int]  # evaluated length, None if unknown or scalar
    line: int
    nested: Optional[CStruct] = None  # a struct defined in place


@dataclass
class CStruct:
    name: str
    members: list[CMember]
    line: int
    col: int


@dataclass
class CEnum:
    name: str
    members: list[tuple[str, int, int]]  # name, value, line
    line: int


@dataclass
class CDefine:
    name: str
    value: Optional[int]  # None when it has no value or the value cannot be evaluated
    text: str
    line: int
    col: int
    stray_semicolon: bool = False


@dataclass
class CComment:
    text: str
    line: int
    end_line: int


@dataclass
class CUnit:
    path: str
    structs: list[CStruct] = field(default_factory=list)  # nested ones included, in order
    enums: list[CEnum] = field(default_factory=list)
    defines: list[CDefine] = field(default_factory=list)
    comments: list[CComment] = field(default_factory=list)
    defects: list[tuple[int, int, str]] = field(default_factory=list)  # line, col, message


def parse_c(text: str, path: str, line_offset: int = 0, constants: Optional[dict[str, int]] = None) -> CUnit:
    """Parse a header or a listing body; line_offset maps its lines into the enclosing file."""
    unit = CUnit(path)
    comments: list[Token] = []
    try:
        tree = _parse_with_comments(text, comments)
    except UnexpectedInput as exc:
        raise _translate(exc, text, path, line_offset) from None
    for tok in comments:
        assert tok.end_line is not None, "a lexed token has an end line"
        unit.comments.append(CComment(tok.value, tok_line(tok) + line_offset, tok.end_line + line_offset))
    env = dict(constants or {})
    _Builder(unit, env, line_offset, path, text).top(tree)
    return unit


def _parse_with_comments(text: str, sink: list[Token]) -> Tree:
    _SINK.clear()
    tree = c_parser().parse(text, start="unit")
    sink.extend(_SINK)
    return tree


def _translate(exc: UnexpectedInput, text: str, path: str, off: int) -> SpecSourceError:
    line, col = getattr(exc, "line", 1) or 1, getattr(exc, "column", 1) or 1
    ctx = source_context(text, line, col)
    if off:  # the context shows the listing's own lines; renumber to the file's
        ctx = ctx.replace(f"{line:>5} |", f"{line + off:>5} |", 1)
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            return SpecSourceError(
                path,
                line + off,
                col,
                "unexpected end of C declarations (a struct or enum is not closed)",
                ctx,
                "the file may be truncated",
            )
        expected = ", ".join(sorted(exc.expected)[:8])
        return SpecSourceError(
            path, line + off, col, f"unexpected {tok.type} {tok.value!r} in C declaration; expected {expected}", ctx
        )
    if isinstance(exc, UnexpectedCharacters):
        pos = cast(int, exc.pos_in_stream)  # UnexpectedCharacters sets it; lark types the base class's None
        ch = text[pos] if pos < len(text) else "?"
        if text.startswith("/*", pos):
            return SpecSourceError(path, line + off, col, "comment is never closed", ctx, "the file may be truncated")
        return SpecSourceError(path, line + off, col, f"unexpected character {ch!r} in C declaration", ctx)
    return SpecSourceError(path, line + off, col, str(exc).splitlines()[0], ctx)


def eval_expr(node: Union[Tree, Token], env: dict[str, int]) -> Optional[int]:
    """Evaluate an integer constant expression; None if a name is unknown."""
    if isinstance(node, Token):
        if node.type == "NUMBER":
            return int(node.value.rstrip("uUlL"), 0)
        return env.get(node.value)
    if node.data == "name_ref":
        return env.get(cast(Token, node.children[0]).value)
    if node.data == "neg":
        v = eval_expr(node.children[1], env)
        return None if v is None else (-v if cast(Token, node.children[0]).value == "-" else v)
    if node.data == "inv":
        v = eval_expr(node.children[1], env)
        return None if v is None else ~v
    if node.data == "atom" or (
        len(node.children) == 3 and isinstance(node.children[0], Token) and node.children[0].type == "LPAR"
    ):
        return eval_expr(node.children[1], env)
    vals = node.children
    acc = eval_expr(vals[0], env)
    for i in range(1, len(vals), 2):
        op, rhs = cast(Token, vals[i]).value, eval_expr(vals[i + 1], env)
        if acc is None or rhs is None:
            return None
        acc = {
            "<<": lambda a, b: a << b,
            ">>": lambda a, b: a >> b,
            "|": lambda a, b: a | b,
            "&": lambda a, b: a & b,
            "+": lambda a, b: a + b,
            "-": lambda a, b: a - b,
            "*": lambda a, b: a * b,
        }[op](acc, rhs)
    return acc


def expr_text(node: Union[Tree, Token]) -> str:
    if isinstance(node, Token):
        return node.value
    parts = [expr_text(c) for c in node.children]
    return " ".join(parts).replace("( ", "(").replace(" )", ")")


class _Builder:
    def __init__(self, unit: CUnit, env: dict[str, int], off: int, path: str, text: str):
        self.unit, self.env, self.off, self.path, self.text = unit, env, off, path, text

    def top(self, tree: Tree) -> None:
        for node in tree.children:
            if isinstance(node, Token):  # PP_OTHER: #include, #ifndef, ...
                continue
            if node.data == "enum_def":
                self.enum(node)
            elif node.data == "struct_decl":
                st = self.struct(node.children[0])
                self._semis(node.children[1], f"struct {st.name}", node.children[0])
            elif node.data == "define":
                self.define(cast(Token, node.children[0]))

    def _semis(self, semis: Tree, what: str, body: Tree) -> None:
        n = len(semis.children)
        if n == 1:
            return
        close = body.children[-1] if isinstance(body.children[-1], Token) else None
        line = (tok_line(close) if close else 0) + self.off
        col = (tok_col(close) + 1) if close else 0
        if n == 0:
            self.unit.defects.append((line, col, f"missing ';' after the definition of {what}"))
        else:
            self.unit.defects.append((line, col, f"stray ';' after the definition of {what}"))

    def enum(self, node: Tree) -> None:
        name = cast(Token, node.children[1]).value
        members: list[tuple[str, int, int]] = []
        nxt = 0
        for en in node.children:
            if not (isinstance(en, Tree) and en.data == "enumerator"):
                continue
            ident = cast(Token, en.children[0])
            if len(en.children) == 3:
                val = eval_expr(en.children[2], self.env)
                if val is None:
                    raise SpecSourceError(
                        self.path,
                        tok_line(ident) + self.off,
                        tok_col(ident),
                        f"cannot evaluate the value of enumerator {ident.value}",
                        source_context(self.text, tok_line(ident), tok_col(ident)),
                    )
                nxt = val
            members.append((ident.value, nxt, tok_line(ident) + self.off))
            self.env[ident.value] = nxt
            nxt += 1
        self.unit.enums.append(CEnum(name, members, tok_line(cast(Token, node.children[0])) + self.off))
        rbrace = next(t for t in reversed(node.children) if isinstance(t, Token) and t.type == "RBRACE")
        self._semis(node.children[-1], f"enum {name}", Tree("enum", [rbrace]))

    def struct(self, node: Tree) -> CStruct:
        head = cast(Token, node.children[0])
        st = CStruct(cast(Token, node.children[1]).value, [], tok_line(head) + self.off, tok_col(head))
        for m in node.children[3:-1]:
            if isinstance(m, Token):
                continue
            if m.data == "define":
                self.define(cast(Token, m.children[0]))
            elif m.data == "member":
                ctype = self._type(m.children[0])
                for decl in m.children[1:]:
                    if isinstance(decl, Tree) and decl.data == "declarator":
                        st.members.append(self._member(ctype, decl))
            elif m.data == "nested_member":
                inner = self.struct(m.children[0])
                member = self._member(f"struct {inner.name}", m.children[1])
                member.nested = inner
                st.members.append(member)
        # nested structs were appended first, so definitions precede their uses
        self.unit.structs.append(st)
        return st

    def _type(self, node: Tree) -> str:
        toks = [cast(Token, t).value for t in node.children]
        return " ".join(toks)

    def _member(self, ctype: str, decl: Tree) -> CMember:
        ident = cast(Token, decl.children[0])
        array, value = None, None
        if len(decl.children) > 1:
            arr = decl.children[1]
            inner = [c for c in arr.children if not (isinstance(c, Token) and c.type in ("LSQB", "RSQB"))]
            if inner:
                array = expr_text(inner[0])
                value = eval_expr(inner[0], self.env)
                if value is None:
                    raise SpecSourceError(
                        self.path,
                        tok_line(ident) + self.off,
                        tok_col(ident),
                        f"array length {array!r} of {ident.value} is not a known constant",
                        source_context(self.text, tok_line(ident), tok_col(ident)),
                        "define it before the struct",
                    )
            else:
                array, value = "", 0
        return CMember(ident.value, ctype, array, value, tok_line(ident) + self.off)

    def define(self, tok: Token) -> None:
        body = tok.value.split("define", 1)[1]
        lead = len(tok.value) - len(body)
        try:
            tree = c_parser().parse(body, start="define_body")
        except UnexpectedInput as exc:
            col = tok_col(tok) + lead + (getattr(exc, "column", 1) or 1) - 1
            raise SpecSourceError(
                self.path,
                tok_line(tok) + self.off,
                col,
                "cannot parse #define",
                source_context(self.text, tok_line(tok), col),
            ) from None
        name = cast(Token, tree.children[0])
        rest = tree.children[1:]
        stray = bool(rest) and isinstance(rest[-1], Token) and rest[-1].type == "SEMI"
        if stray:
            semi = cast(Token, rest[-1])
            self.unit.defects.append(
                (
                    tok_line(tok) + self.off,
                    tok_col(tok) + lead + tok_col(semi) - 1,
                    f"stray ';' after the value of #define {name.value}",
                )
            )
            rest = rest[:-1]
        value = eval_expr(rest[0], self.env) if rest else None
        text = expr_text(rest[0]) if rest else ""
        if value is not None:
            self.env[name.value] = value
        self.unit.defines.append(CDefine(name.value, value, text, tok_line(tok) + self.off, tok_col(tok), stray))
