"""The `virtgpu-conform` command line."""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading

import click

from virtgpu_conform.checker.errors import save_traceback
from virtgpu_conform.checker.version import tool_version

from . import console
from .check import check
from .console import EXIT_BUG, EXIT_OK, EXIT_USAGE
from .fuzz import fuzz
from .model import model
from .report import report
from .setup import setup
from .spec import spec


class _Group(click.Group):
    """Turns unusable input into a one-line diagnostic and exit 2, never a traceback."""

    def invoke(self, ctx: click.Context):
        from virtgpu_conform.spec.errors import SpecSourceError

        console.reset()
        if hasattr(signal, "SIGUSR1"):  # `kill -USR1 PID` prints where a long run is, on stderr, and it goes on
            try:
                # no __stderr__: sys.stderr, which is what faulthandler itself takes for file=None
                faulthandler.register(signal.SIGUSR1, file=sys.__stderr__ or sys.stderr, all_threads=True)
            except (AttributeError, OSError, ValueError):  # no real stderr (embedded, or a test's runner)
                pass
        if threading.current_thread() is threading.main_thread():
            # A SIGTERM stops the tool as Ctrl-C does: what was computed is kept, every device it
            # started is stopped and every folder it made removed, on the way out.
            signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            return super().invoke(ctx)
        except SpecSourceError as exc:
            console.err.print(str(exc), markup=False, soft_wrap=True)
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            console.err.print("interrupted", markup=False)
            sys.exit(130)
        except BrokenPipeError:
            # Output written past rich (JSON, a report) to a reader that went away: what was read
            # is all that was wanted, so this is no failure. (What rich prints, a check's summary
            # among it, stops quietly and leaves the exit code to the verdict.)
            console.silence_stdout()
            sys.exit(EXIT_OK)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):  # click's own ways out
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the bug, one line and a saved traceback
            console.err.print(
                console.bug_line(type(exc).__name__, str(exc), save_traceback(exc)), markup=False, soft_wrap=True
            )
            sys.exit(EXIT_BUG)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(tool_version(), "--version", prog_name="virtgpu-conform")
def main() -> None:
    """Conformance tooling for virtio-gpu devices and drivers.

    Exit codes: 0 ok, 1 findings, 2 usage or input error, 3 inconclusive only,
    4 internal error (a bug in this tool; its traceback is saved to a file).
    Results go to stdout; progress and diagnostics to stderr.
    """


main.add_command(spec)
main.add_command(check)
main.add_command(model)
main.add_command(fuzz)
main.add_command(report)
main.add_command(setup)
