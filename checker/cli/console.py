"""Terminal output: results on stdout, progress and diagnostics on stderr (rich, NO_COLOR aware)."""

from __future__ import annotations

import os
import sys

from rich.console import Console

# Exit codes shared by every command. EXIT_BUG: the tool itself failed (not the input, not the device).
EXIT_OK, EXIT_FINDINGS, EXIT_USAGE, EXIT_INCONCLUSIVE, EXIT_BUG = 0, 1, 2, 3, 4


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader went away (`check ... | head -1`): print nothing more, and let the command end
        as it would have, its exit code saying what it found (rich's own way exits 1, which would
        read as "definite findings")."""
        self.quiet = True
        silence_stdout()


def silence_stdout() -> None:
    """Everything written to stdout from now on goes nowhere (its reader has gone)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # no real stdout (click's test runner)
        pass
    finally:
        os.close(devnull)


def _console(stream) -> Console:
    # rich honours NO_COLOR itself
    tty = stream.isatty()
    # a pipe or file gets plain text and no live display; tables get room to be read
    width = None if tty else int(os.environ.get("COLUMNS", "160"))
    return _Console(file=stream, no_color="NO_COLOR" in os.environ or None, highlight=False, width=width)


out = _console(sys.stdout)
err = _console(sys.stderr)


def reset() -> None:
    """Rebind to the current streams (click's test runner swaps them)."""
    global out, err
    out, err = _console(sys.stdout), _console(sys.stderr)


def bug_line(kind: str, message: str, path: str) -> str:
    first = message.splitlines()[0] if message else ""
    return (
        f"internal error (a bug in virtgpu-conform, not in the input or the device): "
        f"{kind}: {first}; traceback saved to {path}"
    )
