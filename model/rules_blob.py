"""Rules for blob resources: creation, blob scanouts, mapping into the host-visible region."""

from __future__ import annotations

from typing import Optional

from .codec import Leaves, Message
from .expr import fits
from .facts import F, S
from .rule import Build, Check, Obligation, Rule
from .rules_common import (
    BLOB_FLAGS_STATED,
    BLOB_HOST3D_OBJECT,
    BLOB_MEM_NONZERO,
    BLOB_MEM_STATED,
    BLOB_SIZE_ALIGNED,
    ERR_CONTEXT,
    ERR_PARAM,
    MAP_IMPLEMENTED,
    MAP_OFFSET_ALIGNED,
    NO_DOUBLE_MAP,
    OPEN_CODE,
    RESP_OOM,
    SCANOUT_BLOB_FORMAT,
    header_checks,
    header_obligations,
    rect_inside,
    resource_exists,
    resource_id_free,
    scanout_id_valid,
)
from .state import KIND_BLOB, Resource, Scanout, State

BYTES_PER_PIXEL = 4  # every format in enum virtio_gpu_formats is 32 bits per pixel


def _create_blob(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    entries: list[Leaves] = req.entries
    backing = [(e["addr"], e["length"]) for e in entries] if entries else None
    st.resources[f["resource_id"]] = Resource(
        f["resource_id"],
        KIND_BLOB,
        blob_mem=f["blob_mem"],
        blob_flags=f["blob_flags"],
        blob_id=f["blob_id"],
        size=f["size"],
        backing=backing,
    )


def _set_scanout_blob(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    blob = {k: f[k] for k in f if k in ("width", "height", "format") or k.startswith(("strides.", "offsets."))}
    st.scanouts[f["scanout_id"]] = Scanout(
        f["resource_id"], (f["r.x"], f["r.y"], f["r.width"], f["r.height"]), blob if f["resource_id"] else None
    )


def _map(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    r = st.resources.get(f["resource_id"])
    if r is not None:
        r.mapped = (f["offset"], r.size)


def _unmap(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    r = st.resources.get(f["resource_id"])
    if r is not None:
        r.mapped = None


def rules(b: Build) -> list[Rule]:
    out = []
    mem = {n: b.k(f"VIRTIO_GPU_BLOB_MEM_{n}") for n in ("GUEST", "HOST3D", "HOST3D_GUEST")}
    flags_defined = 0
    for v in b.values("VIRTIO_GPU_BLOB_FLAG_"):
        flags_defined |= v
    aligned = F("VIRTIO_GPU_F_BLOB_ALIGNMENT")

    name = "VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB"
    c = b.req(name)
    host3d = c["blob_mem"].isin((mem["HOST3D"], mem["HOST3D_GUEST"]))
    out.append(
        Rule(
            name,
            "blob",
            (
                *header_checks(b, name),
                *resource_id_free(c),
                Check(
                    "blob-mem-nonzero",
                    c["blob_mem"].ne(0),
                    "spec-text",
                    (BLOB_MEM_NONZERO,),
                    prefer=ERR_PARAM,
                    note=OPEN_CODE,
                ),
                Check(
                    "blob-mem-defined",
                    c["blob_mem"].isin(b.values("VIRTIO_GPU_BLOB_MEM_")),
                    "spec-text",
                    (BLOB_MEM_STATED,),
                    prefer=ERR_PARAM,
                    note=OPEN_CODE,
                ),
                Check(
                    "blob-flags-defined",
                    (c["blob_flags"] & (0xFFFFFFFF ^ flags_defined)).eq(0),
                    "spec-text",
                    (BLOB_FLAGS_STATED,),
                    prefer=ERR_PARAM,
                    note="only the VIRTIO_GPU_BLOB_FLAG_* bits; " + OPEN_CODE,
                ),
                Check(
                    "host3d-context",
                    S("st.ctx.exists"),
                    "spec-text",
                    (BLOB_HOST3D_OBJECT,),
                    prefer=ERR_CONTEXT,
                    when=host3d,
                    note="host3d blobs come from an object of the context in hdr.ctx_id; " + OPEN_CODE,
                ),
                Check(
                    "host3d-needs-virgl",
                    F("VIRTIO_GPU_F_VIRGL"),
                    "informal",
                    prefer=ERR_PARAM,
                    when=host3d,
                    note="host memory blobs exist only with VIRGL; guest blobs do not need it. nr_entries may be 0 "
                    "for any blob: backing can be attached later",
                ),
                Check("size-nonzero", c["size"].ne(0), "informal", prefer=ERR_PARAM, note=OPEN_CODE),
                Check(
                    "size-aligned",
                    (c["size"] % S("st.blob_alignment").zext(64)).eq(0),
                    "normative",
                    (BLOB_SIZE_ALIGNED,),
                    errors=None,
                    prefer=ERR_PARAM,
                    when=aligned,
                    note="a driver duty; whether the device rejects an unaligned size is open",
                ),
            ),
            tuple(header_obligations(b, name)),
            _create_blob,
            tolerated=(RESP_OOM,),
        )
    )

    name = "VIRTIO_GPU_CMD_SET_SCANOUT_BLOB"
    c = b.req(name)
    enabling = c["resource_id"].ne(0)
    live_blob = enabling & S("st.res.exists") & S("st.res.kind").eq(KIND_BLOB)
    w64 = lambda k: c[k].zext(64)  # noqa: E731 - 32-bit fields widened so products cannot wrap
    last_row = w64("offsets.0") + w64("strides.0") * (w64("height") - 1) + w64("width") * BYTES_PER_PIXEL
    out.append(
        Rule(
            name,
            "blob",
            (
                *header_checks(b, name),
                scanout_id_valid(c),
                resource_exists(when=enabling),
                Check(
                    "resource-is-blob",
                    S("st.res.kind").eq(KIND_BLOB),
                    "informal",
                    prefer=ERR_PARAM,
                    when=enabling & S("st.res.exists"),
                    note=OPEN_CODE,
                ),
                Check(
                    "format-defined",
                    c["format"].isin(b.values("VIRTIO_GPU_FORMAT_")),
                    "spec-text",
                    (SCANOUT_BLOB_FORMAT,),
                    prefer=ERR_PARAM,
                    when=enabling,
                    note=OPEN_CODE,
                ),
                Check(
                    "rect-inside-framebuffer",
                    rect_inside("r", c, c["width"], c["height"]),
                    "informal",
                    prefer=ERR_PARAM,
                    when=enabling,
                    note=OPEN_CODE,
                ),
                Check(
                    "stride-holds-row",
                    c["strides.0"].zext(64).uge(w64("width") * BYTES_PER_PIXEL),
                    "informal",
                    prefer=ERR_PARAM,
                    when=enabling,
                    note=OPEN_CODE,
                ),
                Check(
                    "plane-inside-blob",
                    c["height"].ne(0) & last_row.ule(S("st.res.size")),
                    "informal",
                    prefer=ERR_PARAM,
                    when=live_blob,
                    note="offset + stride*(height-1) + width*4 fits in the blob, as QEMU computes it; " + OPEN_CODE,
                ),
            ),
            tuple(header_obligations(b, name)),
            _set_scanout_blob,
        )
    )

    name = "VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB"
    c, r = b.req(name), b.resp("VIRTIO_GPU_RESP_OK_MAP_INFO")
    is_blob = S("st.res.exists") & S("st.res.kind").eq(KIND_BLOB)
    caching = tuple(
        x.value for x in b.ir.constants if x.name.startswith("VIRTIO_GPU_MAP_CACHE_") and not x.name.endswith("_MASK")
    )
    out.append(
        Rule(
            name,
            "blob",
            (
                *header_checks(b, name),
                resource_exists(),
                Check(
                    "resource-is-blob",
                    S("st.res.kind").eq(KIND_BLOB),
                    "informal",
                    prefer=ERR_PARAM,
                    when=S("st.res.exists"),
                    note=OPEN_CODE,
                ),
                Check(
                    "blob-mappable",
                    (S("st.res.blob_flags") & b.k("VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE")).ne(0),
                    "informal",
                    prefer=ERR_PARAM,
                    when=is_blob,
                    note="created with VIRTIO_GPU_BLOB_FLAG_USE_MAPPABLE; " + OPEN_CODE,
                ),
                Check(
                    "blob-host-memory",
                    S("st.res.blob_mem").ne(mem["GUEST"]),
                    "informal",
                    prefer=ERR_PARAM,
                    when=is_blob,
                    note="only host blobs live in the host-visible region; " + OPEN_CODE,
                ),
                Check(
                    "not-mapped",
                    ~S("st.res.mapped"),
                    "spec-text",
                    (NO_DOUBLE_MAP,),
                    errors=None,
                    prefer=ERR_PARAM,
                    when=is_blob,
                    note="a driver duty; the device's answer to a second map is open",
                ),
                Check(
                    "offset-aligned",
                    (c["offset"] % S("st.blob_alignment").zext(64)).eq(0),
                    "normative",
                    (MAP_OFFSET_ALIGNED,),
                    errors=None,
                    prefer=ERR_PARAM,
                    when=aligned,
                    note="a driver duty; whether the device rejects it is open",
                ),
                Check(
                    "inside-region",
                    fits(c["offset"], S("st.res.size"), S("st.shm.size")),
                    "informal",
                    prefer=ERR_PARAM,
                    when=is_blob & S("st.shm.present"),
                    note="offset + size inside the region, without u64 wrap",
                ),
                Check(
                    "no-overlap",
                    ~S("st.map.overlaps"),
                    "informal",
                    prefer=ERR_PARAM,
                    when=is_blob,
                    note="two live mappings cannot share region bytes",
                ),
            ),
            (
                *header_obligations(b, name),
                Obligation(
                    "map-info-caching",
                    (r["map_info"] & b.k("VIRTIO_GPU_MAP_CACHE_MASK")).isin(caching),
                    "informal",
                    on_ok=True,
                    note="map_info's low bits are one of VIRTIO_GPU_MAP_CACHE_*",
                ),
            ),
            _map,
            ok_basis="normative",
            ok_reqs=(MAP_IMPLEMENTED,),
            tolerated=(RESP_OOM,),
        )
    )

    name = "VIRTIO_GPU_CMD_RESOURCE_UNMAP_BLOB"
    c = b.req(name)
    out.append(
        Rule(
            name,
            "blob",
            (
                *header_checks(b, name),
                resource_exists(),
                Check(
                    "mapped",
                    S("st.res.mapped"),
                    "informal",
                    errors=None,
                    prefer=ERR_PARAM,
                    when=S("st.res.exists"),
                    note="unmapping what is not mapped; the device's answer is open",
                ),
            ),
            tuple(header_obligations(b, name)),
            _unmap,
            ok_basis="normative",
            ok_reqs=(MAP_IMPLEMENTED,),
        )
    )
    return out
