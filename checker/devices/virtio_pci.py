"""A virtio-pci (modern) driver over qtest: find the device, negotiate, set up split virtqueues, send descriptor chains."""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from virtgpu_conform.spec.errors import Error

from .qtest import QemuProcess, write_command

VENDOR_VIRTIO, DEVICE_GPU = 0x1AF4, 0x1050
VERSION_1 = 32  # the feature bit every modern device offers
CAP_VENDOR = 0x09
CAP_COMMON, CAP_NOTIFY, CAP_ISR, CAP_DEVICE = 1, 2, 3, 4
CAP_SHM = 8  # VIRTIO_PCI_CAP_SHARED_MEMORY_CFG: a virtio_pci_cap64, its `id` the shared memory region's
SHM_HOST_VISIBLE = 1  # VIRTIO_GPU_SHM_ID_HOST_VISIBLE
# virtio_pci_common_cfg offsets
DFSEL, DF, GFSEL, GF, NUMQ, STATUS = 0x00, 0x04, 0x08, 0x0C, 0x12, 0x14
QSEL, QSIZE, QMSIX, QENABLE, QNOFF, QDESC, QDRIVER, QDEVICE = 0x16, 0x18, 0x1A, 0x1C, 0x1E, 0x20, 0x28, 0x30
ACK, DRIVER, DRIVER_OK, FEATURES_OK = 1, 2, 4, 8
DESC_NEXT, DESC_WRITE = 1, 2
NO_VECTOR = 0xFFFF

BAR_BASE = 0xE0000000  # inside q35's 32-bit PCI hole
RING_BASE = 0x00100000  # guest RAM for the rings
DATA_BASE = 0x00400000  # guest RAM for request and response buffers, reused per chain
DATA_SIZE = 0x00400000


class DeviceError(Error):
    """The device did not behave like a virtio-pci device (not found, refused the features, ...)."""


class Stalled(Error):
    """A chain the device never completed: the queue cannot be trusted any more."""


@dataclass
class Used:
    """What the device wrote back for one chain."""

    length: int  # the used element's len: bytes written into the device-writable buffers
    data: bytes  # the device-writable buffers, concatenated
    seconds: float


@dataclass
class _Queue:
    index: int
    size: int
    desc: int
    avail: int
    used: int
    notify: int
    avail_idx: int = 0
    used_idx: int = 0
    stalled: bool = False


class VirtioPci:
    def __init__(self, q: QemuProcess):
        self.q = q
        self.devfn: Optional[int] = None
        self.caps: dict[int, tuple[int, int, int, Optional[int]]] = {}
        self.queues: dict[int, _Queue] = {}
        self.offered = 0
        self.negotiated = 0

    # --- PCI configuration mechanism #1 on bus 0 ---------------------------
    def _cfg_addr(self, off: int) -> int:
        assert self.devfn is not None, "find() or restore() sets it first"
        return 0x80000000 | (self.devfn << 8) | (off & 0xFC)

    def cfg_read(self, off: int, size: int = 4) -> int:
        self.q.outl(0xCF8, self._cfg_addr(off))
        v = self.q.inl(0xCFC) >> (8 * (off & 3))
        return v & ((1 << (8 * size)) - 1)

    def cfg_write(self, off: int, val: int) -> None:
        self.q.outl(0xCF8, self._cfg_addr(off))
        self.q.outl(0xCFC, val)

    def find(self) -> None:
        for dev in range(32):
            self.devfn = dev << 3
            if self.cfg_read(0) == (DEVICE_GPU << 16) | VENDOR_VIRTIO:
                return
        self.devfn = None
        raise DeviceError("no virtio-gpu (1af4:1050) on PCI bus 0")

    def map_bars(self) -> None:
        if not self.cfg_read(0x06, 2) & 0x10:
            raise DeviceError("the device has no PCI capability list")
        ptr = self.cfg_read(0x34, 1) & 0xFC
        seen = 0
        while ptr and seen < 48:
            seen += 1
            if self.cfg_read(ptr, 1) == CAP_VENDOR:
                kind, bar = self.cfg_read(ptr + 3, 1), self.cfg_read(ptr + 4, 1)
                off, length = self.cfg_read(ptr + 8), self.cfg_read(ptr + 12)
                extra = self.cfg_read(ptr + 16) if kind == CAP_NOTIFY else None
                if kind == CAP_SHM:  # 64-bit offset and length; only the host-visible region is the GPU's
                    off |= self.cfg_read(ptr + 16) << 32
                    length |= self.cfg_read(ptr + 20) << 32
                    if self.cfg_read(ptr + 5, 1) != SHM_HOST_VISIBLE:
                        kind = -1
                if kind >= 0:
                    self.caps.setdefault(kind, (bar, off, length, extra))
            ptr = self.cfg_read(ptr + 1, 1) & 0xFC
        missing = {CAP_COMMON, CAP_NOTIFY, CAP_DEVICE} - set(self.caps)
        if missing:
            raise DeviceError(f"virtio capabilities missing: types {sorted(missing)}")
        bars = {self.caps[k][0] for k in (CAP_COMMON, CAP_NOTIFY, CAP_DEVICE, CAP_SHM) if k in self.caps}
        self.bar_addr = {}
        base = BAR_BASE
        for bar in sorted(bars):
            reg = 0x10 + 4 * bar
            self.cfg_write(reg, 0xFFFFFFFF)
            size = (~(self.cfg_read(reg) & ~0xF) & 0xFFFFFFFF) + 1
            base = (base + size - 1) & ~(size - 1)
            self.bar_addr[bar] = base
            base += size
        self._program()

    def layout(self) -> tuple:
        """Where the device sits and what its capabilities say: the same for every QEMU started
        with the same command line, so a restarted one need not be walked again (`restore`)."""
        return self.devfn, dict(self.caps), dict(self.bar_addr)

    def restore(self, layout: tuple) -> None:
        """find() and map_bars() for a device known from `layout`: a dozen qtest round trips, not a hundred."""
        self.devfn, caps, bar_addr = layout
        self.caps, self.bar_addr = dict(caps), dict(bar_addr)
        if self.cfg_read(0) != (DEVICE_GPU << 16) | VENDOR_VIRTIO:
            raise DeviceError(f"no virtio-gpu (1af4:1050) at devfn {self.devfn:#x} any more")
        self._program()

    def _program(self) -> None:
        for bar, base in sorted(self.bar_addr.items()):
            reg = 0x10 + 4 * bar
            self.cfg_write(reg, base)
            self.cfg_write(reg + 4, 0)  # 64-bit BAR: high half
        self.cfg_write(0x04, self.cfg_read(0x04, 2) | 0x6)  # memory space + bus master
        self.common = self._at(CAP_COMMON)
        mult = self.caps[CAP_NOTIFY][3]
        assert mult is not None, "map_bars() reads the notify capability's multiplier"
        self.notify_base, self.notify_mult = self._at(CAP_NOTIFY), mult
        self.devcfg = self._at(CAP_DEVICE)

    def host_visible(self) -> Optional[tuple[int, int]]:
        """The host-visible shared memory region (VIRTIO_GPU_SHM_ID_HOST_VISIBLE) as mapped: its guest
        physical address and its length; None when the device announces none."""
        if CAP_SHM not in self.caps:
            return None
        return self._at(CAP_SHM), self.caps[CAP_SHM][2]

    def _at(self, kind: int) -> int:
        bar, off, _, _ = self.caps[kind]
        return self.bar_addr[bar] + off

    # --- device status and features -----------------------------------------
    def status(self) -> int:
        return self.q.read_int(1, self.common + STATUS)

    def set_status(self, val: int) -> None:
        self.q.write_int(1, self.common + STATUS, val)

    def negotiate(self, want: int) -> int:
        """Reset, ACK, DRIVER, features (VERSION_1 always), FEATURES_OK; returns what was agreed."""
        c = self.common
        self.set_status(0)
        self.set_status(ACK)
        self.set_status(ACK | DRIVER)
        self.offered = 0
        for sel in (0, 1):
            self.q.write_int(4, c + DFSEL, sel)
            self.offered |= self.q.read_int(4, c + DF) << (32 * sel)
        if not self.offered >> VERSION_1 & 1:
            raise DeviceError("the device does not offer VIRTIO_F_VERSION_1 (a legacy-only device)")
        self.negotiated = self.offered & (want | 1 << VERSION_1)
        for sel in (0, 1):
            self.q.write_int(4, c + GFSEL, sel)
            self.q.write_int(4, c + GF, (self.negotiated >> (32 * sel)) & 0xFFFFFFFF)
        self.set_status(ACK | DRIVER | FEATURES_OK)
        if not self.status() & FEATURES_OK:
            raise DeviceError(f"the device refused features {self.negotiated:#x}")
        return self.negotiated

    def config(self, size: int) -> bytes:
        return self.q.memread(self.devcfg, size)

    def config_write(self, offset: int, data: bytes) -> None:
        """The driver's write to the device configuration, one access per aligned 4, 2 or 1 bytes."""
        pos = 0
        while pos < len(data):
            at = offset + pos
            n = next(n for n in (4, 2, 1) if at % n == 0 and pos + n <= len(data))
            self.q.write_int(n, self.devcfg + at, int.from_bytes(data[pos : pos + n], "little"))
            pos += n

    def setup_queues(self, count: int = 2, size: int = 64) -> None:
        c = self.common
        have = self.q.read_int(2, c + NUMQ)
        if have < count:
            raise DeviceError(f"the device has {have} queues; virtio-gpu has controlq and cursorq")
        ram = RING_BASE
        for i in range(count):
            self.q.write_int(2, c + QSEL, i)
            n = min(size, self.q.read_int(2, c + QSIZE))
            self.q.write_int(2, c + QSIZE, n)
            desc, avail = ram, ram + 16 * n
            used = (avail + 6 + 2 * n + 3) & ~3
            ram = (used + 6 + 8 * n + 4095) & ~4095
            self.q.memwrite(desc, bytes(ram - desc))
            self.q.write_int(8, c + QDESC, desc)
            self.q.write_int(8, c + QDRIVER, avail)
            self.q.write_int(8, c + QDEVICE, used)
            self.q.write_int(2, c + QMSIX, NO_VECTOR)  # polled: no interrupts needed
            noff = self.q.read_int(2, c + QNOFF)
            self.q.write_int(2, c + QENABLE, 1)
            self.queues[i] = _Queue(i, n, desc, avail, used, self.notify_base + noff * self.notify_mult)

    def driver_ok(self) -> None:
        self.set_status(ACK | DRIVER | FEATURES_OK | DRIVER_OK)

    # --- one descriptor chain ---------------------------------------------------
    def send(self, queue: int, outs: Sequence[bytes], in_sizes: Sequence[int], timeout: float = 2.0) -> Used:
        """Place driver-readable buffers `outs` then device-writable buffers of `in_sizes`, kick, poll.

        Raises Stalled when the device does not complete the chain within `timeout`.
        """
        qd, ins = self._place(queue, outs, in_sizes)
        t0 = time.monotonic()
        self.q.write_int(2, qd.notify, queue)
        self.q.polled(2, qd.used + 2)
        while self.q.poll_int(2, qd.used + 2) == qd.used_idx:
            if time.monotonic() - t0 > timeout:
                qd.stalled = True
                raise Stalled(f"no completion on queue {queue} within {timeout:g} s")
        elem = qd.used + 4 + 8 * (qd.used_idx % qd.size)
        _, length = struct.unpack("<II", self.q.memread(elem, 8))
        qd.used_idx = (qd.used_idx + 1) & 0xFFFF
        data = b"".join(self.q.memread(a, ln) for a, ln in ins)
        return Used(length, data, time.monotonic() - t0)

    def send_group(
        self, queue: int, chains: Sequence[tuple[Sequence[bytes], Sequence[int]]], timeout: float = 2.0
    ) -> tuple[list[Optional[Used]], list[int]]:
        """Chains (outs, in_sizes) made available together and kicked once, as a driver with several
        commands in flight does: each chain's answer (None: not completed within `timeout`), and the
        chains' indexes in the order the device completed them. A chain not completed stalls the queue."""
        qd = self.queues[queue]
        room = qd.size // max(1, len(chains))  # descriptors each chain may use
        placed = [
            self._place(queue, outs, ins, DATA_BASE + k * (DATA_SIZE // len(chains)), first=k * room, room=room)[1]
            for k, (outs, ins) in enumerate(chains)
        ]
        t0 = time.monotonic()
        self.q.write_int(2, qd.notify, queue)
        self.q.polled(2, qd.used + 2)
        answers: list[Optional[Used]] = [None] * len(chains)
        order: list[int] = []
        while len(order) < len(chains):
            if self.q.poll_int(2, qd.used + 2) == qd.used_idx:
                if time.monotonic() - t0 > timeout:
                    qd.stalled = True
                    break
                continue
            elem = qd.used + 4 + 8 * (qd.used_idx % qd.size)
            head, length = struct.unpack("<II", self.q.memread(elem, 8))
            qd.used_idx = (qd.used_idx + 1) & 0xFFFF
            k = head // room if head % room == 0 and head // room < len(chains) else -1
            if k < 0 or answers[k] is not None:
                raise DeviceError(f"the device completed descriptor {head}, the head of no chain in flight")
            data = b"".join(self.q.memread(a, ln) for a, ln in placed[k])
            answers[k] = Used(length, data, time.monotonic() - t0)
            order.append(k)
        return answers, order

    def _place(
        self,
        queue: int,
        outs: Sequence[bytes],
        in_sizes: Sequence[int],
        base: int = DATA_BASE,
        first: int = 0,
        room: int = 0,
    ) -> tuple[_Queue, list]:
        """Write the chain (its buffers from `base`, its descriptors from index `first`, `room` of
        them at most) and make it available, without a kick: its queue, and its device-writable buffers."""
        qd = self.queues[queue]
        if qd.stalled:
            raise Stalled(f"queue {queue} is stalled by an earlier chain")
        n = len(outs) + len(in_sizes)
        if not 0 < n <= (room or qd.size):
            raise ValueError(f"a chain of {n} descriptors does not fit queue {queue} of size {qd.size}")
        addr, descs, ins = base, [], []
        for i, buf in enumerate(list(outs) + [None] * len(in_sizes)):
            length = len(buf) if buf is not None else in_sizes[i - len(outs)]
            if buf is not None:
                self.q.memwrite(addr, buf)
            else:
                self.q.memwrite(addr, bytes(length))  # what the device does not write stays zero
                ins.append((addr, length))
            flags = (DESC_NEXT if i + 1 < n else 0) | (DESC_WRITE if buf is None else 0)
            descs.append(struct.pack("<QIHH", addr, length, flags, first + i + 1 if i + 1 < n else 0))
            addr = (addr + length + 15) & ~15
            if addr > DATA_BASE + DATA_SIZE:  # (a chain from a later `base` has less room)
                raise ValueError("the chain's buffers exceed the scratch area")
        self.q.memwrite(qd.desc + 16 * first, b"".join(descs))
        self.q.write_int(2, qd.avail + 4 + 2 * (qd.avail_idx % qd.size), first)
        qd.avail_idx = (qd.avail_idx + 1) & 0xFFFF
        self.q.write_int(2, qd.avail + 2, qd.avail_idx)
        return qd, ins

    def kick_and_reset(self, chains: Sequence[tuple[int, Sequence[bytes], Sequence[int]]]) -> None:
        """Chains (queue, outs, in_sizes), one a queue, kicked and the device reset in one breath:
        QEMU takes all these writes before it works on a chain (in a bottom half), so the reset
        finds them pending."""
        kicks = []
        for n, (queue, outs, in_sizes) in enumerate(chains):
            qd, _ = self._place(queue, outs, in_sizes, DATA_BASE + n * DATA_SIZE // len(chains))
            kicks.append(write_command(2, qd.notify, queue))
        self.q.cmds([*kicks, write_command(1, self.common + STATUS, 0)])

    def notify_all(self) -> None:
        """Kick every queue the device had, set up now or not."""
        for qd in self.queues.values():
            self.q.write_int(2, qd.notify, qd.index)
