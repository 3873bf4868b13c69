"""README.md opens with the two commands, and .ci/run runs the README's test command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    return [ln for ln in block.splitlines() if ln and not ln.startswith("#")]


def test_readme_opens_with_two_commands():
    cmds = _commands()
    assert len(cmds) == 2
    assert "virtgpu-conform" in cmds[0] and "pytest" in cmds[1]
    assert (REPO / "README.md").read_text().index("```sh") < 1000  # it opens with them


def test_ci_runs_the_readme_test_command():
    test_cmd = _commands()[1].split(" && ", 1)[1]  # past the apt-get prerequisites
    assert test_cmd in (REPO / ".ci" / "run").read_text()


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)


@pytest.mark.slow
def test_the_readmes_library_example_runs_as_written(tmp_path):
    """The library example, run from the repository's root as the README says, in a fresh
    interpreter, prints what it promises."""
    [code] = [b for b in _python_blocks() if "import virtgpu_conform as vgc" in b]
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert r.returncode == 0, f"the README's library example failed:\n{r.stderr[-3000:]}"
    assert r.stdout.splitlines()[:2] == ["314 exchanges, 0 definite findings", "pass"], r.stdout
    assert "definite device finding" in r.stdout and "commands, 0 findings" in r.stdout, r.stdout


@pytest.mark.slow
@pytest.mark.needs_qemu
def test_the_readmes_plugin_example_runs_as_written(tmp_path):
    """The plugin example saved as a test file and run with pytest: the device behind the adapter
    protocol passes, QEMU fails with a shrunk finding and the command that replays it."""
    [code] = [b for b in _python_blocks() if "virtgpu_device" in b]
    (tmp_path / "test_example.py").write_text(code)
    short = tempfile.mkdtemp(prefix="vgc-test-")  # QEMU's monitor socket lives in TMPDIR: keep its path short
    try:
        r = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_example.py"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "TMPDIR": short},
        )
    finally:
        shutil.rmtree(short, ignore_errors=True)
    out = r.stdout + r.stderr
    assert "1 failed, 1 passed" in out, out[-3000:]
    assert "FAILED test_example.py::test_qemu" in out, out[-3000:]
    assert re.search(r"qemu device: (violation|liveness|crash): ", out) and "replay it: virtgpu-conform fuzz" in out
