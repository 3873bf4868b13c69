"""virgl command streams for SUBMIT_3D: a small encoder for the commands that make the renderer work.

The stream is a capset's own language, opaque to the virtio spec: dwords, each command a header
(command, object type, length in dwords) and its body. The numbers are virglrenderer's
(src/virgl_protocol.h: enum virgl_context_cmd, enum virgl_object_type, the *_SIZE defines;
src/virgl_hw.h: formats and bind flags; gallium's pipe_texture_target and PIPE_CLEAR_*), declared
here once; tests/unit/test_virgl_stream.py compares them with the header where its source is at hand,
and the GL targets' tests see the renderer do what a stream asks (a clear read back).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

# enum virgl_context_cmd
NOP = 0
CREATE_OBJECT = 1
DESTROY_OBJECT = 3
SET_FRAMEBUFFER_STATE = 5
CLEAR = 7
RESOURCE_INLINE_WRITE = 9
RESOURCE_COPY_REGION = 17
SET_SUB_CTX = 28
CREATE_SUB_CTX = 29
DESTROY_SUB_CTX = 30
PIPE_RESOURCE_CREATE = 48  # a resource made by the stream, which RESOURCE_CREATE_BLOB (HOST3D) takes by its blob id
# enum virgl_object_type
OBJECT_SURFACE = 8  # (9 before VS, FS and GS became one SHADER object type)
# body sizes in dwords (VIRGL_OBJ_SURFACE_SIZE, VIRGL_OBJ_CLEAR_SIZE, VIRGL_CMD_RESOURCE_COPY_REGION_SIZE)
SURFACE_SIZE, CLEAR_SIZE, COPY_REGION_SIZE = 5, 8, 13
INLINE_WRITE_HEADER = 11  # VIRGL_RESOURCE_IW_DATA_START - 1: the dwords before the data

# virgl_hw.h: enum virgl_formats, VIRGL_BIND_*; gallium: enum pipe_texture_target, PIPE_CLEAR_*
FORMAT_B8G8R8A8_UNORM, FORMAT_B8G8R8X8_UNORM, FORMAT_R8G8B8A8_UNORM, FORMAT_R8_UNORM = 1, 2, 67, 64
# VIRGL_RESOURCE_*: a buffer the host maps (persistent, coherent) is what a mappable blob can be made of
RESOURCE_Y_0_TOP, RESOURCE_FLAG_MAP_PERSISTENT, RESOURCE_FLAG_MAP_COHERENT = 1 << 0, 1 << 1, 1 << 2
BUFFER, TEXTURE_1D, TEXTURE_2D, TEXTURE_3D, TEXTURE_CUBE, TEXTURE_RECT, TEXTURE_2D_ARRAY = 0, 1, 2, 3, 4, 5, 7
BIND_DEPTH_STENCIL, BIND_RENDER_TARGET, BIND_SAMPLER_VIEW = 1 << 0, 1 << 1, 1 << 3
BIND_VERTEX_BUFFER, BIND_CONSTANT_BUFFER, BIND_SCANOUT = 1 << 4, 1 << 6, 1 << 18
CLEAR_COLOR0 = 1 << 2
TARGETS = (BUFFER, TEXTURE_1D, TEXTURE_2D, TEXTURE_3D, TEXTURE_CUBE, TEXTURE_RECT, TEXTURE_2D_ARRAY)
BINDS = (
    BIND_RENDER_TARGET | BIND_SAMPLER_VIEW,
    BIND_RENDER_TARGET,
    BIND_SAMPLER_VIEW,
    BIND_VERTEX_BUFFER,
    BIND_CONSTANT_BUFFER,
    BIND_DEPTH_STENCIL,
    BIND_RENDER_TARGET | BIND_SCANOUT,
)
FORMATS = (FORMAT_B8G8R8A8_UNORM, FORMAT_B8G8R8X8_UNORM, FORMAT_R8G8B8A8_UNORM)


def command(op: int, body: Sequence[int], obj: int = 0) -> bytes:
    """One command: its header dword (VIRGL_CMD0), then its body."""
    return struct.pack(f"<I{len(body)}I", op | obj << 8 | len(body) << 16, *(v & 0xFFFFFFFF for v in body))


def create_sub_ctx(sub: int) -> bytes:
    return command(CREATE_SUB_CTX, [sub])


def set_sub_ctx(sub: int) -> bytes:
    return command(SET_SUB_CTX, [sub])


def destroy_sub_ctx(sub: int) -> bytes:
    return command(DESTROY_SUB_CTX, [sub])


def create_surface(handle: int, resource: int, fmt: int, level: int = 0, layers: int = 0) -> bytes:
    """A surface (render target view) of a texture: its level, its first and last layer (first | last << 16)."""
    return command(CREATE_OBJECT, [handle, resource, fmt, level, layers], OBJECT_SURFACE)


def destroy_object(handle: int, obj: int = OBJECT_SURFACE) -> bytes:
    return command(DESTROY_OBJECT, [handle], obj)


def set_framebuffer(cbufs: Sequence[int], zsurf: int = 0) -> bytes:
    return command(SET_FRAMEBUFFER_STATE, [len(cbufs), zsurf, *cbufs])


def clear(rgba: Sequence[float], buffers: int = CLEAR_COLOR0, depth: float = 0.0, stencil: int = 0) -> bytes:
    d0, d1 = struct.unpack("<II", struct.pack("<d", depth))
    color = struct.unpack("<4I", struct.pack("<4f", *rgba))
    return command(CLEAR, [buffers, *color, d0, d1, stencil])


def pipe_buffer(
    size: int, blob_id: int, flags: int = RESOURCE_FLAG_MAP_PERSISTENT | RESOURCE_FLAG_MAP_COHERENT
) -> bytes:
    """PIPE_RESOURCE_CREATE of a `size`-byte buffer under `blob_id` (target, format, bind, width, height,
    depth, array_size, last_level, nr_samples, flags, blob_id). virglrenderer refuses Y_0_TOP on a buffer."""
    return command(
        PIPE_RESOURCE_CREATE, [BUFFER, FORMAT_R8_UNORM, BIND_VERTEX_BUFFER, size, 1, 1, 1, 0, 0, flags, blob_id]
    )


def copy_region(dst: int, dst_xyz: Sequence[int], src: int, src_box: Sequence[int], level: int = 0) -> bytes:
    """RESOURCE_COPY_REGION: src_box is x, y, z, w, h, d."""
    return command(RESOURCE_COPY_REGION, [dst, level, *dst_xyz, src, level, *src_box])


def inline_write(resource: int, box: Sequence[int], data: bytes, stride: int = 0, level: int = 0) -> bytes:
    """RESOURCE_INLINE_WRITE of `data` into box (x, y, z, w, h, d); the data padded to dwords."""
    data += bytes(-len(data) % 4)
    words = struct.unpack(f"<{len(data) // 4}I", data)
    return command(RESOURCE_INLINE_WRITE, [resource, level, 0, stride, 0, *box, *words])


def clear_scene(resource: int, fmt: int, rgba: Sequence[float], sub: int = 1, surface: int = 1) -> bytes:
    """A sub-context whose framebuffer is a surface of `resource`, cleared to `rgba`."""
    return (
        create_sub_ctx(sub)
        + set_sub_ctx(sub)
        + create_surface(surface, resource, fmt)
        + set_framebuffer([surface])
        + clear(rgba)
    )


def pixel(fmt: int, rgba: Sequence[float]) -> bytes:
    """The 4 bytes a clear to `rgba` leaves in a texel of `fmt` (unorm: round(c * 255))."""
    r, g, b, a = (max(0, min(255, round(c * 255))) for c in rgba)
    if fmt == FORMAT_B8G8R8A8_UNORM:
        return bytes((b, g, r, a))
    if fmt == FORMAT_B8G8R8X8_UNORM:
        return bytes((b, g, r))  # the fourth byte is undefined
    return bytes((r, g, b, a))
