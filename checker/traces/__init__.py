"""Trace files in: the importers (native, QEMU's log, the guest's tracepoints), format detection and merging."""
