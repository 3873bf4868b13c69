"""The pytest plugin as a VMM's own suite uses it: recorded sessions as items, and a device fuzzed as
a hypothesis test under pytest-xdist, its shrunk finding kept in a shared example database and
replayed by later runs on other workers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DATA = REPO / "tests" / "data" / "plugin"


def _pytest(cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """pytest in a folder of its own, as in another project's checkout: only the plugin is ours."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_recorded_sessions_are_items_with_their_verdicts_as_junit_properties(tmp_path):
    traces = tmp_path / "traces"
    shutil.copytree(REPO / "traces", traces, ignore=shutil.ignore_patterns("capture"))
    # one more session: a saved case in which the device breaks a rule (a native trace is its own session)
    shutil.copy(
        REPO / "tests" / "data" / "fuzz" / "qemu-7.2-empty-backing-accepted-then-missing.ndjson",
        traces / "broken.ndjson",
    )
    r = _pytest(tmp_path, "--virtgpu-traces", str(traces), "--junitxml", str(tmp_path / "junit.xml"), "-rA")
    real = sorted(str(s.parent.relative_to(REPO / "traces")) for s in (REPO / "traces").glob("qemu-*/*/qemu-trace.log"))
    assert r.returncode == 1, r.stdout + r.stderr  # the broken session fails, the real ones pass
    assert re.search(rf"1 failed, {len(real)} passed", r.stdout), r.stdout
    assert "virtgpu-traces/traces::broken.ndjson" in r.stdout
    # the failure text is the findings, each with its trace line and requirement
    assert re.search(r"broken\.ndjson:\d+: definite device finding", r.stdout), r.stdout
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "junit.xml").iter("testcase")}
    assert set(cases) == {*real, "broken.ndjson"}
    props = {p.get("name"): p.get("value") for p in cases["qemu-7.2/fbdev-modetest"].iter("property")}
    assert props["exchanges"] == "314" and props["definite"] == "0"
    assert props["device-operation/guest/driver-must.2"] == "pass"
    assert cases["broken.ndjson"].find("failure") is not None


def _device_tests(tmp: Path, db: Path | str, generate: bool) -> subprocess.CompletedProcess:
    suite = tmp / "vmm-tests"
    suite.mkdir(exist_ok=True)
    for name in ("planted_device.py", "test_planted.py"):
        shutil.copy(PLUGIN_DATA / name, suite / name)
    return _pytest(
        suite,
        "-n",
        "2",
        "--virtgpu-db",
        str(db),
        "--virtgpu-out",
        str(tmp / "cases"),
        "test_planted.py",
        env={"VIRTGPU_PLUGIN_GENERATE": "1" if generate else "0"},
    )


def test_a_finding_one_worker_shrank_replays_on_the_others_from_a_shared_database(tmp_path):
    db = tmp_path / "examples"
    first = _device_tests(tmp_path, db, generate=True)
    out = first.stdout + first.stderr
    assert first.returncode == 1, out
    assert "1 failed, 1 passed" in out and "test_planted.py::test_planted_device" in out
    # the planted bug, shrunk: hypothesis prints the steps, the plugin the finding and its case (an UNREF of
    # no resource answered OK, or one too short to read answered OK: which one hypothesis meets first depends
    # on the draws)
    found = re.search(
        r"adapter device: (violation: .*?): RESOURCE_UNREF: (VIRTIO_GPU_RESP_OK_NODATA|answered OK_NODATA)", out
    )
    assert found and "state.teardown()" in out, out
    saved = list((tmp_path / "cases" / "test_planted_device").glob("*/repro.ndjson"))
    assert saved, out
    assert any(db.rglob("*")), "nothing was saved in the example database"
    # Later runs generate nothing: only what the database holds runs. The planted device still fails,
    # from the case the first run shrank; the reference device, with nothing saved, runs nothing.
    again = _device_tests(tmp_path, db, generate=False)
    out2 = again.stdout + again.stderr
    assert again.returncode == 1, out2
    assert "1 failed, 1 skipped" in out2, out2
    assert f"adapter device: {found.group(1)}: RESOURCE_UNREF: {found.group(2)}" in out2, out2
    # and without the database, the same run finds nothing to replay
    empty = _device_tests(tmp_path, tmp_path / "empty-db", generate=False)
    assert empty.returncode == 0 and "2 skipped" in empty.stdout, empty.stdout + empty.stderr
    # the saved case replays with the command the failure names
    replay = re.search(r"replay it: (virtgpu-conform fuzz --replay .*)", out2)
    assert replay, out2
    r = subprocess.run(
        replay.group(1).replace("virtgpu-conform", f"{sys.executable} -m virtgpu_conform", 1),
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and found.group(1) in r.stdout, r.stdout + r.stderr


@pytest.fixture
def redis_server(tmp_path):
    """A redis server of the test's own, on a unix socket in its tmp_path, stopped after it: the
    example database as machines that share nothing but a server would."""
    binary = shutil.which("redis-server")
    if binary is None:
        why = "redis-server is not installed (apt-get install redis-server)"
        pytest.fail(f"CI installs it: {why}") if os.environ.get("CI") else pytest.skip(why)
    sock = tmp_path / "redis.sock"
    p = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists(), "redis-server did not listen"
        yield f"unix://{sock}"
    finally:
        p.terminate()
        p.wait(timeout=10)


def test_a_finding_replays_from_a_redis_database(tmp_path, redis_server):
    """The same, with the database on a redis server (`--virtgpu-db unix://...`, or redis://HOST:PORT
    for machines on a network): what one run shrank, a run that generates nothing fails on."""
    first = _device_tests(tmp_path, redis_server, generate=True)
    out = first.stdout + first.stderr
    assert first.returncode == 1 and "1 failed, 1 passed" in out, out
    found = re.search(r"adapter device: (violation: .*?): RESOURCE_UNREF", out)
    assert found, out
    again = _device_tests(tmp_path, redis_server, generate=False)
    out2 = again.stdout + again.stderr
    assert again.returncode == 1 and "1 failed, 1 skipped" in out2, out2
    assert f"adapter device: {found.group(1)}: RESOURCE_UNREF" in out2, out2
