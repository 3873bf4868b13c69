"""Checks every command shares: feature gates, the request header's flags, fences and rings; and requirement IDs."""

from __future__ import annotations

from .expr import E, fits
from .facts import F, S
from .rule import ANY_ERROR, Build, Check, Fields, Obligation

# Requirement IDs of the v1.4 SpecIR the rules enforce (stable by construction, see spec/requirements.py).
FENCE_ECHO = "device-operation-request-header/fence_id/device-MUST"
RING_MAY = "device-operation-request-header/ring_idx/driver-MAY"
RING_COMPLETE = "device-operation-request-header/ring_idx/device-MUST"
DISPLAY_INFO_FIRST = "device-requirements-device-initialization/VIRTIO_GPU_CMD_GET_DISPLAY_INFO/driver-SHOULD"
EDID_FIRST = "device-requirements-device-initialization/VIRTIO_GPU_CMD_GET_EDID/device-SHOULD"
MAP_IMPLEMENTED = "device-requirements-device-initialization/VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB/device-MUST"
TRANSFERS_ONLY = "device-operation/guest/driver-must.1"
BACKING_FIRST = "device-operation/guest/driver-must.2"
CURSOR_64 = "device-operation-configure-mouse-cursor/statement/driver-must"
CURSOR_PREPARED = "device-operation-configure-mouse-cursor/VIRTIO_GPU_CMD_RESOURCE_CREATE_2D/driver-MUST"
CURSOR_COMPLETED = "device-operation-cursorq/VIRTIO_GPU_CMD_UPDATE_CURSOR/driver-must"
SCANOUT_RECT = "device-operation-controlq/VIRTIO_GPU_CMD_SET_SCANOUT/driver-must"
CAPSET_INDEX = "device-operation-controlq/VIRTIO_GPU_CMD_GET_CAPSET_INFO/driver-MUST"
CAPSET_ID = "device-operation-controlq/VIRTIO_GPU_CMD_GET_CAPSET_INFO/device-MUST"
_BLOB = "device-operation-controlq/VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB/driver-MUST"
BLOB_MEM_STATED, BLOB_MEM_NONZERO, BLOB_HOST3D_OBJECT, BLOB_FLAGS_STATED = (f"{_BLOB}.{i}" for i in range(1, 5))
SCANOUT_BLOB_FORMAT = "device-operation-controlq/VIRTIO_GPU_CMD_SET_SCANOUT_BLOB/driver-MUST"
BLOB_SIZE_ALIGNED = "driver-requirements-device-operation-controlq/VIRTIO_GPU_CMD_RESOURCE_CREATE_BLOB/driver-MUST"
CTX_CREATED = "device-operation-controlq-3d/VIRTIO_GPU_CMD_CTX_CREATE/device-MUST.1"
CTX_INIT_MAY = "device-operation-controlq-3d/VIRTIO_GPU_CMD_CTX_CREATE/driver-MAY"
NO_DOUBLE_MAP = "device-operation-controlq-3d/VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB/driver-MUST-NOT"
MAP_OFFSET_ALIGNED = "driver-requirements-device-operation-controlq-3d/VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB/driver-MUST"

RESP_OOM = "VIRTIO_GPU_RESP_ERR_OUT_OF_MEMORY"
ERR_UNSPEC = "VIRTIO_GPU_RESP_ERR_UNSPEC"
ERR_SCANOUT = "VIRTIO_GPU_RESP_ERR_INVALID_SCANOUT_ID"
ERR_RESOURCE = "VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID"
ERR_CONTEXT = "VIRTIO_GPU_RESP_ERR_INVALID_CONTEXT_ID"
ERR_PARAM = "VIRTIO_GPU_RESP_ERR_INVALID_PARAMETER"

OPEN_CODE = "the spec names no error code for this case; any error is conformant"


def header_checks(b: Build, command: str) -> list[Check]:
    """Feature gates from the SpecIR, and the header's fence and ring fields."""
    cmd = b.ir.command(command)
    c = b.req(command)
    out: list[Check] = []
    if cmd.features:
        gate = F(cmd.features[0])
        for f in cmd.features[1:]:
            gate = gate & F(f)
        out.append(
            Check(
                "feature-gate",
                gate,
                "informal",
                prefer=ERR_UNSPEC,
                note="the spec text gates the command on these feature bits; " + OPEN_CODE,
            )
        )
    if cmd.needs_shm:
        out.append(
            Check(
                "host-visible-region",
                S("st.shm.present"),
                "informal",
                (TRANSFERS_ONLY,),
                prefer=ERR_UNSPEC,
                note="mapping needs the host-visible shared memory region",
            )
        )
    flags = c["hdr.flags"]
    ring = (flags & b.k("VIRTIO_GPU_FLAG_INFO_RING_IDX")).ne(0)
    fenced = (flags & b.k("VIRTIO_GPU_FLAG_FENCE")).ne(0)
    hi = b.ir.struct("virtio_gpu_ctrl_hdr").field("ring_idx").value_max
    out.append(
        Check(
            "ring-idx-needs-context-init",
            F("VIRTIO_GPU_F_CONTEXT_INIT"),
            "spec-text",
            (RING_MAY,),
            errors=None,
            when=ring,
            note="the flag is only defined with CONTEXT_INIT; what a device does otherwise is open",
        )
    )
    if hi is not None:
        out.append(
            Check(
                "ring-idx-range",
                c["hdr.ring_idx"].ule(hi),
                "informal",
                (RING_MAY,),
                prefer=ERR_PARAM,
                when=ring,
                note=f"ring_idx is 0..{hi}; " + OPEN_CODE,
            )
        )
    out.append(
        Check(
            "fence-sequence",
            c["hdr.fence_id"].ugt(S("st.tl.last")),
            "informal",
            errors=None,
            when=fenced & S("st.tl.any"),
            note="fence_id is a sequence number on its timeline, so it grows; a device need not reject",
        )
    )
    return out


def header_obligations(b: Build, command: str) -> list[Obligation]:
    c = b.req(command)
    r = b.resp("VIRTIO_GPU_RESP_OK_NODATA")
    fence, ring = b.k("VIRTIO_GPU_FLAG_FENCE"), b.k("VIRTIO_GPU_FLAG_INFO_RING_IDX")
    fenced = (c["hdr.flags"] & fence).ne(0)
    return [
        Obligation(
            "fence-echo",
            (r["hdr.flags"] & fence).ne(0) & r["hdr.fence_id"].eq(c["hdr.fence_id"]),
            "spec-text",
            (FENCE_ECHO,),
            when=fenced,
        ),
        Obligation(
            "ring-echo",
            r["hdr.ctx_id"].eq(c["hdr.ctx_id"]) & r["hdr.ring_idx"].eq(c["hdr.ring_idx"]),
            "implementation",
            when=fenced & (c["hdr.flags"] & ring).ne(0),
            note="echoing ctx_id and ring_idx is what QEMU and crosvm do; the spec does not ask",
        ),
    ]


# What the commonest breaches mean, for the checks that share them across commands.
RECT_OUTSIDE = "the rectangle {r.width}x{r.height}+{r.x}+{r.y} reaches outside resource {resource_id}"
NOT_BACKED = "resource {resource_id} has no backing pages attached; the transfer has nothing to copy"


def resource_exists(when: E | None = None) -> Check:
    return Check(
        "resource-exists",
        S("st.res.exists"),
        "informal",
        prefer=ERR_RESOURCE,
        when=when,
        note="resource ids are live from their create to their unref; " + OPEN_CODE,
        message="resource {resource_id} does not exist (never created, or already unreferenced)",
    )


def resource_id_free(c: Fields) -> list[Check]:
    return [
        Check(
            "resource-id-nonzero",
            c["resource_id"].ne(0),
            "informal",
            prefer=ERR_RESOURCE,
            note="0 means 'no resource' in SET_SCANOUT and UPDATE_CURSOR",
            message="resource id 0 cannot be created",
        ),
        Check(
            "resource-id-free",
            ~S("st.res.exists"),
            "informal",
            prefer=ERR_RESOURCE,
            note="an id names one live resource",
            message="resource {resource_id} already exists; create needs an unused id",
        ),
    ]


def rect_inside(prefix: str, c: Fields, width: E, height: E) -> E:
    """A rectangle inside width x height, with the u32 sums checked for wrap-around."""
    return fits(c[f"{prefix}.x"], c[f"{prefix}.width"], width) & fits(c[f"{prefix}.y"], c[f"{prefix}.height"], height)


def scanout_id_valid(c: Fields, key: str = "scanout_id", prefer: str = ERR_SCANOUT, answer_open: bool = False) -> Check:
    return Check(
        "scanout-id",
        c[key].ult(S("st.num_scanouts")),
        "informal",
        prefer=prefer,
        errors=None if answer_open else (ANY_ERROR,),
        note="scanouts are numbered below num_scanouts; " + OPEN_CODE,
        message="scanout {scanout_id|scanout|pos.scanout_id} does not exist (num_scanouts is smaller)",
    )
