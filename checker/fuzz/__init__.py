"""Fuzzing real device implementations: a virtio-pci driver over QEMU's qtest, device targets, campaigns."""
