"""Bugs in the tool itself: their tracebacks saved to a file that a bug report can carry."""

from __future__ import annotations

import os
import tempfile
import traceback
from typing import Optional


def save_traceback(exc: BaseException, directory: Optional[str] = None) -> str:
    """Write the traceback of a bug in the tool to a file and return its path: the user gets one
    line that names it, and the file is what a bug report needs."""
    text = "".join(traceback.format_exception(exc))
    if directory:
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, "internal-error.txt")
        with open(path, "w") as fh:
            fh.write(text)
        return path
    fd, path = tempfile.mkstemp(prefix="virtgpu-conform-error-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path
