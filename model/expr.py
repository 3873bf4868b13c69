"""Rule expressions: one definition, read concretely (compiled Python) and by z3 (bit-vectors)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import z3

# By default z3 takes SIGINT for itself while it solves: it cancels the solve (an "unknown"
# we would read as a real answer) and the program's own handler never hears of it, so a
# Ctrl-C that lands in a solve was lost (a fuzz campaign ran on). The program owns Ctrl-C.
z3.set_param("ctrl_c", False)

BOOL = 0  # width 0 marks a boolean; every other width is an unsigned bit-vector


class E:
    """An expression node. Arithmetic wraps at the operand width, as the wire does."""

    if TYPE_CHECKING:  # a field of most nodes, derived (a property) on Arith: readers only read it

        @property
        def width(self) -> int: ...

    # --- building -------------------------------------------------------
    def _bin(self, op: str, other: Any) -> E:
        o = lift(other, self.width)
        if o.width != self.width:
            raise TypeError(f"width mismatch in {self} {op} {o}: {self.width} vs {o.width}")
        return Arith(op, self, o)

    def __add__(self, o):
        return self._bin("+", o)

    def __sub__(self, o):
        return self._bin("-", o)

    def __mul__(self, o):
        return self._bin("*", o)

    def __mod__(self, o):
        return self._bin("%", o)

    def __and__(self, o):
        if self.width == BOOL:
            return And(self, lift(o, BOOL))
        return self._bin("&", o)

    def __or__(self, o):
        if self.width == BOOL:
            return Or(self, lift(o, BOOL))
        return self._bin("|", o)

    def __invert__(self):
        return Not(self)

    def eq(self, o) -> E:
        return Cmp("==", self, lift(o, self.width))

    def ne(self, o) -> E:
        return Not(self.eq(o))

    def ule(self, o) -> E:
        return Cmp("<=", self, lift(o, self.width))

    def ult(self, o) -> E:
        return Cmp("<", self, lift(o, self.width))

    def uge(self, o) -> E:
        return lift(o, self.width).ule(self)

    def ugt(self, o) -> E:
        return lift(o, self.width).ult(self)

    def isin(self, values) -> E:
        return In(self, tuple(sorted(set(int(v) for v in values))))

    def zext(self, width: int) -> E:
        return ZExt(self, width)

    def implies(self, o) -> E:
        return Or(Not(self), lift(o, BOOL))

    # --- reading ----------------------------------------------------------
    def py(self) -> str:  # Python source over a mapping `v`
        raise NotImplementedError

    def z3(self, env: Z3Env):
        raise NotImplementedError

    def children(self) -> tuple[E, ...]:
        return ()

    def walk(self) -> Iterator[E]:
        yield self
        for c in self.children():
            yield from c.walk()

    def vars(self) -> dict[str, int]:
        return {n.name: n.width for n in self.walk() if isinstance(n, Var)}

    def __str__(self) -> str:
        return self.py().replace("v['", "").replace("']", "")

    __repr__ = __str__
    __hash__ = object.__hash__


def _mask(width: int) -> int:
    return (1 << width) - 1


def lift(x: Any, width: int) -> E:
    if isinstance(x, E):
        return x
    if isinstance(x, bool):
        return Const(int(x), BOOL)
    if isinstance(x, int):
        if width == BOOL:
            raise TypeError(f"integer {x} where a condition was expected")
        if not 0 <= x <= _mask(width):
            raise ValueError(f"{x} does not fit in {width} bits")
        return Const(x, width)
    raise TypeError(f"cannot use {x!r} in a rule expression")


@dataclass(eq=False, repr=False)
class Var(E):
    name: str
    width: int

    def py(self) -> str:
        return f"v[{self.name!r}]"

    def z3(self, env):
        return env.var(self.name, self.width)


@dataclass(eq=False, repr=False)
class Const(E):
    value: int
    width: int

    def py(self) -> str:
        if self.width == BOOL:
            return "True" if self.value else "False"
        return hex(self.value) if self.value > 9 else str(self.value)

    def z3(self, env):
        if self.width == BOOL:
            return z3.BoolVal(bool(self.value))
        return z3.BitVecVal(self.value, self.width)


@dataclass(eq=False, repr=False)
class Arith(E):
    op: str
    a: E
    b: E

    @property
    def width(self) -> int:
        return self.a.width

    def children(self):
        return (self.a, self.b)

    def py(self) -> str:
        a, b = self.a.py(), self.b.py()
        if self.op == "%":  # SMT-LIB: x urem 0 == x
            return f"(({a}) % ({b}) if ({b}) else ({a}))"
        if self.op in "&|":
            return f"(({a}) {self.op} ({b}))"
        return f"((({a}) {self.op} ({b})) & {hex(_mask(self.width))})"

    def z3(self, env):
        a, b = self.a.z3(env), self.b.z3(env)
        return {
            "+": lambda: a + b,
            "-": lambda: a - b,
            "*": lambda: a * b,
            "%": lambda: z3.URem(a, b),
            "&": lambda: a & b,
            "|": lambda: a | b,
        }[self.op]()


@dataclass(eq=False, repr=False)
class Cmp(E):
    op: str  # == < <=, all unsigned
    a: E
    b: E
    width: int = BOOL

    def children(self):
        return (self.a, self.b)

    def py(self) -> str:
        return f"({self.a.py()} {self.op} {self.b.py()})"

    def z3(self, env):
        a, b = self.a.z3(env), self.b.z3(env)
        return {"==": lambda: a == b, "<": lambda: z3.ULT(a, b), "<=": lambda: z3.ULE(a, b)}[self.op]()


@dataclass(eq=False, repr=False)
class In(E):
    a: E
    values: tuple[int, ...]
    width: int = BOOL

    def children(self):
        return (self.a,)

    def py(self) -> str:
        return f"({self.a.py()} in {set(self.values)!r})" if self.values else "False"

    def z3(self, env):
        a = self.a.z3(env)
        return z3.Or(*[a == v for v in self.values]) if self.values else z3.BoolVal(False)


@dataclass(eq=False, repr=False)
class ZExt(E):
    a: E
    width: int

    def children(self):
        return (self.a,)

    def py(self) -> str:
        return self.a.py()

    def z3(self, env):
        return z3.ZeroExt(self.width - self.a.width, self.a.z3(env))


class And(E):
    width = BOOL

    def __init__(self, *items: E):
        self.items = tuple(items)

    def children(self):
        return self.items

    def py(self) -> str:
        return "(" + " and ".join(i.py() for i in self.items) + ")"

    def z3(self, env):
        return z3.And(*[i.z3(env) for i in self.items])


class Or(And):
    def py(self) -> str:
        return "(" + " or ".join(i.py() for i in self.items) + ")"

    def z3(self, env):
        return z3.Or(*[i.z3(env) for i in self.items])


@dataclass(eq=False, repr=False)
class Not(E):
    a: E
    width: int = BOOL

    def children(self):
        return (self.a,)

    def py(self) -> str:
        return f"(not {self.a.py()})"

    def z3(self, env):
        return z3.Not(self.a.z3(env))


def fits(start: E, length: E, limit: E) -> E:
    """start + length <= limit without the u32/u64 wrap a naive sum would hide."""
    return length.ule(limit) & start.ule(limit - length)


def compile_py(expr: E):
    """The concrete reading: a plain Python function of a value mapping."""
    return eval(f"lambda v: {expr.py()}", {})  # noqa: S307 - source is generated from our own nodes


class Z3Env:
    """z3 constants for variable names, one per name and width."""

    def __init__(self) -> None:
        self.vars: dict[str, Any] = {}

    def var(self, name: str, width: int):
        v = self.vars.get(name)
        if v is None:
            v = z3.Bool(name) if width == BOOL else z3.BitVec(name, width)
            self.vars[name] = v
        return v

    def bind(self, values: Mapping[str, Any], widths: Mapping[str, int]) -> list:
        """Equalities that pin the known values."""
        out = []
        for name, val in values.items():
            if name in widths and val is not None:
                w = widths[name]
                out.append(self.var(name, w) == (z3.BoolVal(bool(val)) if w == BOOL else z3.BitVecVal(int(val), w)))
        return out

    def model_values(self, model, widths: Mapping[str, int]) -> dict[str, Any]:
        out = {}
        for name, w in widths.items():
            val = model.eval(self.var(name, w), model_completion=True)
            out[name] = z3.is_true(val) if w == BOOL else val.as_long()
        return out


def solve(constraints: list, timeout_ms: int = 2000):
    """z3's verdict on a conjunction: 'sat' with a model, 'unsat', or 'unknown'."""
    s = z3.Solver()
    s.set("timeout", timeout_ms)
    s.add(*constraints)
    r = s.check()
    return str(r), (s.model() if r == z3.sat else None)


def evaluate(expr: E, values: Mapping[str, Any], fn=None, assume: Optional[list] = None) -> Optional[bool]:
    """True/False when every completion of the unknown values agrees, else None.

    Known values take the compiled path; z3 is asked only when some variable is
    unknown (missing or None), and a solver `unknown` stays None (never a pass).
    """
    widths = expr.vars()
    if all(values.get(n) is not None for n in widths):
        return bool((fn or compile_py(expr))(values))
    env = Z3Env()
    pinned = env.bind(values, widths) + list(assume or [])
    body = expr.z3(env)
    can_fail, _ = solve(pinned + [z3.Not(body)])
    if can_fail == "unsat":
        return True
    can_hold, _ = solve(pinned + [body])
    if can_hold == "unsat":
        return False
    return None


def why_false(expr: E, values: Mapping[str, Any], timeout_ms: int = 2000) -> Optional[list[str]]:
    """The known values that make `expr` false whatever the unknown ones are: z3's unsat core
    over one tracked assertion per known value. None when they do not force it false."""
    widths = expr.vars()
    env = Z3Env()
    s = z3.Solver()
    s.set("timeout", timeout_ms)
    s.add(expr.z3(env))
    for name, w in widths.items():
        val = values.get(name)
        if val is not None:
            pin = env.var(name, w) == (z3.BoolVal(bool(val)) if w == BOOL else z3.BitVecVal(int(val), w))
            s.assert_and_track(pin, z3.Bool("known:" + name))
    if s.check() != z3.unsat:
        return None
    return sorted(str(c).removeprefix("known:") for c in s.unsat_core())


def atoms(expr: E) -> list[Cmp]:
    """The ordering comparisons of an expression: where its boundaries lie."""
    return [n for n in expr.walk() if isinstance(n, Cmp) and n.op in ("<", "<=")]


def boundary(
    expr: E,
    assume: Optional[list] = None,
    env: Optional[Z3Env] = None,
    report: Optional[dict[str, int]] = None,
    timeout_ms: int = 2000,
    edges: tuple[str, ...] = ("satisfy", "violate"),
) -> dict[str, Optional[dict]]:
    """Two z3 models at the edge of `expr`: one that satisfies it exactly at a

    boundary (a comparison holding with no slack) and one that violates it by the
    least margin (the same comparison off by one). Falls back to any satisfying
    or violating model when the expression has no ordering comparison. `edges`: the
    ones wanted (each costs z3 calls); the others stay None.
    """
    env = env or Z3Env()
    widths = {**expr.vars(), **(report or {})}
    body = expr.z3(env)
    base = list(assume or [])
    result: dict[str, Optional[dict]] = {"satisfy": None, "violate": None}
    for cmp in atoms(expr):
        if all(result[k] is not None for k in edges):
            break  # the rest of the atoms would only build terms
        a, b = cmp.a.z3(env), cmp.b.z3(env)
        one = z3.BitVecVal(1, cmp.a.width)
        if cmp.op == "<=":
            tight, beyond = a == b, z3.And(a == b + one, b != z3.BitVecVal(_mask(cmp.a.width), cmp.a.width))
        else:
            tight, beyond = a + one == b, z3.And(a == b, True)
        if result["satisfy"] is None and "satisfy" in edges:
            r, m = solve(base + [body, tight], timeout_ms)
            if r == "sat":
                result["satisfy"] = env.model_values(m, widths)
        if result["violate"] is None and "violate" in edges:
            r, m = solve(base + [z3.Not(body), beyond], timeout_ms)
            if r == "sat":
                result["violate"] = env.model_values(m, widths)
    for key, goal in (("satisfy", body), ("violate", z3.Not(body))):
        if result[key] is None and key in edges:
            r, m = solve(base + [goal], timeout_ms)
            if r == "sat":
                result[key] = env.model_values(m, widths)
    return result
