"""Device targets behind one interface (send a chain, reset, close), and the embedded reference device."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Optional

from virtgpu_conform.model.codec import Leaves, codec_for
from virtgpu_conform.model.device import ReferenceDevice, default_settings
from virtgpu_conform.model.state import Capset, Settings
from virtgpu_conform.spec.errors import Error
from virtgpu_conform.spec.ir import SpecIR

QUEUES = {"controlq": 0, "cursorq": 1}
# A step on no queue: the device is saved and restored in a new process (a migration) between two
# chains; a target that `migrates` answers it "answered" once the new device runs, "refused" when
# the machine cannot be migrated at all (a migration blocker), and no more after that.
MIGRATION = "migration"
# A step on no queue: a driver write to the device configuration (config_step builds it); a target
# that `config_writes` answers it with the configuration read right before the write, then after.
CONFIG = "config"


# A step on no queue: a virtio reset mid-case, and the device initialised again (its one buffer is a
# byte of these flags). A target that `resets` answers it "answered" once the device runs again.
DEVICE_RESET = "device-reset"
PENDING = 1  # a chain on each queue is kicked in the same breath as the reset: the reset finds them pending
EARLY_NOTIFY = 2  # both queues are kicked after the reset, before they are set up again
RESET_HOW = {PENDING: "pending", EARLY_NOTIFY: "early_notify"}  # the flags as the native reset record names them


# A step on no queue: the driver's own access to the host-visible region (shared memory id 1), where
# MAP_BLOB puts a blob: bytes written at an offset, then bytes read there (host_visible_step builds
# its one buffer). A target with a region (`host_visible_io`) answers it with the bytes read.
HOST_VISIBLE = "host-visible"


def host_visible_step(offset: int, data: bytes = b"", read: int = 0) -> bytes:
    """The one buffer of a HOST_VISIBLE step: the offset in the region (u64), how many bytes to read
    there after the write (u32), then the bytes written (none: a read alone)."""
    return offset.to_bytes(8, "little") + read.to_bytes(4, "little") + data


def host_visible_of_step(out: bytes) -> tuple[int, bytes, int]:
    """(offset, bytes written, bytes to read) of a HOST_VISIBLE step's buffer."""
    return int.from_bytes(out[:8], "little"), out[12:], int.from_bytes(out[8:12], "little")


# A step of several chains on one queue, made available together and kicked once (a driver with
# commands in flight): its one buffer holds the chains (together_step). A device may complete them in
# any order; the answer's `parts` are each chain's answer, with the position it was completed in.
TOGETHER = "together"
MOST_TOGETHER = 8  # chains in one TOGETHER step at most (each gets an eighth of the queue's descriptors)


def together_step(queue: str, chains: Sequence[tuple[Sequence[bytes], Sequence[int]]]) -> bytes:
    """The one buffer of a TOGETHER step: the queue's name, then each chain's buffers and answer sizes."""
    out = bytearray(queue.encode() + b"\0")
    out.append(len(chains))
    for outs, ins in chains:
        out += bytes((len(outs), len(ins)))
        for b in outs:
            out += len(b).to_bytes(4, "little") + b
        for n in ins:
            out += n.to_bytes(4, "little")
    return bytes(out)


def chains_of_step(buf: bytes) -> tuple[str, list[tuple[list[bytes], list[int]]]]:
    """The queue and chains a TOGETHER step's buffer holds."""
    end = buf.index(0)
    queue, count, pos = buf[:end].decode(), buf[end + 1], end + 2
    chains = []
    for _ in range(count):
        n_out, n_in = buf[pos], buf[pos + 1]
        pos += 2
        outs = []
        for _ in range(n_out):
            size = int.from_bytes(buf[pos : pos + 4], "little")
            outs.append(buf[pos + 4 : pos + 4 + size])
            pos += 4 + size
        ins = [int.from_bytes(buf[pos + 4 * i : pos + 4 * i + 4], "little") for i in range(n_in)]
        pos += 4 * n_in
        chains.append((outs, ins))
    return queue, chains


def in_turn(send, buf: bytes) -> Reply:
    """A TOGETHER step sent one chain after the other, for a device that takes one at a time: each
    answered in the order sent."""
    queue, chains = chains_of_step(buf)
    parts: list[Reply] = []
    for outs, ins in chains:
        r = send(queue, outs, ins)
        r.order = len(parts) if r.status == "answered" else None
        parts.append(r)
        if r.status != "answered":
            break
    last = parts[-1].status
    return Reply("answered" if len(parts) == len(chains) and last == "answered" else last, parts=parts)


def config_step(offset: int, data: bytes) -> bytes:
    """The one buffer of a CONFIG step: the byte offset (u16) and the bytes written there."""
    return offset.to_bytes(2, "little") + data


def config_of_step(out: bytes) -> tuple[int, bytes]:
    return int.from_bytes(out[:2], "little"), out[2:]


@dataclass
class Reply:
    """A device's answer to one chain: what it wrote, or why there is nothing."""

    status: str  # answered | no-answer (the chain was never completed) | died (the device process is gone)
    data: bytes = b""  # the bytes the device reported writing (used length), at most the buffers' size
    detail: str = ""
    twin: Optional[Reply] = None  # after a migration: the answer of the same device not migrated
    parts: Optional[list[Reply]] = None  # a TOGETHER step's: each chain's answer, in the order sent
    order: Optional[int] = None  # a part's: the position the device completed it in (None: it did not)


def flat(r: Reply) -> tuple:
    """The reply as plain values: a tuple pickles in a fraction of a dataclass's time (pipeline.py)."""
    return (
        r.status,
        r.data,
        r.detail,
        r.twin and flat(r.twin),
        r.parts and [flat(p) for p in r.parts],
        r.order,
    )


def unflat(t: tuple) -> Reply:
    status, data, detail, twin, parts, order = t
    return Reply(status, data, detail, twin and unflat(twin), parts and [unflat(p) for p in parts], order)


def used_reply(length: int, data: bytes, room: int) -> Reply:
    """The answer a used element of `length` over `room` bytes of device-writable buffers (read as `data`) gives."""
    if length > room:
        return Reply(
            "answered", data, detail=f"used length {length} exceeds the {room} bytes of device-writable buffers"
        )
    return Reply("answered", data[:length])


class TargetError(Error):
    """A target that cannot be started here (missing binary, device refused to initialise)."""


class DeviceRefused(TargetError):
    """The device, as configured, is refused by its own program (QEMU's realize failed on a device
    option at its edge: max_outputs past 16, blob without udmabuf). A result about the device, not a
    failure of the tool: `reason` is the program's own words."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Target:
    name: str
    settings: Settings = field(default_factory=Settings)
    migrates = False  # sends of MIGRATION move the device to a new process, keeping its state
    config_writes = False  # sends of CONFIG write the device configuration
    resets = False  # sends of DEVICE_RESET reset the device mid-case
    host_visible_io = False  # sends of HOST_VISIBLE write and read the host-visible region
    # reset() starts a new device process every time when True; None: the target has no such choice
    fresh_starts: Optional[bool] = None

    def send(self, queue: str, outs: Sequence[bytes], in_sizes: Sequence[int]) -> Reply:
        raise NotImplementedError

    def reset(self) -> None:
        """Bring the device back to its state right after initialisation (between fuzz cases)."""
        raise NotImplementedError

    def record(self) -> None:
        """reset(), for a session to be saved as a reproducer in the device's own form (write_reproducer)."""
        self.reset()

    def write_reproducer(self, about: str) -> list[str]:
        """Write the session since record() in the device's own form beside its logs; the files written.
        `about`: what the session shows, for the reader. A target with no such form writes nothing."""
        return []

    def peek(self, addr: int, size: int) -> Optional[bytes]:
        """Guest RAM as the device left it (what a transfer from the host wrote), or None where the
        target has no guest RAM to read."""
        return None

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ReferenceTarget(Target):
    """The model's own device: the embedded default, needs nothing installed."""

    config_writes = resets = True

    def __init__(self, ir: SpecIR, features: Optional[frozenset[str]] = None):
        settings = default_settings(ir, features)
        super().__init__("reference", settings)
        self.ir = ir
        self.device = ReferenceDevice(ir, settings)
        self.events_read = 0  # no display ever changes here

    def reset(self) -> None:
        self.device.state = self.device.protocol.new_state(self.settings)  # a new device, without rebuilding the rules

    def config(self) -> bytes:
        s = self.settings
        return codec_for(self.ir).encode_config(
            {
                "events_read": self.events_read,
                "num_scanouts": s.num_scanouts,
                "num_capsets": s.num_capsets,
                "blob_alignment": s.blob_alignment,
            }
        )

    def send(self, queue: str, outs: Sequence[bytes], in_sizes: Sequence[int]) -> Reply:
        if queue == MIGRATION:
            return Reply("answered")  # the model's state is the same object after as before
        if queue == DEVICE_RESET:
            self.reset()  # nothing is ever pending here, and nothing listens before set-up
            return Reply("answered")
        if queue == TOGETHER:
            return in_turn(self.send, outs[0])
        if queue == HOST_VISIBLE:
            return Reply("refused", detail="the reference device has no host-visible region")
        if queue == CONFIG:
            # Only events_clear is the driver's to write: it clears the bits of events_read it names.
            before = self.config()
            clear = codec_for(self.ir).written_config(*config_of_step(outs[0])).get("events_clear")
            if isinstance(clear, int):
                self.events_read &= ~clear
            return Reply("answered", before + self.config())
        answer = self.device.handle(b"".join(outs), queue)
        if queue == "cursorq":
            return Reply("answered", b"")  # cursor commands get no answer written, as QEMU does
        return Reply("answered", answer[: sum(in_sizes)])


def feature_bits(ir: SpecIR, names) -> int:
    bits = {f.name: f.bit for f in ir.features}
    return sum(1 << bits[n] for n in names if n in bits)


def settings_from_config(
    ir: SpecIR,
    agreed: int,
    config: bytes,
    capsets: Optional[Sequence[tuple[int, int, int]]] = None,
    host_visible: Optional[int] = None,
) -> Settings:
    """What the driver learnt at initialisation: the features agreed, the config it read (decoded by
    the codec from the SpecIR's layout), and the capsets when they were told (otherwise the model
    treats the device's settings as unknown, as it cannot know what GET_CAPSET_INFO would say)."""
    cfg: Leaves = codec_for(ir).decode_config(config)
    num_capsets = cfg.get("num_capsets") or 0
    told = capsets is not None and len(capsets) == num_capsets
    features = frozenset(f.name for f in ir.features if agreed >> f.bit & 1)
    if "VIRTIO_GPU_F_BLOB_ALIGNMENT" not in features:
        # the field is there only with the feature: a device without it may read past its config (QEMU: all ones)
        cfg = {**cfg, "blob_alignment": 0}
    return Settings(
        features=features,
        num_scanouts=cfg.get("num_scanouts") or 0,
        capsets=tuple(Capset(*c) for c in capsets)
        if told and capsets
        else tuple(Capset(0, 0, 0) for _ in range(num_capsets)),
        blob_alignment=cfg.get("blob_alignment") or 0,
        host_visible=host_visible or None,
        known=told or num_capsets == 0,
    )
