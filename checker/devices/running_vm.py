"""What a QEMU needs to run its vCPU rather than sit stopped under -S: an accelerator and a
firmware that only halts.

vhost-user starts its backend only once the VM runs, and the GL devices poll their fences on a
timer of the virtual clock, which stands still under -S (Debian's QEMU has no qtest accelerator
to step it): a fence not signalled at the first poll would then never be answered.
"""

from __future__ import annotations

import fcntl
import os
from typing import Optional

_KVM_GET_API_VERSION, _KVM_CREATE_VM = 0xAE00, 0xAE01
HALT_SIZE = 65536


def kvm_problem(path: str = "/dev/kvm") -> Optional[str]:
    """Why KVM cannot be used here, or None when a VM can be created."""
    if not os.path.exists(path):
        return f"KVM is unusable here: {path} does not exist (vhost-user needs a KVM vCPU)"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"KVM is unusable here: cannot open {path}: {exc.strerror}"
    try:
        version = fcntl.ioctl(fd, _KVM_GET_API_VERSION, 0)
        if version != 12:
            return f"KVM is unusable here: {path} reports API version {version}, not 12"
        os.close(fcntl.ioctl(fd, _KVM_CREATE_VM, 0))
    except OSError as exc:
        return f"KVM is unusable here: {path} cannot create a VM: {exc.strerror}"
    finally:
        os.close(fd)
    return None


_accel: Optional[str] = None


def accelerator() -> str:
    """kvm where a VM can be made, else tcg (a halted vCPU costs TCG nothing either)."""
    global _accel
    if _accel is None:
        _accel = "kvm" if kvm_problem() is None else "tcg"
    return _accel


def halt_bios(folder: str) -> str:
    """HALT.BIN in `folder` (made once): 64 KiB of `hlt`, everywhere the vCPU can go."""
    path = os.path.join(folder, "HALT.BIN")
    if not os.path.exists(path):  # a QEMU started ahead may be reading it while the next is prepared
        with open(path, "wb") as f:
            f.write(b"\xf4" * HALT_SIZE)
    return path


HALT_SH = "[ -f HALT.BIN ] || head -c 65536 /dev/zero | tr '\\000' '\\364' > HALT.BIN  # hlt, everywhere"
