"""The report as one self-contained HTML page: summary cards, the requirement x column matrix,
a timeline per trace, then the detail under each section.

Everything in the document that came from a trace, a device or the user's files is text to
this module: it is escaped once, where it is written (`_e`), and only http(s) URLs the report
builder made are ever put in an href (`_link`). The page loads nothing: CSS, JS and SVG are
inline, and a Content-Security-Policy with the script's hash makes any other script inert
even if an escaping bug let one through. Without JS the page is complete; the script only
adds the filters.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import re
from typing import Any, Optional
from urllib.parse import urlsplit

from .common import MARK, findings_of, short_req, spelled, where
from .html_assets import CSS, JS, PALETTE

VERDICTS = ("fail", "inconclusive", "pass", "not-applicable", "not-exercised")
SHORT = {"not-applicable": "n/a", "not-exercised": "not exercised", "inconclusive": "inconclusive"}
SHOWN_FINDINGS, MAX_FINDINGS = 12, 200  # per requirement: shown, then folded, then counted


def render(doc: dict) -> str:
    anchors = _Anchors()
    parts = [
        _header(doc),
        _nav(doc),
        "<main>",
        _summary(doc),
        _filters(doc),
        _matrix(doc, anchors),
        _timelines(doc, anchors),
        _details(doc, anchors),
        _not_checkable(doc, anchors),
        _divergences(doc),
        _differential(doc),
        _exercised(doc),
        _totals(doc),
        "</main>",
        f"<footer>{_e(doc.get('schema'))} v{_e(doc.get('version'))}, written by virtgpu-conform "
        f"{_e(doc.get('tool'))}. Inputs: {', '.join(f'<code>{_e(i)}</code>' for i in doc.get('inputs', []))}"
        "</footer>",
    ]
    digest = base64.b64encode(hashlib.sha256(JS.encode()).digest()).decode()
    csp = (
        f"default-src 'none'; script-src 'sha256-{digest}'; style-src 'unsafe-inline'; img-src 'none'; "
        "base-uri 'none'; form-action 'none'"
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>virtio-gpu conformance report (spec {_e(doc['spec']['version'])})</title>"
        f"<style>{CSS}</style></head><body>" + "\n".join(parts) + f"<script>{JS}</script></body></html>\n"
    )
    # A lone surrogate (a \\ud800 escape in a result file) cannot be written as UTF-8.
    return page.encode("utf-8", "replace").decode("utf-8")


# --- safety ---------------------------------------------------------------------------------------


def _e(x) -> str:
    return spelled(html.escape("" if x is None else str(x), quote=True))


def _safe_url(url) -> bool:
    if not isinstance(url, str) or any(ch.isspace() or ord(ch) < 32 for ch in url):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and url.lower().startswith(parts.scheme + "://")


def _path(x) -> str:
    """Escaped, with break opportunities after each slash: long paths wrap at their parts."""
    return _e(x).replace("/", "/<wbr>")


def _short_label(label) -> str:
    """A column label that fits a matrix header: a long path keeps its last two parts."""
    s = str(label)
    return s if len(s) <= 28 or "/" not in s.rstrip("/") else "…/" + "/".join(s.rstrip("/").split("/")[-2:])


def _link(url, text_html: str) -> str:
    """`text_html` is already escaped; anything but an http(s) URL is shown as text, not linked."""
    if not _safe_url(url):
        return text_html
    return f'<a href="{_e(url)}" target="_blank" rel="noopener noreferrer">{text_html}</a>'


def _tok(x) -> str:
    """A class/data token from a document string: our enum values pass, anything else is `other`."""
    s = str(x if x is not None else "none")
    return s if re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", s) else "other"


def _int(x) -> int:
    try:
        return int(x)
    except (TypeError, ValueError):
        return 0


def _num(x):
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


class _Anchors:
    """Stable, safe in-page ids: a slug of the requirement id, numbered if two slugs collide."""

    def __init__(self) -> None:
        self.ids: dict[tuple[str, str], str] = {}
        self.used: set[str] = set()

    def __call__(self, kind: str, key) -> str:
        k = (kind, str(key))
        if k not in self.ids:
            base = f"{kind}-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", str(key)).strip("-")[:80] or "x")
            slug, n = base, 1
            while slug in self.used:
                n += 1
                slug = f"{base}-{n}"
            self.used.add(slug)
            self.ids[k] = slug
        return self.ids[k]


# --- shared pieces --------------------------------------------------------------------------------


def _verdict(v) -> tuple[str, dict]:
    """(token, record) for a requirement's verdict record or an implied rule's bare verdict."""
    if isinstance(v, dict):
        return _tok(v.get("verdict")), v
    return _tok(v), {}


def _chip(verdict: str, text: str, zero: bool = False) -> str:
    return (
        f'<span class="chip v-{verdict}{" zero" if zero else ""}">'
        f'<span class="sym">{MARK.get(verdict, "")}</span>{text}</span>'
    )


def _cols(doc: dict) -> list[dict]:
    return doc["columns"]


def _items(doc: dict):
    """(section, item, is_rule) for every matrix row, in spec order, implied rules after a section's requirements."""
    for sec in doc["sections"]:
        for r in sec["requirements"]:
            yield sec, r, False
        for r in sec["rules"]:
            yield sec, r, True


def _differs(item: dict, is_rule: bool) -> bool:
    """The builder marks requirements; an implied rule differs when columns that saw it disagree."""
    if is_rule:
        return len({_verdict(v)[0] for v in item["verdicts"].values()}) > 1
    return bool(item.get("divergent"))


def _row_attrs(doc: dict, item: dict, is_rule: bool) -> str:
    """What the filters read: the verdicts in the row, its basis, whether it differs or has findings."""
    vs = sorted({_verdict(item["verdicts"][c["id"]])[0] for c in _cols(doc) if c["id"] in item["verdicts"]})
    return (
        f' data-row data-v="{" ".join(vs)}" data-b="{_tok(item.get("basis"))}"'
        + (" data-differs" if _differs(item, is_rule) else "")
        + (" data-findings" if item["findings"] else "")
    )


def _label(item: dict, sec: dict) -> str:
    rid = str(item["id"])
    return short_req(rid.removeprefix(f"{sec['id']}/"))


# --- header, summary ------------------------------------------------------------------------------


def _header(doc: dict) -> str:
    t = doc["totals"]
    definite = sum(_int(f.get("definite")) for f in t["findings"].values())
    possible = sum(_int(f.get("possible")) for f in t["findings"].values())
    open_ = sum(_int(f.get("divergences")) for f in t["findings"].values())
    differs = sum(1 for _, r, _ in _items(doc) if r.get("divergent"))
    spec, ncols = doc["spec"], len(_cols(doc))
    quoted = f" · quotes from <code>{_e(spec['quoted_from'])}</code>" if spec.get("quoted_from") else ""
    heads = [
        (f"{definite} definite finding{'s' * (definite != 1)}", "bad" if definite else "ok"),
        (f"{possible} possible", "warn" if possible else "ok"),
        (
            f"{t.get('implied_rules_with_findings', 0)} implied rules broken",
            "bad" if t.get("implied_rules_with_findings") else "ok",
        ),
        (
            f"{differs} requirement{'s' * (differs != 1)} differ{'s' * (differs == 1)} between columns",
            "warn" if differs else "ok",
        ),
        (f"{open_} answers the spec leaves open", ""),
    ]
    return (
        f'<header class="top"><h1>virtio-gpu conformance report</h1>'
        f'<p class="meta">spec <b>{_e(spec["version"])}</b> · {_int(t["requirements"])} requirements · '
        f"{ncols} column{'s' * (ncols != 1)} · virtgpu-conform {_e(doc.get('tool'))}{quoted}</p>"
        '<div class="headline">' + "".join(f'<span class="{c}">{_e(s)}</span>' for s, c in heads) + "</div></header>"
    )


def _nav(doc: dict) -> str:
    links = [("summary", "Summary"), ("matrix", "Matrix")]
    if any(c.get("timeline") for c in _cols(doc)):
        links.append(("timelines", "Timelines"))
    links += [("details", "By section"), ("not-checkable", "Not checkable")]
    if doc["divergences"]:
        links.append(("divergences", "Left open"))
    if doc["differential"]:
        links.append(("differential", "Differential"))
    if doc.get("exercised"):
        links.append(("exercised", "Checks exercised"))
    links.append(("totals", "Totals"))
    return '<nav class="toc">' + "".join(f'<a href="#{k}">{t}</a>' for k, t in links) + "</nav>"


def _summary(doc: dict) -> str:
    cards = []
    for c in _cols(doc):
        s, counts = c.get("stats") or {}, c.get("verdict_counts") or {}
        if c["kind"] == "trace":
            got = s.get("commands")
            cmds = got if isinstance(got, dict) else {}
            stats = f"{_int(s.get('exchanges'))} exchanges · {len(cmds)} command types"
        else:
            cmds = {}
            stats = (
                f"{_int(s.get('commands'))} commands in {_int(s.get('cases'))} cases · "
                f"{_e(s.get('seconds'))} s · seed {_e(s.get('seed'))}"
            )
        total = sum(_int(counts.get(v)) for v in VERDICTS) or 1
        bar = "".join(
            f'<span class="v-{v}" style="width:{100 * _int(counts.get(v)) / total:.2f}%" '
            f'title="{_int(counts.get(v))} {v}"></span>'
            for v in VERDICTS
            if _int(counts.get(v))
        )
        chips = "".join(
            f"<li>{_chip(v, f' {_int(counts.get(v))} {SHORT.get(v, v)}', not _int(counts.get(v)))}</li>"
            for v in VERDICTS
        )
        f = doc["totals"]["findings"].get(c["id"], {})
        d = _int(f.get("definite"))
        fc = (
            f'<div class="fcounts">findings: <b class="{"bad" if d else ""}">{d} definite</b> · '
            f"{_int(f.get('possible'))} possible · {_int(f.get('divergences'))} answers left open</div>"
        )
        notes = "".join(f"<li>⚠ {_e(n)}</li>" for n in c.get("notes") or [])
        more = "".join(
            f"<tr><td><code>{_e(short_req(k))}</code></td><td>{_e(n)}</td></tr>"
            for k, n in sorted(cmds.items(), key=lambda kv: -_int(kv[1]))
        )
        inputs = "<br>".join(f"<code>{_e(i)}</code>" for i in c.get("inputs") or [])
        cards.append(
            f'<div class="card" id="col-{_e(c["id"])}"><div class="ch"><span class="cid">{_e(c["id"])}</span>'
            f'<span class="kind">{_e(c["kind"])}</span><span>profile {_e(c.get("profile") or "?")}</span></div>'
            f'<div class="label">{_path(c["label"])}</div><div class="stats">{stats}</div>'
            f'<div class="vbar">{bar}</div><ul class="chips">{chips}</ul>{fc}'
            + (f'<ul class="notes">{notes}</ul>' if notes else "")
            + f"<details><summary>inputs{' and commands' if more else ''}</summary>"
            f"from <code>{_e(c.get('source'))}</code><br>{inputs}"
            + (f'<table class="kv">{more}</table>' if more else "")
            + "</details></div>"
        )
    return '<section id="summary"><h2>Summary</h2><div class="cards">' + "".join(cards) + "</div></section>"


def _filters(doc: dict) -> str:
    bases = []
    for _, r, _ in _items(doc):
        b = _tok(r.get("basis"))
        if b not in bases:
            bases.append(b)
    vboxes = "".join(
        f'<label><input type="checkbox" data-group="verdict" value="{v}" checked> '
        f'<span class="sym">{MARK[v]}</span>{SHORT.get(v, v)}</label>'
        for v in VERDICTS
    )
    bboxes = "".join(
        f'<label><input type="checkbox" data-group="basis" value="{b}" checked> '
        f"{'implied (no basis)' if b == 'none' else b}</label>"
        for b in bases
    )
    return (
        '<form id="filters" hidden>'
        f"<fieldset><legend>verdict</legend>{vboxes}</fieldset>"
        f"<fieldset><legend>basis</legend>{bboxes}</fieldset>"
        '<fieldset><legend>only</legend><label><input type="checkbox" data-group="only" value="differs"> '
        'rows that differ</label><label><input type="checkbox" data-group="only" value="findings"> '
        "with findings</label></fieldset>"
        '<fieldset><button type="button" data-preset="problems">problems only</button>'
        '<button type="button" data-preset="all">show all</button></fieldset><span id="shown"></span></form>'
    )


# --- matrix ---------------------------------------------------------------------------------------


def _matrix(doc: dict, anchors: _Anchors) -> str:
    cols = _cols(doc)
    head = (
        "<tr><th>requirement</th><th>level</th><th>binds</th><th>basis</th>"
        + "".join(
            f'<th class="col" title="{_e(c["label"])}">{_e(c["id"])}'
            f'<span class="sub">{_e(_short_label(c["label"]))}</span></th>'
            for c in cols
        )
        + "</tr>"
    )
    body = []
    for sec in doc["sections"]:
        rows = [_matrix_row(doc, sec, r, False, anchors) for r in sec["requirements"]]
        rows += [_matrix_row(doc, sec, r, True, anchors) for r in sec["rules"]]
        if rows:
            sid = anchors("sec", sec["id"])
            body.append(
                f'<tbody data-fgroup><tr class="sec" id="m-{sid}"><th colspan="{4 + len(cols)}">'
                f'<a href="#{sid}">{_e(" / ".join(sec["path"]))}</a></th></tr>' + "".join(rows) + "</tbody>"
            )
    legend = (
        '<p class="legend">'
        + "".join(_chip(v, f" {v}") for v in VERDICTS)
        + " — the small number is how many events exercised the requirement; ⚑ counts findings; "
        '<span class="tag differs">≠ differs</span> marks rows whose verdicts differ between columns. '
        "Hover a cell for the reason.</p>"
    )
    return (
        f'<section id="matrix"><h2>Matrix: requirements in spec order × columns</h2>{legend}'
        f'<table class="matrix"><thead>{head}</thead>' + "".join(body) + "</table></section>"
    )


def _matrix_row(doc: dict, sec: dict, item: dict, is_rule: bool, anchors: _Anchors) -> str:
    differs = _differs(item, is_rule)
    tags = (' <span class="tag differs">≠ differs</span>' if differs else "") + (
        ' <span class="tag implied">implied</span>' if is_rule else ""
    )
    # An implied rule binds whoever its findings blame; a requirement says whom it binds.
    binds = (item["findings"][0].get("side") if item["findings"] else "") if is_rule else item.get("binds")
    cls = ' class="differs"' if differs else ""
    return (
        f"<tr{_row_attrs(doc, item, is_rule)}{cls}>"
        f'<td class="rid" title="{_e(item["id"])}: {_e(item.get("summary"))}">'
        f'<a href="#{anchors("req", item["id"])}">{_e(_label(item, sec))}</a>{tags}</td>'
        f'<td class="meta">{"rule" if is_rule else _e(item.get("level"))}</td><td class="meta">{_e(binds)}</td>'
        f'<td class="meta">{_e(item.get("basis") or "–")}</td>' + "".join(_cell(c, item) for c in _cols(doc)) + "</tr>"
    )


def _cell(c: dict, item: dict) -> str:
    """Symbol and word (never colour alone), the events that exercised it, the findings under it."""
    if c["id"] not in item["verdicts"]:
        return '<td class="v none" title="no verdict from this column">·</td>'
    v, rec = _verdict(item["verdicts"][c["id"]])
    n, nf = _int(rec.get("events")), sum(1 for f in item["findings"] if f.get("column") == c["id"])
    word = SHORT.get(v, v) if v != "other" else _e(rec.get("verdict", item["verdicts"][c["id"]]))
    tip = f"{c['id']}: {v}" + (f", {n} events" if rec else "") + (f" ({rec['reason']})" if rec.get("reason") else "")
    return (
        f'<td class="v v-{v}" title="{_e(tip)}"><span class="sym">{MARK.get(v, "")}</span>{word}'
        + (f'<span class="ev">{n}</span>' if n else "")
        + (f'<span class="fl" title="{nf} findings">⚑{nf}</span>' if nf else "")
        + "</td>"
    )


# --- timelines ------------------------------------------------------------------------------------


def _timelines(doc: dict, anchors: _Anchors) -> str:
    figs = []
    for c in _cols(doc):
        t = c.get("timeline")
        if isinstance(t, dict) and (_num(t.get("exchanges")) or 0) >= 1:
            marks: dict[Any, tuple[dict, str]] = {}
            for _sec, item, _ in _items(doc):
                for f in item["findings"]:
                    if f.get("column") == c["id"] and _num(f.get("event")) is not None:
                        marks.setdefault(f.get("fingerprint") or id(f), (f, anchors("req", item["id"])))
            figs.append(_timeline(c, t, list(marks.values())))
    if not figs:
        return ""
    return (
        '<section id="timelines"><h2>Timelines</h2><p class="legend">Per trace, in exchange numbers: '
        "each resource from its create to its unref, what each scanout showed (coloured as the resource), "
        "how many fenced commands were sent, and where the findings are. ▶ means still alive at the end of "
        "the trace. Hover a bar for details.</p>" + "".join(figs) + "</section>"
    )


class _Timeline:
    """One trace's SVG, drawn top to bottom: findings, resource lanes, scanout lanes, fences.

    x is the exchange number. Every number drawn went through float() (a result file is
    user input), and every string through _e.
    """

    LEFT, RIGHT, WIDTH, LANE, GAP = 150, 18, 1000, 14, 4
    MAX_ID_LANES, MAX_LANES, SCANOUT_LANES = 20, 24, 16  # lanes drawn at most (more are counted, not drawn)

    def __init__(self, t: dict) -> None:
        self.t, self.n = t, _num(t["exchanges"])
        self.out: list[str] = []
        self.y = 24.0
        self.notes: list[str] = []

    def x(self, i: float) -> float:
        return self.LEFT + (self.WIDTH - self.LEFT - self.RIGHT) * min(max(i, 0), self.n) / self.n

    def spans(self, kind: str, key: str) -> list[tuple[dict, float, Optional[float]]]:
        out = []
        for s in self.t.get(kind) or []:
            if isinstance(s, dict) and s.get(key) is not None and _num(s.get("from")) is not None:
                out.append((s, _num(s["from"]), _num(s.get("to"))))  # to None: still alive at the end
        return out

    def label(self, text: str, y: float, cls: str = "lane-label") -> None:
        self.out.append(f'<text class="{cls}" x="{self.LEFT - 8}" y="{y:.1f}" text-anchor="end">{_e(text)}</text>')

    def bar(self, a: float, b: Optional[float], y: float, fill: str, text: str, tip: str) -> None:
        x0, x1 = self.x(a), self.x(self.n if b is None else b)
        w = max(x1 - x0, 1.5)
        self.out.append(
            f'<g><title>{_e(tip)}</title><rect x="{x0:.1f}" y="{y:.1f}" width="{w:.1f}" '
            f'height="{self.LANE}" rx="2" fill="{fill}" stroke="#fff" stroke-width="0.6"/>'
        )
        if b is None:
            self.out.append(f'<path d="M{x1:.1f} {y:.1f}l6 {self.LANE / 2}l-6 {self.LANE / 2}z" fill="{fill}"/>')
        if w > 5.8 * len(text) + 6:  # only where it fits: the tooltip has it anyway
            self.out.append(
                f'<text class="bar-label" x="{x0 + 3:.1f}" y="{y + self.LANE - 3.5:.1f}" '
                f'style="fill:{_ink(fill)}">{_e(text)}</text>'
            )
        self.out.append("</g>")

    def marks(self, marks: list) -> None:
        if not marks:
            return
        self.label("findings", self.y + self.LANE - 3)
        for f, anchor in marks:
            mx = self.x(_num(f["event"]))
            sev = "definite" if f.get("severity") == "definite" else "possible"
            tip = f"{sev} at exchange {_int(f.get('event'))}: {f.get('message', '')}"
            self.out.append(
                f'<a href="#{anchor}"><title>{_e(tip)}</title><path class="mark-{sev}" '
                f'd="M{mx - 5:.1f} {self.y + 1:.1f}h10l-5 {self.LANE - 2}z"/></a>'
            )
        self.y += self.LANE + self.GAP * 2

    def resources(self) -> None:
        res = sorted(self.spans("resources", "resource"), key=lambda p: p[1])
        if not res:
            return
        # A lane per resource id while few enough to label; else packed first-fit, so a trace
        # with thousands of short-lived buffers still fits in MAX_LANES rows.
        ids = list(dict.fromkeys(str(s["resource"]) for s, _, _ in res))
        by_id = len(ids) <= self.MAX_ID_LANES
        ends: list[float] = []
        for s, a, b in res:
            k = (
                ids.index(str(s["resource"]))
                if by_id
                else next((i for i, end in enumerate(ends) if end <= a), len(ends))
            )
            ends += [-1.0] * (k + 1 - len(ends))
            ends[k] = self.n if b is None else b
            if k < self.MAX_LANES:
                rid, what = s["resource"], s.get("what", "")
                until = f"{_int(b)}" if b is not None else "the end (still alive)"
                self.bar(
                    a,
                    b,
                    self.y + k * (self.LANE + self.GAP),
                    _colour(rid),
                    f"{rid} {what}",
                    f"resource {rid} ({what}): exchanges {_int(a)}–{until}",
                )
        shown = min(len(ends), self.MAX_LANES)
        self.out.append(f'<text class="lane-label" x="4" y="{self.y + self.LANE - 3:.1f}">resources</text>')
        for k in range(shown if by_id else 0):
            self.label(f"res {ids[k]}", self.y + k * (self.LANE + self.GAP) + self.LANE - 3)
        if len(ends) > shown:
            self.notes.append(f"{len(ends) - shown} more resource lanes not drawn")
        self.y += shown * (self.LANE + self.GAP) + self.GAP * 2

    def scanouts(self) -> None:
        scan = self.spans("scanouts", "scanout")
        for sid in sorted({str(s["scanout"]) for s, _, _ in scan}, key=lambda v: (len(v), v))[: self.SCANOUT_LANES]:
            self.label(f"scanout {sid}", self.y + self.LANE - 3)
            for s, a, b in scan:
                if str(s["scanout"]) == sid:
                    until = f"{_int(b)}" if b is not None else "the end"
                    self.bar(
                        a,
                        b,
                        self.y,
                        _colour(s.get("resource")),
                        str(s.get("resource")),
                        f"scanout {sid} shows resource {s.get('resource')}: exchanges {_int(a)}–{until}",
                    )
            self.y += self.LANE + self.GAP
        self.y += self.GAP

    def fences(self) -> None:
        bins = [max(_int(v), 0) for v in self.t.get("fences") or []]
        width, fh, top = max(_int(self.t.get("fence_bin_width")), 1), 30, max(bins, default=0)
        self.y += self.GAP
        self.label("fenced commands", self.y + 11)
        if not top:
            self.out.append(f'<text class="muted" x="{self.LEFT}" y="{self.y + fh - 4:.1f}">no fenced commands</text>')
        for i, v in enumerate(bins):
            if v:
                x0, x1 = self.x(i * width), self.x(min((i + 1) * width, self.n))
                h = max(fh * v / top, 1.5)
                self.out.append(
                    f'<rect class="fence" x="{x0:.1f}" y="{self.y + fh - h:.1f}" '
                    f'width="{max(x1 - x0 - 0.5, 1):.1f}" height="{h:.1f}"><title>exchanges '
                    f"{i * width}–{(i + 1) * width - 1}: {v} fenced</title></rect>"
                )
        if top:
            self.label(f"max {top} per {width} exchange{'s' * (width > 1)}", self.y + 25, "muted")
        self.y += fh + 4

    def svg(self, c: dict) -> str:
        step, y = _step(self.n), self.y
        grid = "".join(
            f'<line class="grid" x1="{self.x(i):.1f}" y1="18" x2="{self.x(i):.1f}" y2="{y:.1f}"/>'
            f'<text x="{self.x(i):.1f}" y="12" text-anchor="middle">{i}</text>'
            f'<text x="{self.x(i):.1f}" y="{y + 14:.1f}" text-anchor="middle">{i}</text>'
            for i in range(0, int(self.n) + 1, step)
        )
        axis = f'<line class="axis" x1="{self.LEFT}" y1="{y:.1f}" x2="{self.WIDTH - self.RIGHT}" y2="{y:.1f}"/>'
        got = self.t.get("dropped")
        dropped = got if isinstance(got, dict) else {}
        notes = [
            f"{_int(dropped.get(k))} more {k} lifetimes not recorded (the checker keeps the first 300)"
            for k in ("resource", "scanout")
            if _int(dropped.get(k))
        ] + self.notes
        cap = (
            f'<figcaption><span class="cid">{_e(c["id"])}</span> <b>{_e(c["label"])}</b> — {_int(self.n)} '
            f"exchanges, {len(self.spans('resources', 'resource'))} resource lifetimes, "
            f"{len(self.spans('scanouts', 'scanout'))} scanout spans"
            + "".join(f"; {_e(s)}" for s in notes)
            + "</figcaption>"
        )
        return (
            f'<figure class="tl" id="tl-{_e(c["id"])}">{cap}<svg viewBox="0 0 {self.WIDTH} {y + 20:.0f}" '
            f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="timeline of {_e(c["label"])}">'
            f"{grid}{axis}" + "".join(self.out) + "</svg></figure>"
        )


def _timeline(c: dict, t: dict, marks: list) -> str:
    tl = _Timeline(t)
    tl.marks(marks)
    tl.resources()
    tl.scanouts()
    tl.fences()
    return tl.svg(c)


def _step(n: float) -> int:
    raw = max(n / 10, 1)
    mag = 10 ** math.floor(math.log10(raw))
    return int(next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw))


def _ink(fill: str) -> str:
    """Black or white text, whichever reads on this bar colour (relative luminance, roughly)."""
    r, g, b = (int(fill[i : i + 2], 16) for i in (1, 3, 5))
    return "#111827" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#ffffff"


def _colour(rid) -> str:
    i = rid if isinstance(rid, int) else int(hashlib.sha256(str(rid).encode()).hexdigest()[:6], 16)
    return PALETTE[i % len(PALETTE)]


# --- per-section detail ---------------------------------------------------------------------------


def _details(doc: dict, anchors: _Anchors) -> str:
    out = ['<section id="details"><h2>By section</h2>']
    for sec in doc["sections"]:
        loc = sec.get("loc") or {}
        title = _e(" / ".join(sec["path"]))
        where_ = f'<span class="loc">{_e(loc.get("file"))}:{_int(loc.get("line"))}</span>' if loc else ""
        out.append(
            f'<section class="sec" id="{anchors("sec", sec["id"])}" data-fgroup>'
            f"<h3>{_link(sec.get('url'), title)}{where_}</h3>"
        )
        out += [_requirement(doc, r, anchors) for r in sec["requirements"]]
        out += [_rule(doc, r, anchors) for r in sec["rules"]]
        out.append("</section>")
    return "".join(out) + "</section>"


def _requirement(doc: dict, r: dict, anchors: _Anchors) -> str:
    attrs = _row_attrs(doc, r, False)
    loc = r.get("loc") or {}
    head = (
        f'<header><code>{_e(r["id"])}</code><span class="lvl">{_e(r.get("level"))}</span>'
        f'<span class="basis">{_e(r.get("basis"))}</span><span class="binds">binds the {_e(r.get("binds"))}</span>'
        + ('<span class="tag differs">≠ differs</span>' if r.get("divergent") else "")
        + ("" if r.get("checkable", True) else '<span class="tag nc">not checkable</span>')
        + "</header>"
    )
    spec_at = _e(loc.get("file")) + f":{_int(loc.get('line'))}"
    body = [
        f'<p class="summary">{_e(r.get("summary"))}</p>',
        f'<p class="where">spec: {_link(r.get("url"), spec_at)}</p>' if loc else "",
    ]
    if r.get("quote"):
        body.append(f"<blockquote>{_e(r['quote'])}</blockquote>")
    if not r.get("checkable", True):
        body.append(f'<p class="ncw">Not checkable from command traffic: {_e(r.get("why_not"))}</p>')
    body.append(_verdict_table(doc, r))
    body.append(_findings(findings_of(r)))
    return (
        f'<article class="req{" differs" if r.get("divergent") else ""}" id="{anchors("req", r["id"])}"{attrs}>'
        + head
        + "".join(body)
        + "</article>"
    )


def _rule(doc: dict, rule: dict, anchors: _Anchors) -> str:
    attrs = _row_attrs(doc, rule, True)
    head = (
        f'<header><code>{_e(rule["id"])}</code><span class="tag implied">implied rule</span>'
        f'<span class="basis">{_e(rule.get("basis") or "no basis")}</span></header>'
    )
    return (
        f'<article class="req rule" id="{anchors("req", rule["id"])}"{attrs}>{head}'
        f'<p class="summary">{_e(rule.get("summary") or "a rule the spec implies")}</p>'
        + _verdict_table(doc, rule)
        + _findings(findings_of(rule))
        + "</article>"
    )


def _verdict_table(doc: dict, item: dict) -> str:
    """One line per distinct (verdict, reason), naming the columns that gave it: most rows are the
    same n/a for every column, and repeating it N times hides the rows that differ."""
    groups: dict[tuple, list] = {}
    for c in _cols(doc):
        if c["id"] not in item["verdicts"]:
            continue
        v, rec = _verdict(item["verdicts"][c["id"]])
        why = rec.get("reason") or ""
        if why and why == item.get("why_not"):
            why = ""  # said once already, above the table
        raw = rec.get("verdict", item["verdicts"][c["id"]])
        groups.setdefault((v, str(raw), str(why)), []).append((c, rec))
    if not groups:
        return '<p class="where">no column gives a verdict</p>'
    rows = []
    for (v, raw, why), members in groups.items():
        ids = "".join(f'<span class="cid" title="{_e(c["label"])}">{_e(c["id"])}</span> ' for c, _ in members)
        counts = "; ".join(f"{_e(c['id'])}: {_events(rec)}" for c, rec in members if _int(rec.get("events")))
        rows.append(
            f'<tr><th>{ids}</th><td class="v v-{v}"><span class="sym">{MARK.get(v, "")}</span>{_e(raw)}</td>'
            f'<td>{_e(why)}{"<br>" if why and counts else ""}<span class="muted">{counts}</span></td></tr>'
        )
    return '<table class="vt">' + "".join(rows) + "</table>"


def _events(rec: dict) -> str:
    parts = [f"{_int(rec.get(k))} {k}" for k in ("passed", "failed", "inconclusive") if _int(rec.get(k))]
    n = _int(rec.get("events"))
    return f"{n} event{'s' * (n != 1)}" + (f" ({', '.join(parts)})" if parts else "")


def _findings(fs: list[dict]) -> str:
    if not fs:
        return ""
    items = [_finding(f) for f in fs[:MAX_FINDINGS]]
    out = '<ol class="findings">' + "".join(items[:SHOWN_FINDINGS]) + "</ol>"
    if len(items) > SHOWN_FINDINGS:
        out += (
            f"<details><summary>{len(items) - SHOWN_FINDINGS} more findings</summary>"
            f'<ol class="findings" start="{SHOWN_FINDINGS + 1}">' + "".join(items[SHOWN_FINDINGS:]) + "</ol></details>"
        )
    if len(fs) > MAX_FINDINGS:
        out += f'<p class="muted">… and {len(fs) - MAX_FINDINGS} more in the JSON report</p>'
    return out


def _finding(f: dict) -> str:
    sev = "definite" if f.get("severity") == "definite" else "possible"
    kind = _tok(f.get("kind"))
    hits = f" · ×{_int(f.get('hits'))}" if _int(f.get("hits")) > 1 else ""
    evid = []
    if f.get("reproducer"):
        flags = ", ".join(k for k in ("shrunk", "reproduced") if f.get(k))
        evid.append(f"reproducer <code>{_e(where(f))}</code>" + (f" ({flags})" if flags else ""))
    elif where(f):
        evid.append(
            f"at <code>{_e(where(f))}</code>" + (f", exchange {_int(f.get('event'))}" if f.get("event") else "")
        )
    related = "".join(f"<li>{_e(x)}</li>" for x in f.get("related") or [])
    return (
        f'<li class="{sev} {kind}"><div class="fh"><span class="cid">{_e(f.get("column"))}</span> <b>{sev}</b> '
        f"{_e(f.get('kind'))} by the {_e(f.get('side'))} · <code>{_e(f.get('check'))}</code>"
        + (f" · {_e(short_req(f['command']))}" if f.get("command") else "")
        + f"{hits}</div>"
        f'<div class="msg">{_e(f.get("message"))}</div>'
        + (f'<div class="evid">{" · ".join(evid)}</div>' if evid else "")
        + (f'<div class="why">possible because: {_e(f["reason"])}</div>' if f.get("reason") else "")
        + (f'<ul class="related">{related}</ul>' if related else "")
        + "</li>"
    )


# --- the tables after the detail ------------------------------------------------------------------


def _not_checkable(doc: dict, anchors: _Anchors) -> str:
    groups: dict[str, list[dict]] = {}
    for _, r, is_rule in _items(doc):
        if not is_rule and not r.get("checkable", True):
            groups.setdefault(str(r.get("why_not") or "no reason given"), []).append(r)
    if not groups:
        return '<section id="not-checkable"><h2>Requirements we cannot check</h2><p>None.</p></section>'
    body = "".join(
        f'<h3>{_e(why)}</h3><ul class="nclist">'
        + "".join(
            f'<li><a href="#{anchors("req", r["id"])}"><code>{_e(r["id"])}</code></a> — {_e(r.get("summary"))}</li>'
            for r in rs
        )
        + "</ul>"
        for why, rs in groups.items()
    )
    n = sum(len(rs) for rs in groups.values())
    return (
        f'<section id="not-checkable"><h2>Requirements we cannot check ({n})</h2>'
        '<p class="legend">Their verdict is not-applicable in every column: nothing in command traffic shows '
        f"whether they hold. Grouped by the reason.</p>{body}</section>"
    )


def _divergences(doc: dict) -> str:
    if not doc["divergences"]:
        return ""
    cols = _cols(doc)
    rows = []
    for d in doc["divergences"]:
        examples: dict[str, list[tuple[Any, Any]]] = {}
        counts = d.get("counts") or {}
        for cid, ex in (d.get("examples") or {}).items():
            if isinstance(ex, dict):
                examples.setdefault(str(ex.get("message") or ""), []).append((cid, ex.get("reproducer")))
        ex_html = "<br>".join(
            f"{_e(', '.join(cid for cid, _ in who))}: {_e(msg)}"
            + "".join(f' <span class="muted">(<code>{_e(rep)}</code>)</span>' for _, rep in who[:1] if rep)
            for msg, who in examples.items()
        )
        rows.append(
            f'<tr><td class="nw"><code>{_e(short_req(d.get("command") or "") or "any")}</code></td>'
            f'<td class="nw"><code>{_e(d.get("check"))}</code></td>'
            + "".join(f'<td class="num">{_int(counts[c["id"]]) if c["id"] in counts else ""}</td>' for c in cols)
            + f'<td class="small">{ex_html}</td></tr>'
        )
    return (
        '<section id="divergences"><h2>Where implementations differ (the spec leaves it open)</h2>'
        '<p class="legend">Not violations: answers the spec allows either way, counted per column.</p>'
        '<table class="data"><thead><tr><th>command</th><th>what</th>'
        + "".join(f'<th title="{_e(c["label"])}">{_e(c["id"])}</th>' for c in cols)
        + "<th>example</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _differential(doc: dict) -> str:
    if not doc["differential"]:
        return ""
    labels = {c["id"]: c["label"] for c in _cols(doc)}
    out = ['<section id="differential"><h2>Differential runs</h2>']
    for block in doc["differential"]:
        rows = block.get("rows") or []
        names = list(dict.fromkeys(k for row in rows for k in (row.get("answers") or {})))
        out.append(
            f'<h3><span class="cid">{_e(block["column"])}</span> {_e(labels.get(block["column"], ""))}</h3>'
            '<table class="data"><thead><tr><th>command</th>'
            + "".join(f"<th>{_e(n)} answered</th>" for n in names)
            + "<th>verdict</th><th>why</th><th>count</th><th>first case</th></tr></thead><tbody>"
        )
        for row in rows:
            v = "fail" if row.get("verdict") == "violation" else "not-applicable"
            mark = MARK[v] if row.get("verdict") in ("violation", "open") else ""
            answers = row.get("answers") or {}
            out.append(
                f"<tr><td><code>{_e(row.get('command'))}</code></td>"
                + "".join(f"<td><code>{_e(answers.get(n, ''))}</code></td>" for n in names)
                + f'<td class="v-{v}"><span class="sym">{mark}</span>{_e(row.get("verdict"))}</td>'
                f'<td class="small">{_e(row.get("why"))}</td>'
                f'<td class="num">{_int(row.get("count"))}</td>'
                f'<td class="small"><code>{_e(row.get("first_case") or "")}</code></td></tr>'
            )
        out.append("</tbody></table>")
    return "".join(out) + "</section>"


def _exercised(doc: dict) -> str:
    if not doc.get("exercised"):
        return ""
    labels = {c["id"]: c["label"] for c in _cols(doc)}
    out = ['<section id="exercised"><h2>Rule checks a device&#x27;s answers judged</h2>']
    for block in doc["exercised"]:
        out.append(
            f'<h3><span class="cid">{_e(block["column"])}</span> {_e(labels.get(block["column"], ""))}</h3>'
            '<table class="data"><thead><tr><th>family</th><th>checks</th><th>judged</th><th>exchanges</th>'
            "<th>refused at the feature gate</th></tr></thead><tbody>"
        )
        for fam, n in sorted((block.get("families") or {}).items()):
            out.append(
                f'<tr><td>{_e(fam)}</td><td class="num">{_int(n.get("checks"))}</td>'
                f'<td class="num">{_int(n.get("judged"))}</td><td class="num">{_int(n.get("exchanges"))}</td>'
                f'<td class="num">{_int(n.get("gated"))}</td></tr>'
            )
        out.append(
            '</tbody></table><table class="data"><thead><tr><th>command</th><th>check</th><th>held</th>'
            "<th>broken</th><th>open</th></tr></thead><tbody>"
        )
        for row in block.get("checks") or []:
            out.append(
                f"<tr><td><code>{_e(row.get('command'))}</code></td><td><code>{_e(row.get('check'))}</code></td>"
                f'<td class="num">{_int(row.get("held"))}</td><td class="num">{_int(row.get("broken"))}</td>'
                f'<td class="num">{_int(row.get("open"))}</td></tr>'
            )
        out.append("</tbody></table>")
    return "".join(out) + "</section>"


def _totals(doc: dict) -> str:
    cols = _cols(doc)
    rows = []
    for basis, t in doc["totals"]["by_basis"].items():
        cells = []
        for c in cols:
            counts = t.get("columns", {}).get(c["id"])
            cells.append(
                "<td>"
                + (
                    " ".join(_chip(_tok(v), f" {_int(n)}") for v, n in counts.items() if _int(n))
                    if counts
                    else '<span class="muted">—</span>'
                )
                + "</td>"
            )
        rows.append(
            f'<tr><th>{_e(basis)}</th><td class="num">{_int(t.get("requirements"))}</td>'
            f'<td class="num">{_int(t.get("checkable"))}</td>' + "".join(cells) + "</tr>"
        )
    return (
        '<section id="totals"><h2>Totals per basis</h2><table class="data"><thead><tr><th>basis</th>'
        "<th>requirements</th><th>checkable</th>"
        + "".join(f'<th title="{_e(c["label"])}">{_e(c["id"])} {_e(c["label"])}</th>' for c in cols)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
    )
