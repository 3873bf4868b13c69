"""The check engine: the model's rules over a trace's exchanges, its findings and per-requirement verdicts."""
