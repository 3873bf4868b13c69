"""Rules for 3D: contexts, their resources, 3D resources and transfers, command submission."""

from __future__ import annotations

from typing import Optional

from .codec import Leaves, Message
from .expr import fits
from .facts import F, S
from .rule import Build, Check, Rule
from .rules_common import (
    BACKING_FIRST,
    CTX_CREATED,
    CTX_INIT_MAY,
    ERR_CONTEXT,
    ERR_PARAM,
    ERR_UNSPEC,
    NOT_BACKED,
    OPEN_CODE,
    RESP_OOM,
    header_checks,
    header_obligations,
    resource_exists,
    resource_id_free,
)
from .state import KIND_3D, KIND_BLOB, Context, Resource, State


def _ctx_create(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    st.contexts[f["hdr.ctx_id"]] = Context(
        f["hdr.ctx_id"],
        (f.get("context_init") or 0) & st.capset_id_mask,
        (f.get("debug_name") or b"")[: f.get("nlen") or 0],
    )


def _ctx_destroy(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    ctx = f["hdr.ctx_id"]
    st.contexts.pop(ctx, None)
    for r in st.resources.values():
        r.contexts.discard(ctx)


def _attach(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    r = st.resources.get(f["resource_id"])
    if r is not None:
        r.contexts.add(f["hdr.ctx_id"])


def _detach(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    r = st.resources.get(f["resource_id"])
    if r is not None:
        r.contexts.discard(f["hdr.ctx_id"])


def _create_3d(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    st.resources[f["resource_id"]] = Resource(
        f["resource_id"], KIND_3D, f["format"], f["width"], f["height"], f["depth"]
    )


def _transfer(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    r = st.resources.get(f["resource_id"])
    if r is not None:
        r.transferred = True


def _context_exists() -> Check:
    return Check(
        "context-exists",
        S("st.ctx.exists"),
        "informal",
        prefer=ERR_CONTEXT,
        note="hdr.ctx_id names a context created and not destroyed; " + OPEN_CODE,
    )


def rules(b: Build) -> list[Rule]:
    out = []
    name = "VIRTIO_GPU_CMD_CTX_CREATE"
    c = b.req(name)
    mask = b.k("VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK")
    name_room = b.codec.layout(name).size_of("debug_name")
    out.append(
        Rule(
            name,
            "3d",
            (
                *header_checks(b, name),
                Check(
                    "context-id-nonzero",
                    c["hdr.ctx_id"].ne(0),
                    "informal",
                    prefer=ERR_CONTEXT,
                    note="ctx_id 0 is what commands outside any context carry; " + OPEN_CODE,
                ),
                Check(
                    "context-id-free",
                    ~S("st.ctx.exists"),
                    "informal",
                    errors=None,
                    prefer=ERR_CONTEXT,
                    note="creating a context id twice is not covered by the spec",
                ),
                Check(
                    "debug-name-length",
                    c["nlen"].ule(name_room),
                    "informal",
                    prefer=ERR_PARAM,
                    note=f"nlen counts bytes of the {name_room}-byte debug_name; " + OPEN_CODE,
                ),
                Check(
                    "context-init-needs-feature",
                    c["context_init"].eq(0),
                    "spec-text",
                    (CTX_INIT_MAY,),
                    prefer=ERR_PARAM,
                    when=~F("VIRTIO_GPU_F_CONTEXT_INIT"),
                    note="context_init is only defined with CONTEXT_INIT; " + OPEN_CODE,
                ),
                Check(
                    "context-init-reserved",
                    (c["context_init"] & (0xFFFFFFFF ^ mask)).eq(0),
                    "informal",
                    prefer=ERR_PARAM,
                    note="only the capset id bits are defined; " + OPEN_CODE,
                ),
                Check(
                    "context-init-capset",
                    S("st.init_capset.known"),
                    "informal",
                    prefer=ERR_PARAM,
                    when=(c["context_init"] & mask).ne(0),
                    note="the capset named is one the device reports; " + OPEN_CODE,
                ),
            ),
            tuple(header_obligations(b, name)),
            _ctx_create,
            ok_basis="spec-text",
            ok_reqs=(CTX_CREATED,),
            tolerated=(RESP_OOM,),
        )
    )

    name = "VIRTIO_GPU_CMD_CTX_DESTROY"
    out.append(
        Rule(name, "3d", (*header_checks(b, name), _context_exists()), tuple(header_obligations(b, name)), _ctx_destroy)
    )

    for name, effect, extra in (
        ("VIRTIO_GPU_CMD_CTX_ATTACH_RESOURCE", _attach, ()),
        (
            "VIRTIO_GPU_CMD_CTX_DETACH_RESOURCE",
            _detach,
            (
                Check(
                    "resource-in-context",
                    S("st.res.in_ctx"),
                    "informal",
                    errors=None,
                    when=S("st.res.exists") & S("st.ctx.exists"),
                    note="detaching what is not attached is not covered by the spec",
                ),
            ),
        ),
    ):
        c = b.req(name)
        out.append(
            Rule(
                name,
                "3d",
                (*header_checks(b, name), _context_exists(), resource_exists(), *extra),
                tuple(header_obligations(b, name)),
                effect,
            )
        )

    name = "VIRTIO_GPU_CMD_RESOURCE_CREATE_3D"
    c = b.req(name)
    out.append(
        Rule(
            name,
            "3d",
            (*header_checks(b, name), *resource_id_free(c)),
            tuple(header_obligations(b, name)),
            _create_3d,
            tolerated=(RESP_OOM,),
            note="target, format and bind are the renderer's (virgl's) vocabulary, not the spec's",
        )
    )

    for name in ("VIRTIO_GPU_CMD_TRANSFER_TO_HOST_3D", "VIRTIO_GPU_CMD_TRANSFER_FROM_HOST_3D"):
        c = b.req(name)
        # Blobs have no width/height/depth and the driver's view of them is unrestricted,
        # so the box and backing checks are for 2D/3D resources only.
        sized = S("st.res.exists") & S("st.res.kind").ne(KIND_BLOB)
        box = (
            fits(c["box.x"], c["box.w"], S("st.res.width"))
            & fits(c["box.y"], c["box.h"], S("st.res.height"))
            & fits(c["box.z"], c["box.d"], S("st.res.depth"))
        )
        checks = (
            *header_checks(b, name),
            resource_exists(),
            Check(
                "box-inside-resource",
                box,
                "informal",
                prefer=ERR_PARAM,
                when=sized,
                note="the box lies inside the resource, without u32 wrap-around; " + OPEN_CODE,
            ),
            Check(
                "backing-attached",
                S("st.res.backed"),
                "informal",
                (BACKING_FIRST,),
                prefer=ERR_UNSPEC,
                when=sized,
                note="DMA either way goes through the backing pages; " + OPEN_CODE,
                message=NOT_BACKED,
            ),
        )
        out.append(
            Rule(
                name,
                "3d",
                checks,
                tuple(header_obligations(b, name)),
                _transfer if name.endswith("TO_HOST_3D") else None,
            )
        )

    name = "VIRTIO_GPU_CMD_SUBMIT_3D"
    out.append(
        Rule(
            name,
            "3d",
            (*header_checks(b, name), _context_exists()),
            tuple(header_obligations(b, name)),
            note="the command stream is opaque to the spec; its contents are the capset's",
        )
    )
    return out
