"""virtio-gpu spec ingestion: the LaTeX chapter and the C header parsed into a SpecIR."""
