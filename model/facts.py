"""Named facts about the state that a command refers to: the variables rules read besides the command's fields.

Concretely each fact is a small function of (state, fields); symbolically it is a
free z3 variable of the same width, so a rule quantifies over every state shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .expr import BOOL, E, Var
from .state import KIND_BLOB, KIND_NONE, State, overlaps, timeline_key

Getter = Callable[[State, dict], Any]
FACTS: dict[str, tuple[int, Getter]] = {}
# Facts read through a shared lookup (the resource a request names, its fence timeline, the
# settings): fact -> (lookup, fn(object, state, fields)). A rule's generated `values` does each
# lookup once for all its facts; FACTS holds the same composition for everyone else.
VIA: dict[str, tuple[Getter, Callable[[Any, State, dict], Any]]] = {}
UNSEEN = object()  # a lookup's answer when every fact read through it is unknown


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


def via(name: str, width: int, lookup: Getter, fn: Callable[[Any, State, dict], Any]) -> None:
    """A fact that is fn of what lookup finds (unknown when it finds UNSEEN)."""

    def get(st: State, f: dict):
        o = lookup(st, f)
        return None if o is UNSEEN else fn(o, st, f)

    FACTS[name] = (width, get)
    VIA[name] = (lookup, fn)


def _res(st: State, f: dict):
    rid: Any = f.get("resource_id")  # looked up as the request gives it, None (unknown) included
    return st.resources.get(rid)


def _seen_res(st: State, f: dict):
    """The resource the request names, or None. A fact about one the state has no record of is
    unknown when the trace began mid-session (it may predate it), and follows from its absence otherwise."""
    rid: Any = f.get("resource_id")  # looked up as the request gives it, None (unknown) included
    if not st.complete and rid not in st.resources:
        return UNSEEN
    return st.resources.get(rid)


def _on_res(name: str, width: int, fn: Callable) -> None:
    via(name, width, _seen_res, fn)


_on_res("st.res.exists", BOOL, lambda r, st, f: r is not None)
_on_res("st.res.kind", 8, lambda r, st, f: KIND_NONE if r is None else r.kind)
for _n in ("width", "height", "depth", "blob_mem", "blob_flags", "size"):
    _on_res(f"st.res.{_n}", 64 if _n == "size" else 32, lambda r, st, f, _n=_n: 0 if r is None else getattr(r, _n))
_on_res("st.res.backed", BOOL, lambda r, st, f: r is not None and r.backing is not None)
_on_res("st.res.transferred", BOOL, lambda r, st, f: False if r is None else r.transferred)
_on_res("st.res.mapped", BOOL, lambda r, st, f: r is not None and r.mapped is not None)
_on_res("st.res.in_ctx", BOOL, lambda r, st, f: r is not None and f.get("hdr.ctx_id") in r.contexts)


@fact("st.ctx.exists", BOOL)
def _ctx_exists(st: State, f: dict):
    if not st.complete and f.get("hdr.ctx_id") not in st.contexts:
        return None  # as for resources: a context the trace never showed created may exist
    return f.get("hdr.ctx_id") in st.contexts


def _settings(st: State, f: dict):
    """What the device offers: every fact about it unknown when the trace does not say."""
    return st.settings if st.settings.known else UNSEEN


def _setting(name: str, width: int, fn: Callable) -> None:
    via(name, width, _settings, fn)


_setting("st.num_scanouts", 32, lambda s, st, f: s.num_scanouts)
_setting("st.num_capsets", 32, lambda s, st, f: s.num_capsets)
_setting("st.blob_alignment", 32, lambda s, st, f: s.blob_alignment)
_setting("st.shm.present", BOOL, lambda s, st, f: s.host_visible is not None)
_setting("st.shm.size", 64, lambda s, st, f: s.host_visible or 0)
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


via("st.tl.any", BOOL, _timeline, lambda t, st, f: t is not None and t.last_submitted is not None)
via("st.tl.last", 64, _timeline, lambda t, st, f: (t and t.last_submitted) or 0)


def _capset(s, f: dict):
    for c in s.capsets:
        if c.id == f.get("capset_id"):
            return c
    return None


_setting("st.capset.known", BOOL, lambda s, st, f: _capset(s, f) is not None)
# CTX_CREATE names its capset in the low byte of context_init.
_setting(
    "st.init_capset.known",
    BOOL,
    lambda s, st, f: any(c.id == (f.get("context_init") or 0) & st.capset_id_mask for c in s.capsets),
)
_setting("st.capset.max_version", 32, lambda s, st, f: (c := _capset(s, f)) and c.max_version or 0)


def feature_fact(name: str) -> str:
    key = f"st.f.{name}"
    if key not in FACTS:
        _setting(key, BOOL, lambda s, st, f, _n=name: _n in s.features)
    return key


def S(name: str) -> E:
    """The rule-side variable of a state fact."""
    if name not in FACTS:
        raise KeyError(f"no state fact {name!r}; known: {', '.join(sorted(FACTS))}")
    return Var(name, FACTS[name][0])


def F(feature: str) -> E:
    """True when a feature bit was negotiated."""
    return S(feature_fact(feature))


def axioms(num_scanouts_max: int) -> E:
    """What holds of every reachable state, so the solver does not invent impossible shapes."""
    exists = S("st.res.exists")
    return (
        (~exists).implies(
            S("st.res.kind").eq(KIND_NONE)
            & ~S("st.res.backed")
            & ~S("st.res.mapped")
            & ~S("st.res.transferred")
            & ~S("st.res.in_ctx")
        )
        & exists.implies(S("st.res.kind").ne(KIND_NONE))
        & S("st.res.mapped").implies(S("st.res.kind").eq(KIND_BLOB))
        & S("st.num_scanouts").ugt(0)
        & S("st.num_scanouts").ule(num_scanouts_max)
        & (~S("st.tl.any")).implies(S("st.tl.last").eq(0))
        & (~S("st.shm.present")).implies(S("st.shm.size").eq(0))
        & (~S("st.capset.known")).implies(S("st.capset.max_version").eq(0))
        & S("st.capset.known").implies(S("st.num_capsets").ugt(0))
    )
