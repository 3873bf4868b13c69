"""`fuzz --cpu`: which CPU, and the process's affinity back as it was afterwards."""

from __future__ import annotations

import os

import pytest

from virtgpu_conform.checker.devices import affinity

ALLOWED = sorted(os.sched_getaffinity(0))


def test_any_pins_nothing_and_auto_takes_the_last_cpu():
    assert affinity.choose("any") is None
    assert affinity.choose("auto") == (ALLOWED[-1] if len(ALLOWED) > 1 else None)


def test_a_cpu_this_process_may_not_use_is_refused_with_the_allowed_ones():
    if len(ALLOWED) < 2:
        pytest.skip("one CPU: nothing is pinned")
    with pytest.raises(ValueError, match=f"allowed: {affinity.format_cpus(ALLOWED)}"):
        affinity.choose(str(max(ALLOWED) + 1))
    with pytest.raises(ValueError, match="CPU number, 'auto' or 'any'"):
        affinity.choose("fast")


def test_pinned_runs_the_block_on_one_cpu_and_restores_the_affinity():
    cpu = affinity.choose("auto")
    if cpu is None:
        pytest.skip("one CPU: nothing is pinned")
    with affinity.pinned(cpu):
        assert os.sched_getaffinity(0) == {cpu}
    assert sorted(os.sched_getaffinity(0)) == ALLOWED
    with pytest.raises(RuntimeError):
        with affinity.pinned(cpu):
            raise RuntimeError("the block failed")
    assert sorted(os.sched_getaffinity(0)) == ALLOWED
