"""The committed v1.4 snapshot is exactly what the real sources regenerate, and holds no spec prose."""

from __future__ import annotations

import re
from importlib import resources

from virtgpu_conform.spec.load import SNAPSHOT, load_snapshot, snapshot_json


def _committed() -> str:
    return resources.files("virtgpu_conform.spec").joinpath("snapshot", SNAPSHOT).read_text()


def test_snapshot_regenerates_identically(v14):
    ir, _ = v14
    fresh = snapshot_json(ir)
    assert fresh == _committed(), (
        "spec/snapshot is stale: run `virtgpu-conform spec import ../shared/spec-sources "
        "--header ../shared/spec-sources/virtio_gpu.h --version-label v1.4-cs01`"
    )


def test_snapshot_loads_as_the_default(v14):
    assert load_snapshot() == v14[0]


def test_snapshot_holds_no_sentence_of_the_spec(spec_sources):
    snap = " ".join(_committed().split())
    for name in ("gpu-description.tex", "virtio-gpu-v1.2.tex"):
        text = (spec_sources / name).read_text()
        text = re.sub(r"\\begin\{lstlisting\}.*?\\end\{lstlisting\}", "", text, flags=re.S)
        for line in text.splitlines():
            words = line.split()
            if len(words) >= 6 and not line.lstrip().startswith("\\"):
                assert " ".join(words) not in snap, f"spec prose in the snapshot: {line!r}"
