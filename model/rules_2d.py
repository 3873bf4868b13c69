"""Rules for 2D resources, their backing, scanouts and flushes."""

from __future__ import annotations

from typing import Optional

from .codec import Leaves, Message
from .facts import F, S
from .rule import Build, Check, Fields, Rule
from .rules_common import (
    BACKING_FIRST,
    DISPLAY_INFO_FIRST,
    EDID_FIRST,
    ERR_PARAM,
    ERR_UNSPEC,
    NOT_BACKED,
    OPEN_CODE,
    RECT_OUTSIDE,
    RESP_OOM,
    SCANOUT_RECT,
    header_checks,
    header_obligations,
    rect_inside,
    resource_exists,
    resource_id_free,
    scanout_id_valid,
)
from .state import KIND_2D, Resource, Scanout, State


def _rect_in_resource(c: Fields) -> Check:
    """The request's rectangle `r` inside its resource (FLUSH, TRANSFER_TO_HOST_2D)."""
    return Check(
        "rect-inside-resource",
        rect_inside("r", c, S("st.res.width"), S("st.res.height")),
        "informal",
        prefer=ERR_PARAM,
        when=S("st.res.exists"),
        note=OPEN_CODE,
        message=RECT_OUTSIDE,
    )


def _create_2d(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    st.resources[f["resource_id"]] = Resource(f["resource_id"], KIND_2D, f["format"], f["width"], f["height"])


def _unref(st: State, req: Message, resp: Optional[Message]) -> None:
    # What becomes of a scanout or cursor showing it is open; the model keeps their ids
    # (a dangling reference) and drops the resource with its backing and mapping.
    f: Leaves = req.fields
    st.resources.pop(f["resource_id"], None)


def _set_scanout(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    st.scanouts[f["scanout_id"]] = Scanout(f["resource_id"], (f["r.x"], f["r.y"], f["r.width"], f["r.height"]))


def _transfer(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    r = st.resources.get(f["resource_id"])
    if r is not None:
        r.transferred = True


def _attach(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    entries: list[Leaves] = req.entries
    r = st.resources.get(f["resource_id"])
    if r is not None:
        r.backing = [(e["addr"], e["length"]) for e in entries]


def _detach(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    r = st.resources.get(f["resource_id"])
    if r is not None:
        r.backing = None


def rules(b: Build) -> list[Rule]:
    formats = b.values("VIRTIO_GPU_FORMAT_")
    out = []

    name = "VIRTIO_GPU_CMD_RESOURCE_CREATE_2D"
    c = b.req(name)
    out.append(
        Rule(
            name,
            "2d",
            (
                *header_checks(b, name),
                *resource_id_free(c),
                Check(
                    "format-known",
                    c["format"].isin(formats),
                    "informal",
                    prefer=ERR_PARAM,
                    note="format is one of enum virtio_gpu_formats; " + OPEN_CODE,
                ),
            ),
            tuple(header_obligations(b, name)),
            _create_2d,
            tolerated=(RESP_OOM,),
        )
    )

    name = "VIRTIO_GPU_CMD_RESOURCE_UNREF"
    c = b.req(name)
    out.append(
        Rule(
            name,
            "2d",
            (*header_checks(b, name), resource_exists()),
            tuple(header_obligations(b, name)),
            _unref,
            note="what UNREF does to a scanout, the cursor or a mapping still using it is open",
        )
    )

    name = "VIRTIO_GPU_CMD_SET_SCANOUT"
    c = b.req(name)
    enabling = c["resource_id"].ne(0)
    out.append(
        Rule(
            name,
            "2d",
            (
                *header_checks(b, name),
                Check(
                    "display-info-first",
                    S("st.display_info_read"),
                    "normative",
                    (DISPLAY_INFO_FIRST,),
                    errors=None,
                    note="a SHOULD on the driver: scanouts are set up from GET_DISPLAY_INFO's answer",
                ),
                Check(
                    "edid-first",
                    S("st.edid_read"),
                    "normative",
                    (EDID_FIRST,),
                    errors=None,
                    when=F("VIRTIO_GPU_F_EDID"),
                    note="a SHOULD: with F_EDID the EDIDs are read at start-up",
                ),
                scanout_id_valid(c),
                resource_exists(when=enabling),
                Check(
                    "rect-inside-resource",
                    rect_inside("r", c, S("st.res.width"), S("st.res.height")),
                    "informal",
                    (SCANOUT_RECT,),
                    prefer=ERR_PARAM,
                    when=enabling & S("st.res.exists"),
                    note="a rect past the resource, including by u32 wrap-around of x+width; " + OPEN_CODE,
                    message=RECT_OUTSIDE,
                ),
            ),
            tuple(header_obligations(b, name)),
            _set_scanout,
            note="resource_id 0 disables the scanout",
        )
    )

    name = "VIRTIO_GPU_CMD_RESOURCE_FLUSH"
    c = b.req(name)
    out.append(
        Rule(
            name,
            "2d",
            (
                *header_checks(b, name),
                resource_exists(),
                _rect_in_resource(c),
            ),
            tuple(header_obligations(b, name)),
        )
    )

    name = "VIRTIO_GPU_CMD_TRANSFER_TO_HOST_2D"
    c = b.req(name)
    out.append(
        Rule(
            name,
            "2d",
            (
                *header_checks(b, name),
                resource_exists(),
                Check(
                    "backing-attached",
                    S("st.res.backed"),
                    "informal",
                    (BACKING_FIRST,),
                    prefer=ERR_UNSPEC,
                    when=S("st.res.exists"),
                    note="a transfer copies from the backing pages; " + OPEN_CODE,
                    message=NOT_BACKED,
                ),
                _rect_in_resource(c),
            ),
            tuple(header_obligations(b, name)),
            _transfer,
        )
    )

    name = "VIRTIO_GPU_CMD_RESOURCE_ATTACH_BACKING"
    c = b.req(name)
    out.append(
        Rule(
            name,
            "2d",
            (
                *header_checks(b, name),
                resource_exists(),
                Check(
                    "not-backed",
                    ~S("st.res.backed"),
                    "implementation",
                    errors=None,
                    prefer=ERR_UNSPEC,
                    when=S("st.res.exists"),
                    note="the spec is silent on a second attach; QEMU answers ERR_UNSPEC, others replace the backing",
                ),
            ),
            tuple(header_obligations(b, name)),
            _attach,
            tolerated=(RESP_OOM,),
        )
    )

    name = "VIRTIO_GPU_CMD_RESOURCE_DETACH_BACKING"
    c = b.req(name)
    out.append(
        Rule(
            name,
            "2d",
            (
                *header_checks(b, name),
                resource_exists(),
                Check(
                    "backed",
                    S("st.res.backed"),
                    "implementation",
                    errors=None,
                    when=S("st.res.exists"),
                    note="detaching backing a resource does not have is not covered by the spec",
                ),
            ),
            tuple(header_obligations(b, name)),
            _detach,
        )
    )
    return out
