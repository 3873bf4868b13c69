"""README.md opens with the two commands, and .ci/run runs the README's test command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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


def test_the_readmes_python_examples_run_as_written(tmp_path):
    """Each Python example of the README, run from the repository's root as the README says, in a
    fresh interpreter: the library example prints what it promises, the plugin example imports."""
    blocks = _python_blocks()
    assert len(blocks) >= 2 and "import virtgpu_conform as vgc" in blocks[0]
    for i, code in enumerate(blocks):
        r = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )
        assert r.returncode == 0, f"README example {i + 1} failed:\n{code}\n{r.stderr[-3000:]}"
        if i == 0:
            assert r.stdout.splitlines()[:2] == ["314 exchanges, 0 definite findings", "pass"], r.stdout
            assert "definite device finding" in r.stdout and "commands, 0 findings" in r.stdout, r.stdout
