"""Rules for the queries: display info, EDID, capsets, resource UUIDs."""

from __future__ import annotations

from typing import Optional, cast

from .codec import Leaves, Message
from .expr import E
from .facts import S
from .rule import Build, Check, Obligation, Rule
from .rules_common import (
    CAPSET_ID,
    CAPSET_INDEX,
    ERR_PARAM,
    OPEN_CODE,
    header_checks,
    header_obligations,
    resource_exists,
    scanout_id_valid,
)
from .state import State


def _display_info(st: State, req: Message, resp: Optional[Message]) -> None:
    st.display_info_read = True


def _edid(st: State, req: Message, resp: Optional[Message]) -> None:
    st.edid_read = True


def _uuid(st: State, req: Message, resp: Optional[Message]) -> None:
    f: Leaves = req.fields
    r = st.resources.get(f["resource_id"])
    if r is not None and resp is not None:
        r.uuid = cast("Optional[bytes]", resp.fields.get("uuid"))  # a byte-array leaf


def rules(b: Build) -> list[Rule]:
    out = []

    name = "VIRTIO_GPU_CMD_GET_DISPLAY_INFO"
    r = b.resp("VIRTIO_GPU_RESP_OK_DISPLAY_INFO")
    slots = sum(1 for k in r.widths if k.endswith(".enabled"))
    least = next((f.value_min for f in b.ir.config.fields if f.name == "num_scanouts"), None) or 1
    beyond: list[Obligation] = [
        Obligation(
            f"scanout-{i}-beyond-num-scanouts-disabled",
            r[f"pmodes.{i}.enabled"].eq(0),
            "informal",
            when=S("st.num_scanouts").ule(i),
            on_ok=True,
            note="pmodes has a slot per possible scanout; those past num_scanouts cannot be enabled",
        )
        for i in range(least, slots)
    ]  # slots below the least num_scanouts always exist
    out.append(
        Rule(name, "query", tuple(header_checks(b, name)), (*header_obligations(b, name), *beyond), _display_info)
    )

    name = "VIRTIO_GPU_CMD_GET_EDID"
    c, r = b.req(name), b.resp("VIRTIO_GPU_RESP_OK_EDID")
    edid_room = b.codec.layout("virtio_gpu_resp_edid").size_of("edid")
    out.append(
        Rule(
            name,
            "query",
            (*header_checks(b, name), scanout_id_valid(c, "scanout", prefer=ERR_PARAM)),
            (
                *header_obligations(b, name),
                Obligation(
                    "edid-size-fits",
                    r["size"].ule(edid_room),
                    "informal",
                    on_ok=True,
                    note=f"size counts bytes of the {edid_room}-byte edid array",
                ),
            ),
            _edid,
        )
    )

    name = "VIRTIO_GPU_CMD_GET_CAPSET_INFO"
    c, r = b.req(name), b.resp("VIRTIO_GPU_RESP_OK_CAPSET_INFO")
    index_ok: E = c["capset_index"].ult(S("st.num_capsets"))
    out.append(
        Rule(
            name,
            "query",
            (
                *header_checks(b, name),
                Check(
                    "capset-index",
                    index_ok,
                    "spec-text",
                    (CAPSET_INDEX,),
                    errors=None,
                    prefer=ERR_PARAM,
                    note="the driver keeps capset_index below num_capsets; the device's answer otherwise is open",
                ),
            ),
            (
                *header_obligations(b, name),
                Obligation(
                    "capset-id-defined",
                    r["capset_id"].isin(b.values("VIRTIO_GPU_CAPSET_")),
                    "spec-text",
                    (CAPSET_ID,),
                    when=index_ok,
                    on_ok=True,
                ),
            ),
        )
    )

    name = "VIRTIO_GPU_CMD_GET_CAPSET"
    c = b.req(name)
    out.append(
        Rule(
            name,
            "query",
            (
                *header_checks(b, name),
                Check(
                    "capset-known",
                    S("st.capset.known"),
                    "informal",
                    prefer=ERR_PARAM,
                    note="capset_id is one GET_CAPSET_INFO reported; " + OPEN_CODE,
                ),
                Check(
                    "capset-version",
                    c["capset_version"].ule(S("st.capset.max_version")),
                    "informal",
                    prefer=ERR_PARAM,
                    when=S("st.capset.known"),
                    note="no newer than capset_max_version; " + OPEN_CODE,
                ),
            ),
            tuple(header_obligations(b, name)),
        )
    )

    name = "VIRTIO_GPU_CMD_RESOURCE_ASSIGN_UUID"
    c = b.req(name)
    out.append(
        Rule(name, "query", (*header_checks(b, name), resource_exists()), tuple(header_obligations(b, name)), _uuid)
    )
    return out
