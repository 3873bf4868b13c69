"""Rules for the cursor queue: UPDATE_CURSOR and MOVE_CURSOR."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

from .codec import Leaves, Message
from .facts import S
from .rule import Build, Check, Rule
from .rules_common import (
    CURSOR_64,
    CURSOR_COMPLETED,
    CURSOR_PREPARED,
    header_checks,
    header_obligations,
    resource_exists,
    scanout_id_valid,
)
from .state import Cursor, State

CURSOR_SIZE = 64  # the cursor image is 64x64 (cursor section of the chapter)
NO_ANSWER = "cursorq commands get no error answer in practice (QEMU returns the buffer unwritten)"


def _update(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    st.cursor = Cursor(f["pos.scanout_id"], f["pos.x"], f["pos.y"], f["resource_id"], f["hot_x"], f["hot_y"])


def _move(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    st.cursor.scanout_id, st.cursor.x, st.cursor.y = f["pos.scanout_id"], f["pos.x"], f["pos.y"]


def rules(b: Build) -> list[Rule]:
    out = []
    name = "VIRTIO_GPU_CMD_UPDATE_CURSOR"
    c = b.req(name)
    showing = c["resource_id"].ne(0)
    live = showing & S("st.res.exists")
    out.append(
        Rule(
            name,
            "cursor",
            (
                *header_checks(b, name),
                scanout_id_valid(c, "pos.scanout_id", answer_open=True),
                replace(resource_exists(when=showing), errors=None, note=NO_ANSWER),
                Check(
                    "cursor-64x64",
                    S("st.res.width").eq(CURSOR_SIZE) & S("st.res.height").eq(CURSOR_SIZE),
                    "informal",
                    (CURSOR_64,),
                    errors=None,
                    when=live,
                    note=NO_ANSWER,
                ),
                Check(
                    "cursor-prepared",
                    S("st.res.backed") & S("st.res.transferred"),
                    "spec-text",
                    (CURSOR_PREPARED, CURSOR_COMPLETED),
                    errors=None,
                    when=live,
                    note="created, backed and filled by a transfer before it is shown",
                ),
                Check(
                    "hotspot-inside",
                    c["hot_x"].ult(CURSOR_SIZE) & c["hot_y"].ult(CURSOR_SIZE),
                    "informal",
                    errors=None,
                    when=showing,
                    note="the hot spot is a pixel of the 64x64 image",
                ),
            ),
            tuple(header_obligations(b, name)),
            _update,
            ok_basis="implementation",
            note="resource_id 0 hides the cursor",
        )
    )

    name = "VIRTIO_GPU_CMD_MOVE_CURSOR"
    c = b.req(name)
    out.append(
        Rule(
            name,
            "cursor",
            (*header_checks(b, name), scanout_id_valid(c, "pos.scanout_id", answer_open=True)),
            tuple(header_obligations(b, name)),
            _move,
            ok_basis="implementation",
        )
    )
    return out
