"""Named facts about the state that a command refers to: the variables rules read besides the command's fields.

Concretely each fact is a small function of (state, fields); symbolically it is a
free z3 variable of the same width, so a rule quantifies over every state shape.
"""

from __future__ import annotations

from typing import Any, Callable

from .expr import BOOL, E, Var
from .state import KIND_BLOB, KIND_NONE, State, overlaps, timeline_key

Getter = Callable[[State, dict], Any]
FACTS: dict[str, tuple[int, Getter]] = {}


# The request fields each family of facts is read through. When one of them is
# unknown, the fact is unknown too (z3 then ranges over it), so no verdict rests on
# a guessed id.
_DEPENDS = (
    ("st.res.in_ctx", ("resource_id", "hdr.ctx_id")),
    ("st.res.", ("resource_id",)),
    ("st.map.", ("resource_id", "offset")),
    ("st.ctx.", ("hdr.ctx_id",)),
    ("st.tl.", ("hdr.flags", "hdr.ctx_id", "hdr.ring_idx")),
    ("st.capset.", ("capset_id",)),
    ("st.init_capset.", ("context_init",)),
)


def depends(name: str) -> tuple[str, ...]:
    for prefix, fields in _DEPENDS:
        if name.startswith(prefix):
            return fields
    return ()


def fact(name: str, width: int):
    def register(fn: Getter) -> Getter:
        FACTS[name] = (width, fn)
        return fn
    return register


def _res(st: State, f: dict):
    return st.resources.get(f.get("resource_id"))


def _seen(fact_fn: Getter, books: str, key: str) -> Getter:
    """A fact about an object the state has no record of is unknown when the trace began
    mid-session (the object may predate it), and follows from its absence otherwise."""
    def get(st: State, f: dict):
        if not st.complete and f.get(key) not in getattr(st, books):
            return None
        return fact_fn(st, f)
    return get


def _attr(name: str, default: Any = 0) -> Getter:
    def get(st: State, f: dict):
        r = _res(st, f)
        return default if r is None else getattr(r, name)
    return _seen(get, "resources", "resource_id")


def _on_res(fn: Getter) -> Getter:
    return _seen(fn, "resources", "resource_id")


fact("st.res.exists", BOOL)(_on_res(lambda st, f: _res(st, f) is not None))
fact("st.res.kind", 8)(_on_res(lambda st, f: KIND_NONE if _res(st, f) is None else _res(st, f).kind))
for _n in ("width", "height", "depth", "blob_mem", "blob_flags"):
    fact(f"st.res.{_n}", 32)(_attr(_n))
fact("st.res.size", 64)(_attr("size"))
fact("st.res.backed", BOOL)(_on_res(lambda st, f: (r := _res(st, f)) is not None and r.backing is not None))
fact("st.res.transferred", BOOL)(_attr("transferred", False))
fact("st.res.mapped", BOOL)(_on_res(lambda st, f: (r := _res(st, f)) is not None and r.mapped is not None))
fact("st.res.in_ctx", BOOL)(_on_res(
    lambda st, f: (r := _res(st, f)) is not None and f.get("hdr.ctx_id") in r.contexts))
fact("st.ctx.exists", BOOL)(_seen(lambda st, f: f.get("hdr.ctx_id") in st.contexts, "contexts", "hdr.ctx_id"))


def _setting(get: Getter) -> Getter:
    """A fact about what the device offers: unknown when the trace does not say."""
    return lambda st, f: get(st, f) if st.settings.known else None


fact("st.num_scanouts", 32)(_setting(lambda st, f: st.settings.num_scanouts))
fact("st.num_capsets", 32)(_setting(lambda st, f: st.settings.num_capsets))
fact("st.blob_alignment", 32)(_setting(lambda st, f: st.settings.blob_alignment))
fact("st.shm.present", BOOL)(_setting(lambda st, f: st.settings.host_visible is not None))
fact("st.shm.size", 64)(_setting(lambda st, f: st.settings.host_visible or 0))
fact("st.display_info_read", BOOL)(lambda st, f: st.display_info_read)
fact("st.edid_read", BOOL)(lambda st, f: st.edid_read)


@fact("st.map.overlaps", BOOL)
def _map_overlaps(st: State, f: dict) -> bool:
    r = _res(st, f)
    if r is None or f.get("offset") is None:
        return False
    mine = (f["offset"], r.size)
    return any(overlaps(mine, m) for rid, m in st.mappings().items() if rid != r.id)


def _timeline(st: State, f: dict):
    return st.timelines.get(timeline_key(f, st.ring_idx_flag))


fact("st.tl.any", BOOL)(lambda st, f: (t := _timeline(st, f)) is not None and t.last_submitted is not None)
fact("st.tl.last", 64)(lambda st, f: ((t := _timeline(st, f)) and t.last_submitted) or 0)


def _capset(st: State, f: dict):
    for c in st.settings.capsets:
        if c.id == f.get("capset_id"):
            return c
    return None


fact("st.capset.known", BOOL)(_setting(lambda st, f: _capset(st, f) is not None))
# CTX_CREATE names its capset in the low byte of context_init.
fact("st.init_capset.known", BOOL)(_setting(
    lambda st, f: any(c.id == (f.get("context_init") or 0) & 0xFF for c in st.settings.capsets)))
fact("st.capset.max_version", 32)(_setting(lambda st, f: (c := _capset(st, f)) and c.max_version or 0))


def feature_fact(name: str) -> str:
    key = f"st.f.{name}"
    if key not in FACTS:
        FACTS[key] = (BOOL, _setting(lambda st, f, _n=name: _n in st.settings.features))
    return key


def S(name: str) -> E:
    """The rule-side variable of a state fact."""
    if name not in FACTS:
        raise KeyError(f"no state fact {name!r}; known: {', '.join(sorted(FACTS))}")
    return Var(name, FACTS[name][0])


def F(feature: str) -> E:
    """True when a feature bit was negotiated."""
    return S(feature_fact(feature))


def axioms(num_scanouts_max: int = 16) -> E:
    """What holds of every reachable state, so the solver does not invent impossible shapes."""
    exists = S("st.res.exists")
    return (
        (~exists).implies(S("st.res.kind").eq(KIND_NONE) & ~S("st.res.backed") & ~S("st.res.mapped")
                          & ~S("st.res.transferred") & ~S("st.res.in_ctx"))
        & exists.implies(S("st.res.kind").ne(KIND_NONE))
        & S("st.res.mapped").implies(S("st.res.kind").eq(KIND_BLOB))
        & S("st.num_scanouts").ugt(0) & S("st.num_scanouts").ule(num_scanouts_max)
        & (~S("st.tl.any")).implies(S("st.tl.last").eq(0))
        & (~S("st.shm.present")).implies(S("st.shm.size").eq(0))
        & (~S("st.capset.known")).implies(S("st.capset.max_version").eq(0))
        & S("st.capset.known").implies(S("st.num_capsets").ugt(0))
    )
