"""The coherency oracle (coherency.py) on hand-made exchanges: what it knows of a mapped blob's bytes,
where it learns them, when it forgets them, and what it judges."""

from __future__ import annotations

import pytest

from virtgpu_conform.checker.fuzz import virgl
from virtgpu_conform.checker.fuzz.coherency import CoherencyModel
from virtgpu_conform.model.protocol import Protocol

OK, MAPPED = "VIRTIO_GPU_RESP_OK_NODATA", "VIRTIO_GPU_RESP_OK_MAP_INFO"
BLOB, BUF, CTX, N, OFF, RAM = 9, 5, 1, 4096, 0x2000, 0x02000000
X = bytes(range(256)) * (N // 256)
FENCE = {"hdr.flags": 1, "hdr.fence_id": 1}
BOX = {"box.w": N, "box.h": 1, "box.d": 1}


@pytest.fixture(scope="module")
def codec(ir):
    return Protocol(ir).codec


def no_ram(addr, n):
    raise AssertionError("guest RAM read where nothing needs it")


def follow(m, codec, name, fields, answer=OK, entries=None, payload=b"", peek=no_ram):
    req = codec.decode_request(codec.encode(f"VIRTIO_GPU_CMD_{name}", fields, entries, payload), "controlq")
    return m.follow(req, answer, peek)


def mapped_blob(codec) -> CoherencyModel:
    m = CoherencyModel(fence_flag=1)
    follow(m, codec, "CTX_CREATE", {"hdr.ctx_id": CTX})
    blob = {"hdr.ctx_id": CTX, "resource_id": BLOB, "blob_mem": 2, "blob_flags": 1, "blob_id": BLOB, "size": N}
    follow(m, codec, "RESOURCE_CREATE_BLOB", blob, entries=[])
    follow(m, codec, "CTX_ATTACH_RESOURCE", {"hdr.ctx_id": CTX, "resource_id": BLOB})
    follow(m, codec, "RESOURCE_MAP_BLOB", {"resource_id": BLOB, "offset": OFF}, answer=MAPPED)
    return m


def with_buffer(m, codec, ram=RAM):
    buf = {
        "resource_id": BUF,
        "target": virgl.BUFFER,
        "format": virgl.FORMAT_R8_UNORM,
        "bind": virgl.BIND_VERTEX_BUFFER,
    }
    follow(m, codec, "RESOURCE_CREATE_3D", {**buf, "width": N, "height": 1, "depth": 1, "array_size": 1})
    follow(m, codec, "RESOURCE_ATTACH_BACKING", {"resource_id": BUF}, entries=[{"addr": ram, "length": N}])
    follow(m, codec, "CTX_ATTACH_RESOURCE", {"hdr.ctx_id": CTX, "resource_id": BUF})


def test_bytes_written_through_the_region_are_what_it_reads_and_a_different_read_is_found(codec):
    m = mapped_blob(codec)
    assert m.region(OFF, X, 0, None) is None  # the whole blob written: its bytes are known
    assert m.region(OFF + 16, b"", 16, X[16:32]) is None
    wrong = m.region(OFF + 16, b"", 16, bytes(16))
    assert (
        wrong is not None and "16 bytes read at offset 0x2010" in wrong and f"blob {BLOB} is mapped at 0x2000" in wrong
    )
    assert "written through the host-visible region" in wrong and "byte 0: 0x00 read, 0x10 expected" in wrong
    assert m.region(OFF + 8, b"\xaa", 0, None) is None  # a byte patched
    assert m.region(OFF + 8, b"", 1, b"\xaa") is None


def test_a_part_written_first_is_not_enough_to_know_the_blob(codec):
    m = mapped_blob(codec)
    m.region(OFF, X[:100], 0, None)
    assert m.region(OFF, b"", 100, bytes(100)) is None  # the rest unknown: nothing judged


def test_unmapped_the_range_is_gone_and_mapped_again_the_blobs_bytes_are_back(codec):
    m = mapped_blob(codec)
    m.region(OFF, X, 0, None)
    follow(m, codec, "RESOURCE_UNMAP_BLOB", {"resource_id": BLOB})
    assert m.region(OFF, bytes(N), N, bytes(N)) is None  # written and read where nothing is mapped: not the blob's
    follow(m, codec, "RESOURCE_MAP_BLOB", {"resource_id": BLOB, "offset": OFF}, answer=MAPPED)
    assert m.region(OFF, b"", N, X) is None
    wrong = m.region(OFF, b"", N, bytes(N))  # a device that kept what was written to the unmapped range
    assert wrong is not None and wrong.startswith("4080 of 4096 bytes read at offset 0x2000")


def test_a_map_the_device_refused_maps_nothing(codec):
    m = mapped_blob(codec)
    follow(m, codec, "RESOURCE_UNMAP_BLOB", {"resource_id": BLOB})
    follow(m, codec, "RESOURCE_MAP_BLOB", {"resource_id": BLOB, "offset": OFF}, answer="VIRTIO_GPU_RESP_ERR_UNSPEC")
    m.region(OFF, X, 0, None)
    assert m.region(OFF, b"", N, bytes(N)) is None


def test_written_through_the_region_copied_out_and_read_back_into_guest_ram(codec):
    m = mapped_blob(codec)
    with_buffer(m, codec)
    m.region(OFF, X, 0, None)
    copy = virgl.copy_region(BUF, (0, 0, 0), BLOB, (0, 0, 0, N, 1, 1))
    assert follow(m, codec, "SUBMIT_3D", {"hdr.ctx_id": CTX, **FENCE}, payload=copy) is None
    due = follow(m, codec, "TRANSFER_FROM_HOST_3D", {"hdr.ctx_id": CTX, **FENCE, "resource_id": BUF, **BOX})
    assert due is not None and (due.addr, due.data, due.rid) == (RAM, X, BUF)
    assert m.judge(due, X) is None
    wrong = m.judge(due, X[:-1] + b"\x00")
    assert wrong is not None and f"read back from resource {BUF} into guest RAM at {RAM:#x}" in wrong
    assert f"copied from resource {BLOB}, whose bytes were written through the host-visible region" in wrong


def test_an_unfenced_copy_or_any_other_stream_makes_the_bytes_unknown(codec):
    for stream, fenced in (
        (virgl.copy_region(BUF, (0, 0, 0), BLOB, (0, 0, 0, N, 1, 1)), {}),
        (virgl.clear([0, 0, 0, 1]), FENCE),
    ):
        m = mapped_blob(codec)
        with_buffer(m, codec)
        m.region(OFF, X, 0, None)
        follow(m, codec, "SUBMIT_3D", {"hdr.ctx_id": CTX, **fenced}, payload=stream)
        assert (
            follow(m, codec, "TRANSFER_FROM_HOST_3D", {"hdr.ctx_id": CTX, **FENCE, "resource_id": BUF, **BOX}) is None
        )


def test_carried_in_from_guest_ram_copied_into_the_blob_and_read_through_the_region(codec):
    m = mapped_blob(codec)
    with_buffer(m, codec)
    ram = {RAM: X}
    follow(
        m,
        codec,
        "TRANSFER_TO_HOST_3D",
        {"hdr.ctx_id": CTX, **FENCE, "resource_id": BUF, **BOX},
        peek=lambda a, n: ram[a][:n],
    )
    copy = virgl.copy_region(BLOB, (0, 0, 0), BUF, (0, 0, 0, N, 1, 1))
    follow(m, codec, "SUBMIT_3D", {"hdr.ctx_id": CTX, **FENCE}, payload=copy)
    assert m.region(OFF, b"", N, X) is None
    wrong = m.region(OFF, b"", N, bytes(N))
    assert wrong is not None and f"carried in from guest RAM at {RAM:#x}" in wrong


def test_overlapping_mappings_are_not_judged_and_a_reset_forgets_everything(codec):
    m = mapped_blob(codec)
    m.region(OFF, X, 0, None)
    other = {"hdr.ctx_id": CTX, "resource_id": 7, "blob_mem": 2, "blob_flags": 1, "blob_id": 7, "size": N}
    follow(m, codec, "RESOURCE_CREATE_BLOB", other, entries=[])
    follow(m, codec, "RESOURCE_MAP_BLOB", {"resource_id": 7, "offset": OFF}, answer=MAPPED)
    assert m.region(OFF, b"", N, bytes(N)) is None  # which one the region shows there is the device's
    m.reset()
    assert m.res == {} and m.mapped == {}


def test_a_write_and_a_read_in_one_step_read_what_was_written(codec):
    m = mapped_blob(codec)
    m.region(OFF, X, 0, None)
    assert m.region(OFF, b"\xee" * 8, 8, b"\xee" * 8) is None  # the step writes first, then reads
    assert m.region(OFF, b"\xee" * 8, 8, X[:8]) is not None


def test_a_transfer_in_a_context_without_the_buffer_carries_nothing_known(codec):
    m = mapped_blob(codec)
    with_buffer(m, codec)
    follow(m, codec, "CTX_CREATE", {"hdr.ctx_id": 2})
    ram = {RAM: X}
    follow(
        m,
        codec,
        "TRANSFER_TO_HOST_3D",
        {"hdr.ctx_id": 2, **FENCE, "resource_id": BUF, **BOX},
        peek=lambda a, n: ram[a][:n],
    )
    copy = virgl.copy_region(BLOB, (0, 0, 0), BUF, (0, 0, 0, N, 1, 1))
    follow(m, codec, "SUBMIT_3D", {"hdr.ctx_id": CTX, **FENCE}, payload=copy)
    assert m.region(OFF, b"", N, bytes(N)) is None  # the renderer refused that transfer: the blob's bytes unknown


def test_a_destroyed_context_holds_nothing_and_one_never_made_is_attached_nothing(codec):
    m = mapped_blob(codec)
    with_buffer(m, codec)
    follow(m, codec, "CTX_DESTROY", {"hdr.ctx_id": CTX})
    assert all(CTX not in r.contexts for r in m.res.values())
    follow(m, codec, "CTX_ATTACH_RESOURCE", {"hdr.ctx_id": 5, "resource_id": BUF})
    assert 5 not in m.res[BUF].contexts
