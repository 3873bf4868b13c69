"""Shared fixtures: the real spec sources beside the repository, and the parsed v1.4 chapter."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SPEC_SOURCES = Path(os.environ.get("VIRTGPU_SPEC_SOURCES", SHARED / "spec-sources"))
SYSTEM_HEADER = Path("/usr/include/linux/virtio_gpu.h")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--mutate-host",
        action="store_true",
        help="also run the tests marked mutates_host (they install packages with apt-get and write "
        "outside their temp dirs); VIRTGPU_MUTATE_HOST=1 does the same",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if config.getoption("--mutate-host") or os.environ.get("VIRTGPU_MUTATE_HOST") == "1":
        return
    mutating = [i for i in items if i.get_closest_marker("mutates_host")]
    if mutating:
        config.hook.pytest_deselected(items=mutating)
        items[:] = [i for i in items if not i.get_closest_marker("mutates_host")]


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("needs_qemu") and shutil.which("qemu-system-x86_64") is None:
        msg = "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
        if os.environ.get("CI"):
            pytest.fail(f"CI installs QEMU: {msg}")
        pytest.skip(msg)


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis keeps its example database and caches in .hypothesis/ of the working directory: the
    suite's go to a temp dir of its own (removed at the end), so it writes nothing where it is run."""
    if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY") and not hasattr(config, "workerinput"):
        from hypothesis.configuration import set_hypothesis_home_dir

        config._virtgpu_hypothesis = tempfile.mkdtemp(prefix="hypothesis-")  # type: ignore[attr-defined]
        set_hypothesis_home_dir(config._virtgpu_hypothesis)  # type: ignore[attr-defined]
        # xdist workers are other processes: they find the folder in their environment
        os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = config._virtgpu_hypothesis  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    home = getattr(config, "_virtgpu_hypothesis", None)
    if home:
        shutil.rmtree(home, ignore_errors=True)
        os.environ.pop("HYPOTHESIS_STORAGE_DIRECTORY", None)


def shared_file(path: Path, what: str) -> Path:
    """A file from ../shared, or a skip saying where it was looked for (a failure under CI, which has it)."""
    if not path.is_file():
        msg = f"{what} is not at {path}: check out ../shared beside the repository"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def _need_sources() -> Path:
    if not (SPEC_SOURCES / "gpu-description.tex").is_file():
        msg = (
            f"the real spec sources are not at {SPEC_SOURCES}: check out ../shared beside "
            "the repository or set VIRTGPU_SPEC_SOURCES"
        )
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
