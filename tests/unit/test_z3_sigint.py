"""z3 leaves Ctrl-C to the program: a SIGINT that lands in a solve reaches the program's handler.

By default z3 catches SIGINT while it solves, answers "unknown (interrupted from keyboard)" and
the program's handler never runs: a fuzz campaign interrupted during a solve ran on.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import z3

import virtgpu_conform.model.expr  # noqa: F401  (the z3 layer: importing it sets the parameter)


@pytest.mark.slow
def test_a_sigint_during_a_solve_reaches_the_programs_handler():
    heard = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: heard.append(signum))
    try:
        x, y = z3.BitVecs("x y", 128)
        s = z3.Solver()
        s.set("timeout", 1000)  # factoring a 80-bit product: z3 is still at it when the signal comes
        s.add(
            x * y == 1099511627689 * 1099511627691, z3.UGT(x, 1), z3.UGT(y, 1), z3.ULT(x, 1 << 64), z3.ULT(y, 1 << 64)
        )
        sender = threading.Thread(target=lambda: (time.sleep(0.05), os.kill(os.getpid(), signal.SIGINT)))
        sender.start()
        result = s.check()
        sender.join()
        for _ in range(1000):  # the handler runs at one of the main thread's next bytecodes
            if heard:
                break
        assert result != z3.unknown or "interrupted" not in s.reason_unknown(), "z3 took the SIGINT for itself"
        assert heard == [signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, previous)
