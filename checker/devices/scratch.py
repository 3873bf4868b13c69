"""Folders the targets make for what they need outside --out (monitor and vhost-user sockets, the
firmware stub, a device log nobody asked to keep), all under one folder per run of the tool.

A target removes its folders when it closes; the run's folder goes when it is empty, and at exit
with whatever a target that never closed left in it. Processes forked from the tool (the
pipeline's sender) make theirs in the same folder, so the tool removes what they could not.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Optional

from .target import TargetError

PREFIX = "vgc-"  # what this tool's folders in the temp dir are called
SUN_PATH = 108  # bytes of a unix socket's path, its terminating zero included (Linux)
_root: Optional[str] = None
_owner = 0  # the process whose exit removes the run's folder


def root() -> str:
    """The run's folder. A process about to fork one that starts targets calls it first: the forked
    process then makes its folders in this one, which this process removes at exit."""
    global _root, _owner
    if _root is None:
        _root, _owner = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-"), os.getpid()
    os.makedirs(_root, exist_ok=True)  # removed when it was last empty
    return _root


def make(kind: str) -> str:
    """A new empty folder for a target, `kind` naming what it holds (qemu, qmp, vug, adapter)."""
    return tempfile.mkdtemp(prefix=f"{kind}-", dir=root())


def socket_path(folder: str, name: str, what: str) -> str:
    """A unix socket's path in one of these folders, or a TargetError naming the fix when it is
    longer than a unix socket's path can be (a deep TMPDIR)."""
    path = os.path.join(folder, name)
    if len(os.fsencode(path)) >= SUN_PATH:
        raise TargetError(
            f"{what}'s socket path {path} is longer than a unix socket's {SUN_PATH - 1} bytes: "
            "set TMPDIR to a shorter folder"
        )
    return path


def remove(path: str) -> None:
    """Remove a folder `make` gave, and the run's folder once nothing is left in it."""
    if not path:
        return
    shutil.rmtree(path, ignore_errors=True)
    if _root is not None and os.path.dirname(path) == _root:
        try:
            os.rmdir(_root)
        except OSError:  # another target's folder is still there
            pass


@atexit.register
def _at_exit() -> None:
    if _root is not None and os.getpid() == _owner:
        shutil.rmtree(_root, ignore_errors=True)
