"""README.md opens with the two commands, and .ci/run runs the README's test command."""

from __future__ import annotations

import re
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
