"""The pytest plugin (entry point `pytest11`): recorded sessions as test items, and devices as
hypothesis tests, for VMM and device developers' own test suites.

    pytest --virtgpu-traces traces/          # one item per recorded session; findings fail it

    @pytest.mark.virtgpu_device("qemu", qemu="/opt/qemu/bin/qemu-system-x86_64")
    def test_my_qemu(virtgpu_device):
        virtgpu_device.check(max_examples=200)

Both run unchanged under pytest-xdist (`-n auto`); device tests keep their shrunk findings in
hypothesis' example database (`--virtgpu-db DIR` or `redis://HOST:PORT` to share it between
workers and machines), and every later check of the same device replays them first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

_EXERCISED = ("fail", "inconclusive", "pass")


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("virtgpu", "virtio-gpu conformance (virtgpu-conform)")
    g.addoption(
        "--virtgpu-traces",
        action="append",
        default=[],
        metavar="DIR",
        help="check every recorded session under DIR as a test item (repeatable): a directory of "
        "QEMU and guest logs is one session, each native trace is one",
    )
    g.addoption(
        "--virtgpu-profile",
        choices=("strict", "spec"),
        default="strict",
        help="rules a session is held to (default strict)",
    )
    g.addoption(
        "--virtgpu-fail-on",
        choices=("definite", "possible"),
        default="definite",
        help="fail a session on definite findings only (default), or on possible ones too",
    )
    g.addoption(
        "--virtgpu-db",
        metavar="DIR|redis://HOST:PORT|unix://SOCKET",
        help="the hypothesis example database device tests save and replay findings in: a directory, or a "
        "redis server many machines share (default: hypothesis' own, .hypothesis/ in the working directory, "
        "which xdist workers share)",
    )
    g.addoption(
        "--virtgpu-out",
        metavar="DIR",
        help="where device tests save the cases that show findings (default: each test's tmp_path)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "virtgpu_device(kind='reference', **options): the device the "
        "`virtgpu_device` fixture drives; options as virtgpu_conform.DeviceSpec",
    )


# --- recorded sessions --------------------------------------------------------------------
def _recordings(root: Path) -> Iterator:
    """The sessions under `root`, in a stable order (xdist workers must collect alike)."""
    from virtgpu_conform.checker.check.session import Recording
    from virtgpu_conform.checker.traces import sources
    from virtgpu_conform.checker.traces.events import TraceError

    for folder, dirs, files in os.walk(root):
        dirs.sort()
        logs: dict[str, str] = {}
        skipped = []
        for name in sorted(files):
            path = os.path.join(folder, name)
            try:
                kind = sources.detect(path)
            except (TraceError, OSError):
                continue
            if kind == "native":
                yield Recording.of(path, fmt="native")
            elif kind in logs:
                skipped.append(f"{name} (a second {kind} trace; {os.path.basename(logs[kind])} is used)")
            else:
                logs[kind] = path
        if logs:
            files_ = sorted(((p, k) for k, p in logs.items()), key=lambda f: f[1] == "guest")
            yield Recording(folder, files_, skipped)


class TraceDir(pytest.Collector):
    def collect(self) -> Iterator[pytest.Item]:
        for rec in _recordings(self.path):
            name = os.path.relpath(rec.label, self.path)
            yield TraceSession.from_parent(self, name=name, recording=rec)


class TraceSession(pytest.Item):
    """One recorded session checked against the model; its findings are the failure text."""

    def __init__(self, *, recording, **kw) -> None:
        super().__init__(**kw)
        self.recording = recording

    def runtest(self) -> None:
        from virtgpu_conform.checker.check.session import CheckResult, NotConformant, check_session, protocol_for

        cfg = self.config
        protocol = protocol_for(None)
        s = check_session(self.recording, protocol, cfg.getoption("virtgpu_profile"))
        result = CheckResult([s], cfg.getoption("virtgpu_profile"), protocol.ir.version)
        self.user_properties += [
            ("exchanges", s.exchanges),
            ("definite", len(s.definite)),
            ("possible", len(s.possible)),
        ]
        self.user_properties += [
            (rid, v["verdict"]) for rid, v in s.requirements().items() if v["verdict"] in _EXERCISED
        ]
        lines = result.problems(possible=cfg.getoption("virtgpu_fail_on") == "possible")
        if lines:
            raise NotConformant("\n".join(lines))

    def repr_failure(self, excinfo, style=None):
        from virtgpu_conform.checker.check.session import NotConformant

        if isinstance(excinfo.value, NotConformant):
            return f"{self.recording.label}: not shown conformant\n{excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, f"virtgpu session {self.recording.label}"


@pytest.hookimpl(tryfirst=True)  # before -k and -m deselect
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    for d in config.getoption("virtgpu_traces"):
        root = Path(d).resolve()
        if not root.is_dir():
            raise pytest.UsageError(f"--virtgpu-traces {d}: not a directory")
        items.extend(
            TraceDir.from_parent(session, name=root.name, path=root, nodeid=f"virtgpu-traces/{root.name}").collect()
        )


# --- devices ---------------------------------------------------------------------------------
def _database(spec: Optional[str]):
    if not spec:
        return None
    if spec.startswith(("redis://", "rediss://", "unix://")):
        try:
            # an optional extra (hypothesis[redis]), absent from the dev environment; typed where installed
            import redis  # type: ignore[import-not-found, unused-ignore]
            from hypothesis.extra.redis import RedisExampleDatabase
        except ImportError:
            raise pytest.UsageError(f"--virtgpu-db {spec}: pip install 'virtgpu-conform[redis]'") from None
        return RedisExampleDatabase(redis.Redis.from_url(spec))
    from hypothesis.database import DirectoryBasedExampleDatabase

    return DirectoryBasedExampleDatabase(spec)


@pytest.fixture
def virtgpu_device(request: pytest.FixtureRequest, tmp_path: Path):
    """The device of the test's `virtgpu_device` marker (default: the embedded reference device),
    started for this test and stopped after it: call `.check(max_examples=..., steps=...)`."""
    from virtgpu_conform.checker.fuzz.device_session import DeviceSession
    from virtgpu_conform.checker.fuzz.run import DeviceSpec

    mark = request.node.get_closest_marker("virtgpu_device")
    device = DeviceSpec(*mark.args, **mark.kwargs) if mark else DeviceSpec()
    cfg = request.config
    out = cfg.getoption("virtgpu_out")
    out = os.path.join(out, request.node.name) if out else str(tmp_path)
    from virtgpu_conform.checker.devices.target import TargetError

    try:
        session = DeviceSession(device, out, cfg.getoption("virtgpu_profile"), _database(cfg.getoption("virtgpu_db")))
    except TargetError as exc:  # the message says what is missing: the device's traceback would not
        pytest.fail(f"the {device.kind} device cannot run here: {exc}", pytrace=False)
    try:
        yield session
    finally:
        session.close()
