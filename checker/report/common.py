"""What every rendering of the report shares: row order, short names, locations, escaping."""

from __future__ import annotations

import re

MARK = {"pass": "✔", "fail": "✘", "inconclusive": "?", "not-applicable": "–", "not-exercised": "·"}
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>|~])")
# A terminal showing the file would obey them, and NUL is a parse error in HTML: spelled out instead.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def rows(doc: dict):
    """(section, requirement) in spec order."""
    for sec in doc["sections"]:
        for r in sec["requirements"]:
            yield sec, r


def findings_of(item: dict) -> list[dict]:
    """Definite before possible, then in trace order."""
    return sorted(item["findings"], key=lambda f: (f["severity"] != "definite", f["column"], f["file"], f["line"]))


def short_req(rid: str) -> str:
    return rid.replace("VIRTIO_GPU_CMD_", "").replace("VIRTIO_GPU_", "")


def where(f: dict) -> str:
    return f"{f['file']}:{f['line']}" if f.get("line") else (f.get("file") or "")


def column_size(c: dict) -> str:
    """How much a column rests on: exchanges of a trace, or a campaign's commands and cases."""
    s = c["stats"]
    if c["kind"] == "trace":
        return f"{s.get('exchanges', 0)} exchanges"
    return (
        f"{s.get('commands', 0)} commands in {s.get('cases', 0)} cases, {s.get('seconds', 0)} s, seed {s.get('seed')}"
    )


def columns_line(c: dict) -> str:
    notes = "".join(f"; {n}" for n in c["notes"])
    return (
        f"- **{c['id']}** {escape_md(c['label'])} ({c['kind']}, profile {c['profile']}): "
        f"{escape_md(column_size(c) + notes)}"
    )


def code_md(text) -> str:
    """A code span: backslashes are literal inside one, so only what could end it (or a table row) goes."""
    text = str(text or "").replace("`", "'").replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    return f"`{spelled(text)}`"


def spelled(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def escape_md(text) -> str:
    """Inert in Markdown: no markup, no HTML, no table breaks, one line."""
    text = str(text if text is not None else "").replace("\r", " ").replace("\n", " ")
    return _MD_SPECIAL.sub(r"\\\1", spelled(text))
