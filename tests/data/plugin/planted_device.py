"""A device program for the adapter protocol with one planted bug: RESOURCE_UNREF of any id is
answered OK_NODATA (the spec wants an error for a resource that does not exist). The pytest
plugin's tests fuzz it and must find, shrink, save and replay that finding."""

import os
import sys

from virtgpu_conform.checker.devices.adapter_serve import serve
from virtgpu_conform.checker.devices.target import ReferenceTarget, Reply
from virtgpu_conform.spec.load import load_snapshot

IR = load_snapshot()
UNREF = IR.command("VIRTIO_GPU_CMD_RESOURCE_UNREF").code
OK_NODATA = next(r.code for r in IR.responses if r.name == "VIRTIO_GPU_RESP_OK_NODATA")


class Planted(ReferenceTarget):
    def send(self, queue, outs, in_sizes):
        reply = super().send(queue, outs, in_sizes)
        data = b"".join(outs)
        if (
            queue == "controlq"
            and len(data) >= 24
            and int.from_bytes(data[:4], "little") == UNREF
            and reply.status == "answered"
            and len(reply.data) >= 24
        ):
            return Reply("answered", OK_NODATA.to_bytes(4, "little") + reply.data[4:])
        return reply


if __name__ == "__main__":
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    serve(IR, sys.stdin.buffer, out, lambda features: Planted(IR, features))
