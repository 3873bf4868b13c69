"""Guest RAM the device targets fill alike in every QEMU they start: the pixel pattern a transfer reads."""

from __future__ import annotations

import hashlib

PATTERN_BASE = 0x01000000  # the machine's RAM_BACKING: the backing it attaches lies here
PATTERN_SIZE = 256 * 1024
PATTERN = hashlib.shake_128(b"virtgpu-conform pixel pattern").digest(PATTERN_SIZE)
