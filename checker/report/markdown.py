"""The report as Markdown, for pasting into an issue or a mailing-list post (GitHub-flavoured tables)."""

from __future__ import annotations

from .common import MARK, code_md, columns_line, escape_md, findings_of, rows, short_req, where


def render(doc: dict) -> str:
    cols = doc["columns"]
    out = [f"# virtio-gpu conformance report (spec {doc['spec']['version']})", ""]
    out += [columns_line(c) for c in cols] + [""]
    out += ["## Summary", "", "| | " + " | ".join(c["id"] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for v in ("fail", "inconclusive", "pass", "not-applicable", "not-exercised"):
        out.append(f"| {v} | " + " | ".join(str(c["verdict_counts"].get(v, 0)) for c in cols) + " |")
    f = doc["totals"]["findings"]
    for k, name in (
        ("definite", "definite findings"),
        ("possible", "possible findings"),
        ("divergences", "open answers (divergences)"),
    ):
        out.append(f"| {name} | " + " | ".join(str(f[c["id"]][k]) for c in cols) + " |")
    out += [
        "",
        "## Matrix",
        "",
        "| requirement | level | basis | " + " | ".join(c["id"] for c in cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    for _sec, r in rows(doc):
        cells = []
        for c in cols:
            v = r["verdicts"].get(c["id"])
            cells.append(
                f"{MARK[v['verdict']]} {v['verdict']}" + (f" ({v['events']})" if v["events"] else "") if v else ""
            )
        flag = " ⚠ differs" if r.get("divergent") else ""
        out.append(
            f"| [{code_md(short_req(r['id']))}]({r['url']}){flag} | {r['level']} | {r['basis']} | "
            + " | ".join(cells)
            + " |"
        )
    out += ["", "## By section", ""]
    for sec in doc["sections"]:
        title = escape_md(" / ".join(sec["path"]))
        out.append(f"### [{title}]({sec['url']})" if sec["url"] else f"### {title}")
        out.append("")
        for r in sec["requirements"]:
            out.append(
                f"- **{code_md(r['id'])}** ({r['level']}, {r['basis']}, binds the {r['binds']}): "
                f"{escape_md(r['summary'])} [{r['loc']['file']}:{r['loc']['line']}]({r['url']})"
            )
            if r.get("quote"):
                out.append(f"  > {escape_md(r['quote'])}")
            if not r["checkable"]:
                out.append(f"  - not checkable from command traffic: {escape_md(r['why_not'])}")
            for c in cols:
                v = r["verdicts"].get(c["id"])
                if v:
                    why = f": {escape_md(v['reason'])}" if v.get("reason") else ""
                    out.append(f"  - {c['id']}: {v['verdict']} ({v['events']} events){why}")
            out += _findings(findings_of(r))
        for rule in sec["rules"]:
            out.append(
                f"- rule **{code_md(rule['id'])}** (implied, {rule['basis'] or 'no basis'}): "
                f"{escape_md(rule['summary'])}"
            )
            out += _findings(findings_of(rule))
        out.append("")
    if doc["divergences"]:
        out += [
            "## Where implementations differ (the spec leaves it open)",
            "",
            "| command | what | " + " | ".join(c["id"] for c in cols) + " |",
            "|---|---|" + "---|" * len(cols),
        ]
        for d in doc["divergences"]:
            out.append(
                f"| {escape_md(d['command'] or 'any')} | {escape_md(d['check'])} | "
                + " | ".join(str(d["counts"].get(c["id"], "")) for c in cols)
                + " |"
            )
        out.append("")
    for block in doc["differential"]:
        out += [
            f"## Differential run ({block['column']})",
            "",
            "| command | answers | verdict | count |",
            "|---|---|---|---|",
        ]
        for row in block["rows"]:
            answers = ", ".join(f"{k}: {v}" for k, v in row["answers"].items())
            out.append(
                f"| {escape_md(row['command'])} | {escape_md(answers)} | {row['verdict']}: "
                f"{escape_md(row['why'])} | {row['count']} |"
            )
        out.append("")
    for block in doc.get("exercised") or []:
        out += [
            f"## Rule checks a device's answers judged ({block['column']})",
            "",
            "| family | checks | judged | exchanges | refused at the feature gate |",
            "|---|---|---|---|---|",
        ]
        for fam, n in sorted(block["families"].items()):
            out.append(f"| {escape_md(fam)} | {n['checks']} | {n['judged']} | {n['exchanges']} | {n.get('gated', 0)} |")
        out += ["", "| command | check | held | broken | open |", "|---|---|---|---|---|"]
        for row in block["checks"]:
            out.append(
                f"| {escape_md(row['command'])} | {escape_md(row['check'])} | {row['held']} | {row['broken']} | "
                f"{row['open']} |"
            )
        out.append("")
    out += [
        "## Totals per basis",
        "",
        "| basis | requirements | checkable | " + " | ".join(c["id"] for c in cols) + " |",
        "|---|---|---|" + "---|" * len(cols),
    ]
    for basis, t in doc["totals"]["by_basis"].items():
        cells = [", ".join(f"{k} {n}" for k, n in t["columns"].get(c["id"], {}).items() if n) for c in cols]
        out.append(f"| {basis} | {t['requirements']} | {t['checkable']} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def _findings(fs: list[dict], limit: int = 10) -> list[str]:
    out = []
    for f in fs[:limit]:
        extra = f" (possible: {escape_md(f['reason'])})" if f.get("reason") else ""
        out.append(
            f"  - {f['column']} **{f['severity']}** {f['kind']} by the {f['side']} at "
            f"{code_md(where(f))}: {escape_md(f['message'])}{extra}"
        )
    if len(fs) > limit:
        out.append(f"  - ... and {len(fs) - limit} more (see the JSON report)")
    return out
