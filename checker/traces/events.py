"""What importers hand the checker: exchanges (a request with what is known of its answer), resets, session facts, diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from virtgpu_conform.model.codec import Message
from virtgpu_conform.spec.errors import Error

CONTROLQ, CURSORQ = "controlq", "cursorq"
# why a request has no answer in the trace
NO_ANSWER = "the trace records that no answer came"
TRACE_ENDED = "the trace ends before its answer"
RESET = "a device reset came before its answer"
OVERTAKEN = "4096 later requests were answered first"
OVERTAKEN_BY = "later requests were answered"
LOST = "its completion was not readable in the trace (a lost or broken line)"


class Where:
    """A place in a trace file: what every finding points back to. Never changed once made
    (a plain class, not a frozen dataclass: importers make one per line, at a third of the cost)."""

    __slots__ = ("file", "line")

    def __init__(self, file: str, line: int):
        self.file = file
        self.line = line

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Where:
            return NotImplemented
        return self.file == other.file and self.line == other.line

    def __hash__(self) -> int:
        return hash((self.file, self.line))

    def __repr__(self) -> str:
        return f"Where(file={self.file!r}, line={self.line!r})"

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)  # one per command: slots make it cheaper to build and to read
class Exchange:
    """One request and everything the trace says about its answer.

    `resp` is the decoded response when the trace has it (bytes or type). Otherwise
    `resp_types` narrows the answer from indirect evidence (a written length, the
    device's own complaint); None there means the trace says nothing about it.
    `answered` is False when the trace shows the request but never its completion;
    `unanswered` then says why. Only the trace's own statement that no answer came
    (NO_ANSWER) proves the device silent: a trace that ends, a reset, a lost line do not.
    """

    where: Where
    req: Message
    queue: Optional[str] = None
    resp: Optional[Message] = None
    resp_types: Optional[frozenset[str]] = None
    resp_where: Optional[Where] = None
    answered: bool = True
    unanswered: str = ""  # NO_ANSWER, TRACE_ENDED, RESET, OVERTAKEN, LOST
    no_body: bool = False  # completed with nothing written (QEMU's cursorq): processed, no answer to judge
    evidence: list[str] = field(default_factory=list)  # why resp_types is what it is, for messages
    ts: Optional[float] = None
    source: str = ""  # the importer: native | qemu | guest | merged
    also: list[Where] = field(default_factory=list)  # the same command in another source of the session
    index: int = 0  # set by the checker: the exchange's number in the session
    resp_room: Optional[int] = None  # bytes of device-writable buffer the driver gave, when the trace says
    # The request's number on its queue: the guest driver's seqno, or QEMU's count of the queue's
    # commands since the device's reset. Two complete logs of one session number alike.
    seqno: Optional[int] = None
    # Why the source could not name the command (QEMU's log: an element popped and filled with no command
    # event between, as QEMU traces none for some); the checker says so where no other source names it
    untraced: str = ""
    # Commands the exchange's source cannot show at all (QEMU traced without pops has no event for some):
    # its seqno counts only the others, and the other source's ones of these have no counterpart here
    unseen: frozenset = frozenset()


@dataclass(frozen=True)
class Reset:
    """The device was reset (or initialised): state and fence books start over."""

    where: Where
    known_start: bool = True  # the session's start is in the trace (init-time rules apply)


@dataclass(frozen=True)
class ConfigWrite:
    """The driver wrote `data` at `offset` of the device configuration; `before`, `read`: the whole
    configuration as read right before and right after (None: the trace does not say)."""

    where: Where
    offset: int
    data: bytes
    read: Optional[bytes] = None
    before: Optional[bytes] = None


@dataclass(frozen=True)
class Session:
    """What a trace says about the device it talked to. None: the trace does not say."""

    where: Where
    spec: Optional[str] = None
    features: Optional[frozenset[str]] = None
    num_scanouts: Optional[int] = None
    num_capsets: Optional[int] = None
    capsets: Optional[tuple[tuple[int, int, int], ...]] = None  # (id, max_version, max_size)
    blob_alignment: Optional[int] = None
    host_visible: Optional[int] = None  # 0: no host-visible region
    from_reset: Optional[bool] = None
    producer: Optional[str] = None


@dataclass(frozen=True)
class Diagnostic:
    """A line the importer could not use, and what it did about it."""

    where: Where
    level: str  # error | warning | info
    code: str  # short, stable: truncated-line, binary-junk, unknown-event, bad-number, mixed-format, ...
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.level}: {self.message}"


Event = Union[Exchange, Reset, ConfigWrite, Session, Diagnostic]


class TraceError(Error):
    """A trace that cannot be read at all (missing file, unknown format); carries the place and a hint."""

    def __init__(self, where: Where, message: str, hint: str = ""):
        self.where, self.message, self.hint = where, message, hint
        super().__init__(f"{where}: {message}" + (f" ({hint})" if hint else ""))
