"""Shared fixtures: the real spec sources beside the repository, and the parsed v1.4 chapter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SPEC_SOURCES = Path(os.environ.get("VIRTGPU_SPEC_SOURCES", SHARED / "spec-sources"))
SYSTEM_HEADER = Path("/usr/include/linux/virtio_gpu.h")


def _need_sources() -> Path:
    if not (SPEC_SOURCES / "gpu-description.tex").is_file():
        msg = (f"the real spec sources are not at {SPEC_SOURCES}: check out ../shared beside "
               "the repository or set VIRTGPU_SPEC_SOURCES")
        if os.environ.get("CI"):
            pytest.fail(msg)  # CI always has them: their absence is a broken setup
        pytest.skip(msg)
    return SPEC_SOURCES


@pytest.fixture(scope="session")
def spec_sources() -> Path:
    return _need_sources()


@pytest.fixture(scope="session")
def shared_header(spec_sources: Path) -> Path:
    return spec_sources / "virtio_gpu.h"


@pytest.fixture(scope="session")
def v14(spec_sources: Path, shared_header: Path):
    """(SpecIR, Parsed) of the v1.4 chapter with the header copy shipped beside it."""
    from virtgpu_conform.spec.load import parse_sources

    return parse_sources(spec_sources, shared_header, "v1.4-cs01")


@pytest.fixture(scope="session")
def ir():
    """The embedded v1.4 SpecIR (test_snapshot keeps it equal to a fresh parse of the real sources)."""
    from virtgpu_conform.spec.load import load_snapshot

    return load_snapshot()


@pytest.fixture(scope="session")
def protocol(ir):
    from virtgpu_conform.model.protocol import Protocol

    return Protocol(ir)


@pytest.fixture(scope="session")
def codec(protocol):
    return protocol.codec
