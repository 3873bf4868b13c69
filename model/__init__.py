"""The protocol model: codec, device state and rules derived from the SpecIR (see issue 3)."""
