"""The device state the rules read and change: resources, backing, contexts, scanouts, mappings, fences."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

KIND_NONE, KIND_2D, KIND_3D, KIND_BLOB = 0, 1, 2, 3


@dataclass(frozen=True)
class Capset:
    id: int
    max_version: int
    max_size: int


@dataclass(frozen=True)
class Settings:
    """What the device offers and the driver negotiated: features and config space."""

    features: frozenset[str] = frozenset()
    num_scanouts: int = 1
    capsets: tuple[Capset, ...] = ()
    blob_alignment: int = 0  # config value; meaningful only with VIRTIO_GPU_F_BLOB_ALIGNMENT
    host_visible: Optional[int] = None  # size of shared memory region VIRTIO_GPU_SHM_ID_HOST_VISIBLE, None = absent
    known: bool = True  # False: a trace that does not say (features, config); the facts above stay unknown

    @property
    def num_capsets(self) -> int:
        return len(self.capsets)


@dataclass
class Resource:
    id: int
    kind: int  # KIND_2D | KIND_3D | KIND_BLOB
    format: int = 0
    width: int = 0
    height: int = 0
    depth: int = 1
    blob_mem: int = 0
    blob_flags: int = 0
    blob_id: int = 0
    size: int = 0  # blob size in bytes
    backing: Optional[list[tuple[int, int]]] = None  # (addr, length) guest pages; None = no backing
    uuid: Optional[bytes] = None
    contexts: set[int] = field(default_factory=set)
    mapped: Optional[tuple[int, int]] = None  # (offset, size) in the host-visible region
    transferred: bool = False  # some TRANSFER_TO_HOST_* completed on it

    def clone(self) -> Resource:
        new = _shallow(self)
        new.contexts = set(self.contexts)
        return new


@dataclass
class Scanout:
    resource_id: int = 0  # 0: disabled
    rect: tuple[int, int, int, int] = (0, 0, 0, 0)
    blob: Optional[dict[str, int]] = None  # width/height/format/strides/offsets for SET_SCANOUT_BLOB


@dataclass
class Cursor:
    scanout_id: int = 0
    x: int = 0
    y: int = 0
    resource_id: int = 0  # 0: hidden
    hot_x: int = 0
    hot_y: int = 0


@dataclass
class Context:
    id: int
    capset: int = 0  # from context_init, 0 = the device's default
    debug_name: bytes = b""


@dataclass
class Timeline:
    """Fences on one timeline: the global one, or (ctx_id, ring_idx) with FLAG_INFO_RING_IDX."""

    last_submitted: Optional[int] = None
    last_completed: Optional[int] = None
    pending: list[int] = field(default_factory=list)  # fence ids submitted and not answered, in order


@dataclass
class State:
    settings: Settings
    # from the SpecIR, set by the protocol: VIRTIO_GPU_FLAG_INFO_RING_IDX and VIRTIO_GPU_CONTEXT_INIT_CAPSET_ID_MASK
    ring_idx_flag: int
    capset_id_mask: int
    resources: dict[int, Resource] = field(default_factory=dict)
    scanouts: dict[int, Scanout] = field(default_factory=dict)
    cursor: Cursor = field(default_factory=Cursor)
    contexts: dict[int, Context] = field(default_factory=dict)
    timelines: dict[tuple, Timeline] = field(default_factory=dict)
    display_info_read: Optional[bool] = False  # None: the trace may start after initialisation
    edid_read: Optional[bool] = False
    commands: int = 0  # commands seen since the last reset
    complete: bool = True  # False: the trace began mid-session, so objects may exist the books never saw

    def reset(self) -> None:
        """Device reset: everything but the settings goes."""
        type(self).__init__(self, self.settings, self.ring_idx_flag, self.capset_id_mask)

    def clone(self) -> State:
        """An independent copy, cheaper than deepcopy: effects replace scanouts, contexts and
        backing lists whole, and mutate only resources, the cursor and timelines in place."""
        new = _shallow(self)
        new.resources = {k: r.clone() for k, r in self.resources.items()}
        new.scanouts = dict(self.scanouts)
        new.contexts = dict(self.contexts)
        new.cursor = _shallow(self.cursor)
        new.timelines = {
            k: Timeline(t.last_submitted, t.last_completed, list(t.pending)) for k, t in self.timelines.items()
        }
        return new

    def mappings(self) -> dict[int, tuple[int, int]]:
        return {r.id: r.mapped for r in self.resources.values() if r.mapped is not None}

    def timeline(self, key: tuple) -> Timeline:
        tl = self.timelines.get(key)
        if tl is None:
            tl = self.timelines[key] = Timeline()
        return tl


def _shallow(obj):
    """What copy.copy makes of a plain dataclass instance (a new object, its __dict__ copied),
    without copy's generic protocol, several times cheaper: a candidate split clones a state."""
    new = object.__new__(obj.__class__)
    new.__dict__.update(obj.__dict__)
    return new


def timeline_key(fields: dict, ring_idx_flag: int) -> tuple:
    """The timeline a fenced command is on: per (ctx_id, ring_idx) when it asks for a ring."""
    flags = fields.get("hdr.flags") or 0
    if flags & ring_idx_flag:
        return ("ring", fields.get("hdr.ctx_id"), fields.get("hdr.ring_idx"))
    return ("global",)


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[0] + b[1] and b[0] < a[0] + a[1]
