"""Reproducers in qtest's form: how a recorded session becomes a script, and how a run's answers are read back.

The scripts here are written by hand in the form render() gives; the integration tests run real ones."""

from __future__ import annotations

import pytest

from virtgpu_conform.checker.devices.qtest import Poll, Shot
from virtgpu_conform.checker.devices.qtest_script import CHUNK, QUIT, polls, render, replies

POLL = "readw 0x10048a"
RING = "write 0x100000 0x490 0x" + "00" * 0x490  # a queue's setup zeroes its rings, the used index with them


def test_a_poll_fills_more_than_two_of_qtests_reads_and_the_script_ends_with_qemus_exit():
    text = render(["writew 0xe0003000 0x0", Poll(POLL), "read 0x10048c 0x8"])
    lines = text.splitlines()
    n = polls(POLL)
    assert lines[1 : 1 + n] == [POLL] * n and lines[1 + n] == "read 0x10048c 0x8"
    assert n * (len(POLL) + 1) > 2 * CHUNK  # whatever the poll's length, a notify is handled before the read after it
    assert (n - 1) * (len(POLL) + 1) <= 2 * CHUNK  # and no more than that
    assert lines[-1] == QUIT and text.endswith("\n")
    assert render([Poll(POLL)], settle=64 * 1024).count(POLL) == polls(POLL, 64 * 1024) > 4000


def _script(*chains: tuple[int, list[str]]) -> tuple[str, str]:
    """A script with the ring set up and, per chain, a poll whose index ends at `index`, then `reads`
    (command, answer); and QEMU's answers to it."""
    cmds, said = [RING], ["OK"]
    for index, reads in chains:
        cmds += ["writew 0xe0003000 0x0"] + [POLL] * polls(POLL)
        said += ["OK"] + ["OK 0x0000"] * (polls(POLL) - 1) + [f"OK {index:#06x}"]
        for cmd, answer in reads:
            cmds.append(cmd)
            said.append(answer)
    return "\n".join(cmds) + "\n", "\n".join(said) + "\n"


ELEM = ("read 0x100490 0x8", "OK 0x0000000018000000")  # id 0, 24 bytes written
OK_NODATA = ("read 0x400030 0x18", "OK 0x" + "0011" + "00" * 22)


def test_answers_are_read_back_chain_by_chain():
    script, said = _script((1, [ELEM, OK_NODATA]), (2, [ELEM, OK_NODATA]))
    got = replies(script, said, [[24], [24]])
    assert [(r.status, r.data[:2]) for r in got] == [("answered", b"\x00\x11")] * 2


def test_an_index_that_does_not_move_is_a_chain_never_answered():
    script, said = _script((1, [ELEM, OK_NODATA]), (1, []))
    got = replies(script, said, [[24], [24]])
    assert got[0].status == "answered"
    assert got[1].status == "no-answer" and "stayed 1" in got[1].detail


def test_answers_that_stop_are_qemu_gone_at_that_chain():
    script, said = _script((1, [ELEM, OK_NODATA]), (2, [ELEM, OK_NODATA]))
    first = said.index(OK_NODATA[1]) + len(OK_NODATA[1]) + 1
    cut = said[:first] + "OK\nOK 0x0000\nOK 0x00"  # the next notify, a poll, then mid-line, as QEMU aborts
    got = replies(script, cut, [[24], [24]])
    assert [r.status for r in got] == ["answered", "died"]


def test_empty_buffers_are_not_read_and_a_script_of_other_chains_is_refused():
    script, said = _script((1, [ELEM, OK_NODATA]))
    assert replies(script, said, [[0, 24]])[0].status == "answered"  # the driver reads no empty buffer
    with pytest.raises(ValueError, match=r"reads \[24\] bytes of answer where the case has buffers of \[16\]"):
        replies(script, said, [[16]])


def test_a_backend_slow_to_start_gets_warm_up_polls_fed_apart_and_the_answers_still_line_up():
    from virtgpu_conform.checker.devices.qtest_script import first_poll_line, shell, shot_lines

    session = [RING, "writew 0xe0003000 0x0", Poll(POLL), ELEM[0], OK_NODATA[0]]
    n = polls(POLL)
    text = render(session, warm=200)
    lines = text.splitlines()
    first = first_poll_line(session)
    assert first == 3 and lines[first - 1 : first - 1 + n + 200] == [POLL] * (n + 200)
    sh = shell(["qemu"], "about", pace=(first, 200))
    assert "sed -n '1,3p' repro.qtest" in sh and "sed -n '4,203p' repro.qtest | while" in sh
    assert "sleep 0.01" in sh and "sed -n '204,$p' repro.qtest" in sh
    # only the first poll grows; screendumps after it move down by as much
    assert shot_lines([*session, Poll(POLL), Shot()], warm=200) == [2 + 2 * n + 200 + 2]
    # a run of it: the warm-up polls that saw nothing, then the answer; read back as one answered chain
    said = ["OK", "OK"] + ["OK 0x0000"] * (n + 199) + ["OK 0x0001", ELEM[1], OK_NODATA[1], "OK"]
    got = replies(text, "\n".join(said) + "\n", [[24]])
    assert [r.status for r in got] == ["answered"] and got[0].data[:4] == bytes.fromhex("00110000")
