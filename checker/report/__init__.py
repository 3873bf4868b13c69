"""Spec-compliance reports: saved results -> one report document (JSON) -> text, Markdown, HTML, JUnit, SARIF."""
