"""A crash signature (command, device-died) can meet two causes in one campaign: the finding then says
what its saved reproducer shows, and the notes keep the first cause. Both messages are QEMU 10.0.13's
own, from one blob campaign (a mapping left over by a virtio reset; a mapping off a page under KVM)."""

from __future__ import annotations

from types import SimpleNamespace

from virtgpu_conform.checker.fuzz.campaign import Campaign, Found
from virtgpu_conform.checker.fuzz.oracle import Signature

HEAD = (
    "RESOURCE_MAP_BLOB: the device never answered this request (no response: died: QEMU exited (status -6, SIGABRT): "
)
DUPLICATE = (
    HEAD
    + "warning\nUnexpected error in object_property_try_add() at qom/object.c:1267:\nqemu-system-x86_64: attempt to add duplicate property 'blob[1]' to object (type 'virtio-gpu-gl-device'))"
)
KVM = (
    HEAD
    + "warning\nqemu-system-x86_64: kvm_set_user_memory_region: KVM_SET_USER_MEMORY_REGION failed, slot=6\nkvm_set_phys_mem: error registering slot: Invalid argument)"
)


def found(kind: str, message: str) -> Found:
    return Found(Signature(kind, "VIRTIO_GPU_CMD_RESOURCE_MAP_BLOB", "device-died"), message, (), 0)


def test_a_crash_reproduced_with_other_last_words_says_both():
    host, f = SimpleNamespace(notes=[]), found("crash", DUPLICATE)
    Campaign._same_death(host, f, KVM)
    assert f.message == KVM
    assert host.notes == [
        'crash: RESOURCE_MAP_BLOB device-died: first seen dying with "qemu-system-x86_64: attempt to add duplicate '
        "property 'blob[1]' to object (type 'virtio-gpu-gl-device')\"; its saved case, on a fresh device, dies with "
        "'kvm_set_phys_mem: error registering slot: Invalid argument': two causes under one finding, and only the "
        "second one's case is kept"
    ]


def test_the_same_death_or_another_kind_of_finding_changes_nothing():
    for kind, again in (("crash", DUPLICATE), ("liveness", KVM)):
        host, f = SimpleNamespace(notes=[]), found(kind, DUPLICATE)
        Campaign._same_death(host, f, again)
        assert (f.message, host.notes) == (DUPLICATE, [])


def test_numbers_do_not_make_two_causes_and_a_death_without_words_is_not_compared():
    other_slot = KVM.replace("slot=6", "slot=7")
    host, f = SimpleNamespace(notes=[]), found("crash", KVM.replace("Invalid argument", "Invalid argument 0x1f"))
    Campaign._same_death(host, f, KVM.replace("0x1f", "0x2e"))
    silent = HEAD.removesuffix(": ") + ")"  # QEMU's stderr not read: nothing after its exit status
    for first, again in ((KVM, other_slot), (DUPLICATE, silent)):
        host, f = SimpleNamespace(notes=[]), found("crash", first)
        Campaign._same_death(host, f, again)
        assert (f.message, host.notes) == (first, [])
