"""Findings in plain words: the messages live on the rules' checks, and every field they name is a
field of the command's request, so a finding never shows '?' for a field the request has."""

from __future__ import annotations

import re

from virtgpu_conform.checker.check.session import Recording, check_session


def test_every_check_message_names_fields_of_its_request(protocol):
    said = 0
    for rule in protocol.rules.values():
        keys = set(protocol.codec.layout(rule.command).keys)
        for c in rule.checks:
            for group in re.findall(r"\{([\w.|]+)\}", c.message):
                assert any(k in keys for k in group.split("|")), (rule.command, c.id, group)
            said += bool(c.message)
    assert said >= 20  # resource ids, scanouts, rectangles and backing across the commands


def test_a_finding_says_what_its_check_says(protocol, tmp_path):
    trace = tmp_path / "t.ndjson"
    trace.write_text(
        '{"kind": "session", "format": "virtgpu-conform-trace", "version": 1, "features": [], "num_scanouts": 1,'
        ' "capsets": [], "from_reset": true}\n'
        '{"kind": "request", "id": 1, "type": "VIRTIO_GPU_CMD_RESOURCE_UNREF", "fields": {"resource_id": 7}}\n'
        '{"kind": "response", "id": 1, "type": "VIRTIO_GPU_RESP_ERR_INVALID_RESOURCE_ID"}\n'
    )
    [f] = check_session(Recording.of(trace), protocol).findings
    assert f.side == "driver" and f.check == "resource-exists"
    assert f.message == "RESOURCE_UNREF: resource 7 does not exist (never created, or already unreferenced)"
