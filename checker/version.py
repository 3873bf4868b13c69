"""The installed tool's version, as results and reports record it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def tool_version() -> str:
    try:
        return version("virtgpu-conform")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


__version__ = tool_version()
