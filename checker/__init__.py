"""Engines and the user-facing surface: the CLI, trace checking, fuzzing and reports."""
