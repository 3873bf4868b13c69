"""A recorded qtest session as a reproducer in QEMU's own form, and the answers read back from a run of it.

`repro.qtest` is the session's commands for a bare QEMU's `-qtest stdio`, the form of QEMU's own
fuzzer reports; `repro.sh` is the command line that runs it. Nothing of this tool is needed to
run them.

Where the driver waited for an answer, a script cannot wait: it repeats the poll instead. QEMU's
virtio-gpu answers in a bottom half, which the main loop runs between its reads of qtest input,
and qtest takes at most 1024 bytes per read (qtest_can_read). So a notify followed by more than
two reads' worth of commands (SETTLE bytes of the same poll) has been handled before the command
after them runs, however fast or slow the machine: the reads of the answer that follow see what
the driver saw. A device in another process (a vhost-user backend) answers on its own time; its
scripts poll for longer (`settle`), a margin rather than a guarantee.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Optional

from .qtest import Poll, Script, Shot
from .target import Reply, used_reply

CHUNK = 1024  # bytes qtest takes from its input at a time (qtest_can_read, QEMU 2.x to 9.x)
SETTLE = 2 * CHUNK + 1
# q35's reset control register: a hard reset, which -no-reboot turns into QEMU's own, clean exit
QUIT = "outb 0xcf9 0x6"


def polls(line: str, settle: int = SETTLE) -> int:
    """How many copies of the poll `line` fill `settle` bytes."""
    return -(-settle // (len(line) + 1))


PACE = 0.01  # seconds between the warm-up polls repro.sh feeds one at a time


def render(script: Script, settle: int = SETTLE, warm: int = 0) -> str:
    """The qtest script: every command as sent, each Poll as `settle` bytes of it, then QEMU's exit
    (a screendump is repro.sh's to take: shot_lines). `warm`: copies more of the first poll, which
    repro.sh feeds PACE apart (shell's `pace`): a backend that starts its renderer on the first
    request answers it seconds later, and QEMU's main loop serves it only while input comes."""
    return "\n".join([*_lines(script, settle, warm), QUIT]) + "\n"


def _lines(script: Script, settle: int, warm: int = 0) -> list[str]:
    lines: list[str] = []
    for item in script:
        if isinstance(item, Poll):
            lines += [item.line] * (polls(item.line, settle) + warm)
            warm = 0
        elif isinstance(item, str):
            lines.append(item)
    return lines


def shot_lines(script: Script, settle: int = SETTLE, warm: int = 0) -> list[int]:
    """For each screendump the session took, how many lines of the rendered script came before it."""
    out, n = [], 0
    for item in script:
        if isinstance(item, Shot):
            out.append(n)
        else:
            n += len(_lines([item], settle, warm))
            warm = 0 if isinstance(item, Poll) else warm
    return out


def first_poll_line(script: Script, settle: int = SETTLE) -> int:
    """The line of the rendered script where its first poll starts (0: it has none)."""
    n = 0
    for item in script:
        if isinstance(item, Poll):
            return n + 1
        n += len(_lines([item], settle))
    return 0


def shell(
    argv: Sequence[str],
    about: str,
    before: Sequence[str] = (),
    after: Sequence[str] = (),
    shots: Sequence[int] = (),
    pace: tuple[int, int] = (0, 0),
) -> str:
    """repro.sh: run `argv` (its first word an environment variable's default) on repro.qtest, and
    take a screendump after each of `shots` lines of it (then compare shot-N.ppm with seen-N.ppm).
    `pace`: (line, count): that many lines after that one are fed PACE seconds apart (render's `warm`)."""
    binary, *rest = argv
    lines = [
        "#!/bin/sh",
        *(f"# {line}" for line in about.splitlines()),
        "#",
        "# Replays the case on a bare QEMU: repro.qtest (qtest commands: the device set up as a driver",
        "# would, each request written, notified and polled for, its answer read) on QEMU's stdin.",
        "# QEMU's answers, one line per command, go to repro.out; every command and answer, timed, to",
        "# repro-qtest.log (written through a buffer: a QEMU that aborts loses its end); the device's",
        "# trace and guest errors to repro-qemu.log. QEMU exits by itself at the end (a reset, which",
        "# -no-reboot makes an exit); a crash shows in the exit status. Set QEMU to run another build.",
        'cd "$(dirname "$0")" || exit 1',
        f"QEMU=${{QEMU:-{binary}}}",
        *before,
    ]
    qemu = '"$QEMU" ' + " ".join(shlex.quote(a) for a in rest)
    if shots:
        lines += _shooting(qemu, shots, pace)
    elif pace[1]:
        lines += ["{", *_paced(pace), f"    sed -n '{sum(pace) + 1},$p' repro.qtest", f"}} | {qemu} > repro.out"]
        lines.append("status=$?")
    else:
        lines += [qemu + " < repro.qtest > repro.out", "status=$?"]
    lines += [*after, "exit $status"]
    return "\n".join(lines) + "\n"


def _paced(pace: tuple[int, int]) -> list[str]:
    """Feed the script up to and through its paced lines (the backend's warm-up polls)."""
    line, count = pace
    return [
        f"    # the backend starts its renderer on the first request: lines {line + 1}-{line + count}, {PACE:g} s apart",
        f"    sed -n '1,{line}p' repro.qtest",
        f"    sed -n '{line + 1},{line + count}p' repro.qtest | while IFS= read -r l; do echo \"$l\"; sleep {PACE:g}; done",
    ]


def _shooting(qemu: str, shots: Sequence[int], pace: tuple[int, int] = (0, 0)) -> list[str]:
    """QEMU fed repro.qtest in parts, with an HMP monitor on a pair of FIFOs: after each part, once
    QEMU has answered every command of it, a screendump (QEMU's main loop takes the monitor's
    command and the next qtest command in turn, so the picture is the one after that part)."""
    wait = "n=0; until {test}; do n=$((n + 1)); [ $n -le 3000 ] || {{ echo {why} >&2; echo {quit}; exit 1; }}; sleep 0.01; done"
    lines = [
        "# Each screendump the case's replay took is taken here too (shot-N.ppm, by an HMP monitor on",
        "# the FIFOs monitor.in and monitor.out) and compared with what the replay saw (seen-N.ppm).",
        "rm -f repro.out shot-*.ppm monitor.in monitor.out",
        "mkfifo monitor.in monitor.out || exit 1",
        "cat monitor.out > repro-monitor.log &  # QEMU opens the monitor's output only with a reader",
        'answered() { c=$(grep -vc \'^IRQ\' repro.out 2>/dev/null); [ "${c:-0}" -ge "$1" ]; }',
        "{",
    ]
    start = 1
    if pace[1] and sum(pace) <= shots[0]:  # the first poll comes before any screendump
        lines += _paced(pace)
        start = sum(pace) + 1
    for k, n in enumerate(shots, 1):
        if n >= start:
            lines.append(f"    sed -n '{start},{n}p' repro.qtest")
        lines.append(
            "    " + wait.format(test=f"answered {n}", why="'QEMU did not answer repro.qtest'", quit=shlex.quote(QUIT))
        )
        lines.append(f"    echo 'screendump shot-{k}.ppm' > monitor.in")
        lines.append(
            "    " + wait.format(test=f"[ -s shot-{k}.ppm ]", why=f"'no shot-{k}.ppm'", quit=shlex.quote(QUIT))
        )
        start = n + 1
    lines += [
        f"    sed -n '{start},$p' repro.qtest",
        f"}} | {qemu} -chardev pipe,id=mon,path=monitor -mon chardev=mon,mode=readline > repro.out",
        "status=$?",
        "rm -f monitor.in monitor.out",
    ]
    for k in range(1, len(shots) + 1):
        lines.append(
            f"[ ! -f seen-{k}.ppm ] || {{ cmp -s shot-{k}.ppm seen-{k}.ppm && echo 'shot-{k}.ppm: the picture the replay saw' "
            f"|| echo 'shot-{k}.ppm differs from seen-{k}.ppm'; }}"
        )
    return lines


def replies(script: str, answers: str, ins: Sequence[Sequence[int]]) -> list[Reply]:
    """The answers a run of a rendered `script` gave, chain by chain. `answers`: QEMU's stdout, a
    line per command, written as it answers (whole up to a crash, where -qtest-log is not).

    `ins`: each chain's device-writable buffer sizes (a read of each but the empty follows its
    answer's used element). A poll whose index did not move is a chain never answered, and the
    last that shows (the recorded session stopped there too); a command with no answer is QEMU
    gone. ValueError: the script is not one made for these chains.
    """
    said = [a for a in answers.split("\n")[:-1] if not a.startswith("IRQ")]  # the last: cut short, or empty
    steps = [(c, said[n] if n < len(said) else None) for n, c in enumerate(script.splitlines())]
    polled = {cmd.split()[1] for cmd, _ in steps if cmd.startswith("readw ")}
    known: dict[str, int] = {}  # poll address -> the index last written or read there
    out: list[Reply] = []
    i, chain = 0, 0
    while i < len(steps) and chain < len(ins):
        cmd, answer = steps[i]
        if answer is None:
            return out + [Reply("died", detail=f"QEMU gave no answer to {cmd.split()[0]}")]
        run = _poll_run(steps, i)
        if not run:
            _note_write(cmd, polled, known)
            i += 1
            continue
        addr = cmd.split()[1]
        values = [steps[j][1] for j in range(i, i + run)]
        if None in values:
            return out + [Reply("died", detail="QEMU gave no answer while the answer was polled for")]
        before, last = known.get(addr, 0), int(str(values[-1]).split()[1], 16)
        known[addr] = last
        i += run
        if last == before:
            return out + [Reply("no-answer", detail=f"the used index at {addr} stayed {before}")]
        want = [n for n in ins[chain] if n]
        reads = steps[i : i + 1 + len(want)]
        if len(reads) < 1 + len(want) or not all(c.startswith("read ") for c, _ in reads):
            return out + [Reply("answered", detail="answered, but the script does not read the answer")]
        sizes = [int(c.split()[2], 16) for c, _ in reads]
        if sizes != [8, *want]:
            raise ValueError(
                f"chain {chain + 1}: the script reads {sizes[1:]} bytes of answer where the case has buffers of {want}"
            )
        if any(a is None for _, a in reads):
            return out + [Reply("died", detail="QEMU gave no answer while the answer was read")]
        length = int.from_bytes(_hex(reads[0][1])[4:8], "little")
        out.append(used_reply(length, b"".join(_hex(a) for _, a in reads[1:]), sum(want)))
        i += len(reads)
        chain += 1
    return out


def _poll_run(steps: list[tuple[str, Optional[str]]], i: int) -> int:
    """The length of the poll starting at i: as many copies of one readw as render() writes, or 0."""
    cmd = steps[i][0]
    if not cmd.startswith("readw "):
        return 0
    n = 0
    while i + n < len(steps) and steps[i + n][0] == cmd:
        n += 1
    return n if n >= polls(cmd) else 0


def _note_write(cmd: str, polled: set[str], known: dict[str, int]) -> None:
    """What a driver write puts at a polled address (a queue's setup zeroes its ring)."""
    words = cmd.split()
    if words[0] == "writew" and words[1] in polled:
        known[words[1]] = int(words[2], 16)
    elif words[0] == "write" and len(words) == 4:
        start, data = int(words[1], 16), _hex("OK " + words[3])
        for addr in polled:
            off = int(addr, 16) - start
            if 0 <= off and off + 2 <= len(data):
                known[addr] = int.from_bytes(data[off : off + 2], "little")


def _hex(reply: Optional[str]) -> bytes:
    """The bytes of a `read` reply ("OK 0x0a0b...")."""
    value = (reply or "").split()[-1]
    return bytes.fromhex(value[2:] if value.startswith("0x") else value)
