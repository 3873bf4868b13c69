"""Device tests as a VMM's own suite would write them, run by tests/integration/test_pytest_plugin.py."""

import os
import sys

import pytest

DEVICE = os.path.join(os.path.dirname(__file__), "planted_device.py")
GENERATE = os.environ.get("VIRTGPU_PLUGIN_GENERATE", "1") == "1"


@pytest.mark.virtgpu_device("adapter", adapter=f"{sys.executable} {DEVICE}", timeout=5.0)
def test_planted_device(virtgpu_device):
    virtgpu_device.check(max_examples=300, generate=GENERATE)


@pytest.mark.virtgpu_device("reference")
def test_reference_device(virtgpu_device):
    virtgpu_device.check(max_examples=25, generate=GENERATE)
