"""The HTML report: one self-contained page built from real results, inert whatever the results
hold, and, rendered by headless Chromium, showing its summary and matrix to a user."""

from __future__ import annotations

import collections
import html
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from virtgpu_conform.checker.cli.main import main
from virtgpu_conform.checker.report.html import render
from virtgpu_conform.checker.report.html_assets import CARD_BG, CSS, JS, VERDICT_COLOURS

REPO = Path(__file__).resolve().parents[2]
TRACE = REPO / "traces" / "qemu-7.2" / "fbdev-modetest"
SPEC_URL = re.compile(r"https://github\.com/oasis-tcs/virtio-spec/blob/[\w.-]+/[\w./-]+(#L\d+(-L\d+)?)?")
# Every way a string has been seen to break out of HTML text, an attribute, a script or a URL.
EVIL = (
    "<script>alert(1)</script>\"><img src=x onerror=alert(1)>'></script><script>alert(2)</script>"
    "<svg onload=alert(3)></style><style>*{background:url(http://evil.example/x)}</style>"
)
EVIL_URL = "javascript:alert(1)"


def _cli(*args: str) -> None:
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code in (0, 1), (args, r.output, r.exception)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> tuple[Path, Path]:
    """A real check of the committed QEMU 7.2 trace and a real fuzz campaign on the reference device."""
    d = tmp_path_factory.mktemp("results")
    _cli("check", str(TRACE), "--json", str(d / "check.json"))
    _cli("fuzz", "--target", "reference", "--examples", "20", "--seed", "1", "--out", str(d / "fuzz"))
    return d / "check.json", d / "fuzz"


@pytest.fixture(scope="module")
def page(results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    _cli("report", str(results[0]), str(results[1]), "--format", "html", "-o", str(out))
    return out


class Page(HTMLParser):
    """What a browser would build: elements with their attributes, scripts and styles, text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.raw: dict[str, list[str]] = collections.defaultdict(list)  # script/style bodies
        self.text: list[str] = []
        self._in: str = ""
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._in = tag
            self.raw[tag].append("")

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = ""

    def handle_data(self, data):
        if self._in:
            self.raw[self._in][-1] += data
        else:
            self.text.append(data)

    def named(self, tag: str) -> list[dict]:
        return [a for t, a in self.tags if t == tag]


def _assert_inert(text: str) -> Page:
    """One document, loading nothing, running only its own script, linking only to the spec."""
    p = Page(text)
    assert text.startswith("<!DOCTYPE html>") and text.count("<!DOCTYPE") == 1
    assert [t for t, _ in p.tags].count("html") == 1 and len(p.named("body")) == 1 and len(p.named("head")) == 1
    assert text.rstrip().endswith("</html>")
    assert len(p.named("script")) == 1 and p.raw["script"] == [JS] and p.named("script")[0] == {}
    assert len(p.named("style")) == 1 and p.raw["style"] == [CSS]
    assert not re.search(r"@import|url\(", CSS, re.I)
    for bad in ("link", "img", "iframe", "object", "embed", "base", "frame", "audio", "video", "source", "image"):
        assert not p.named(bad), bad
    ids = {a["id"] for _, a in p.tags if "id" in a}
    for tag, attrs in p.tags:
        assert not [k for k in attrs if k.lower().startswith("on")], (tag, attrs)
        assert "src" not in attrs and "srcdoc" not in attrs and "xlink:href" not in attrs, (tag, attrs)
        assert "style" not in attrs or not re.search(r"url\(|expression|@import", attrs["style"], re.I), attrs
        if "href" in attrs:
            href = attrs["href"]
            assert tag == "a", (tag, attrs)
            if href.startswith("#"):
                assert href[1:] in ids, f"in-page link to a missing id: {href}"
            else:
                assert SPEC_URL.fullmatch(href), href  # the only outside links: the spec, built by us
                assert attrs.get("rel") == "noopener noreferrer"
    # Without JS only the filter bar (which needs it) is hidden: everything else is there to read.
    assert [a.get("id") for _, a in p.tags if "hidden" in a] == ["filters"]
    metas = p.named("meta")
    csp = [m["content"] for m in metas if m.get("http-equiv", "").lower() == "content-security-policy"]
    assert len(csp) == 1 and "default-src 'none'" in csp[0] and "script-src 'sha256-" in csp[0]
    assert not [m for m in metas if m.get("http-equiv", "").lower() == "refresh"]
    return p


def test_html_report_from_real_results_is_one_self_contained_page(page, results):
    text = page.read_text(encoding="utf-8")
    p = _assert_inert(text)
    check = json.loads(results[0].read_text())
    fuzz = json.loads((results[1] / "fuzz-result.json").read_text())
    body = " ".join(p.text)
    assert check["sessions"][0]["target"] in body and "fuzz: reference" in body
    for rid in (*check["sessions"][0]["requirements"], *fuzz["requirements"]):
        assert rid in text  # every requirement is in the page (its detail block at least)
    # A summary card per column, a matrix row per requirement, a timeline for the trace.
    assert len([a for t, a in p.tags if t == "div" and a.get("class") == "card"]) == 2
    rows = [a for t, a in p.tags if t == "tr" and "data-row" in a]
    assert len(rows) >= len(check["sessions"][0]["requirements"])
    assert {a.get("id") for _, a in p.tags} >= {"summary", "matrix", "timelines", "details", "totals", "tl-c1"}
    assert "314 exchanges" in body  # the trace's size, on its card and its timeline
    # No URL anywhere in the page but the spec's (and the SVG namespace, which is a name, not a load).
    urls = set(re.findall(r"(?:https?|ftp|file|data|javascript):[^\s\"'<>)]*", text, re.I))
    assert all(SPEC_URL.match(u) or u == "http://www.w3.org/2000/svg" for u in urls), urls


def _evil_results(results, d: Path) -> list[Path]:
    """The real results with every string a report shows replaced by markup that must stay text."""
    check = json.loads(results[0].read_text())
    s = check["sessions"][0]
    rid = next(iter(s["requirements"]))
    s["target"] = EVIL + "\x1b[2J\x1b]0;pwned\x07\x00\r\x9b31m"  # a terminal `cat`ing the page must not obey it
    s["skipped_files"] = [EVIL]
    s["interrupted"] = EVIL
    s["uncertain"] = [EVIL]
    s["sources"] = [{"file": EVIL, "format": "qemu"}]
    s["commands"] = {EVIL: 3}
    s["requirements"][rid]["reason"] = EVIL
    s["requirements"][rid]["verdict"] = EVIL
    finding = {
        "definite": False,
        "side": EVIL,
        "command": EVIL,
        "check": EVIL,
        "basis": EVIL,
        "file": EVIL,
        "line": 7,
        "event": 12,
        "message": EVIL,
        "reason": EVIL,
        "related": [{"at": EVIL, "what": EVIL}],
        "spec": [],
    }
    s["findings"] = [{**finding, "requirements": [rid]}, {**finding, "requirements": []}]
    s["divergences"] = [{"command": EVIL, "check": EVIL, "count": 2, "example": EVIL}]
    s["timeline"]["resources"].append({"resource": EVIL, "what": EVIL, "from": 1, "to": None})
    s["timeline"]["scanouts"].append({"scanout": EVIL, "resource": EVIL, "from": 2, "to": 9})
    (d / "check.json").write_text(json.dumps(check))

    fuzz = json.loads((results[1] / "fuzz-result.json").read_text())
    fuzz.update(target=EVIL, device=EVIL, stopped=EVIL, seed=EVIL, seconds=EVIL)
    fuzz["requirements"][next(iter(fuzz["requirements"]))]["reason"] = EVIL
    f = {
        "kind": "violation",
        "command": EVIL,
        "check": EVIL,
        "basis": EVIL,
        "requirements": [rid],
        "message": EVIL,
        "reproducer": EVIL,
        "reproducer_line": 3,
        "hits": 2,
        "shrunk": True,
        "reproduced": True,
    }
    fuzz["findings"] = [f, {**f, "kind": "divergence", "requirements": []}, {**f, "kind": EVIL, "requirements": []}]
    fuzz["differential"] = [
        {
            "command": EVIL,
            "answers": {EVIL: EVIL, "reference": EVIL},
            "verdict": EVIL,
            "why": EVIL,
            "requirements": [],
            "basis": EVIL,
            "count": 1,
            "first_case": EVIL,
        }
    ]
    (d / "fuzz").mkdir()
    (d / "fuzz" / "fuzz-result.json").write_text(json.dumps(fuzz))
    return [d / "check.json", d / "fuzz"]


def test_html_report_keeps_hostile_strings_as_text(results, tmp_path):
    out = tmp_path / "evil.html"
    _cli("report", *map(str, _evil_results(results, tmp_path)), "--format", "html", "-o", str(out))
    text = out.read_text(encoding="utf-8")
    p = _assert_inert(text)
    for raw in ("<script>alert", "<img", "<svg onload", "</script><script>", "</style><style>"):
        assert raw not in text, raw
    # No tag gets an on* attribute: walk each tag's attributes (all quoted), not just its text.
    assert not re.search(r'<[a-z]+(\s+[a-z:-]+(="[^"]*")?)*\s+on[a-z]+\s*=', text, re.I)
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", text) and "\\x1b[2J\\x1b]0;pwned\\x07\\x00" in text
    # The strings are there, as text a reader sees: escaped once, not dropped, not double-escaped.
    body = "".join(p.text)
    assert body.count(EVIL) >= 15, body.count(EVIL)
    assert html.escape(html.escape(EVIL)) not in text
    titles = [a["title"] for _, a in p.tags if "title" in a]
    assert any(EVIL in t for t in titles)  # attributes hold it too, still as a value


def test_html_report_links_only_http_urls(results, tmp_path):
    out = tmp_path / "doc.json"
    _cli("report", str(results[0]), str(results[1]), "--format", "json", "-o", str(out))
    doc = json.loads(out.read_text())
    urls = [
        EVIL_URL,
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "data:text/html,<b>x</b>",
        "//evil.example/",
        "http:evil",
        'https://x" onmouseover="alert(1)',
        "vbscript:msgbox(1)",
        "file:///etc/passwd",
    ]
    n = 0
    for sec in doc["sections"]:
        sec["url"] = urls[n % len(urls)]
        n += 1
        for r in sec["requirements"]:
            r["url"] = urls[n % len(urls)]
            n += 1
    text = render(doc)
    p = _assert_inert(text)
    assert not [a for t, a in p.tags if t == "a" and not a["href"].startswith("#")]  # none is linked
    assert not re.search(r'href="\s*(javascript|data|vbscript|file|//)', text, re.I)
    body = "".join(p.text)
    assert all(" / ".join(sec["path"]) in body for sec in doc["sections"])  # the titles stay, as text


# --- in a browser ---------------------------------------------------------------------------------


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        msg = "chromium is not installed, so the HTML report cannot be looked at: apt-get install chromium"
        if os.environ.get("CI"):
            pytest.fail(msg)  # .ci/run installs it: its absence is a broken setup
        pytest.skip(msg)
    return exe


def _run_chromium(exe: str, tmp: Path, *args: str) -> str:
    """Headless Chromium in its own session with a throwaway profile; killed as a group if it hangs."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        "--disable-dev-shm-usage",
        "--force-color-profile=srgb",
        f"--user-data-dir={tmp / 'profile'}",
        *args,
    ]
    p = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "HOME": str(home)},
    )
    try:
        out, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        pytest.fail(f"chromium did not finish within 60 s: {' '.join(cmd)}")
    assert p.returncode == 0, err[-2000:]
    return out


def _pixels(png: bytes) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB bytes) of an 8-bit RGB(A) PNG, with the stdlib only."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, []
    while pos < len(png):
        n, kind = struct.unpack(">I4s", png[pos : pos + 8])
        chunk = png[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat.append(chunk)
    assert depth == 8 and colour in (2, 6) and interlace == 0, (depth, colour, interlace)
    bpp = 4 if colour == 6 else 3
    raw, stride = zlib.decompress(b"".join(idat)), w * bpp
    prev, rows = bytearray(stride), []
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        if f == 2:
            line = bytearray((a + b) & 255 for a, b in zip(line, prev))
        elif f:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                if f == 1:
                    line[i] = (line[i] + a) & 255
                elif f == 3:
                    line[i] = (line[i] + (a + b) // 2) & 255
                else:
                    pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                    line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(b for i, b in enumerate(line) if i % bpp < 3) if bpp == 4 else bytes(line))
        prev = line
    return w, h, rows


def _count(rows: list[bytes], hex_colour: str) -> int:
    want = bytes.fromhex(hex_colour.lstrip("#"))
    return sum(sum(1 for i in range(0, len(r), 3) if r[i : i + 3] == want) for r in rows)


@pytest.mark.integration
def test_html_report_shows_summary_and_matrix_in_chromium(page, results, tmp_path):
    exe = _chromium()
    shot = tmp_path / "report.png"
    _run_chromium(exe, tmp_path, f"--screenshot={shot}", "--window-size=1400,2000", page.as_uri())
    w, h, rows = _pixels(shot.read_bytes())
    assert (w, h) == (1400, 2000)
    # The summary cards and the matrix's verdict cells are painted in their own exact colours.
    cards = _count(rows, CARD_BG)
    passes = _count(rows, VERDICT_COLOURS["pass"][0])
    not_applicable = _count(rows, VERDICT_COLOURS["not-applicable"][0])
    assert cards > 40_000, f"summary cards: {cards} pixels of {CARD_BG}"
    assert passes > 2_000, f"pass cells: {passes} pixels"
    assert not_applicable > 5_000, f"n/a cells: {not_applicable} pixels"
    assert _count(rows[:400], CARD_BG) > 10_000  # the summary is at the top, where a reader starts
    assert _count(rows[:400], VERDICT_COLOURS["pass"][0]) < passes  # the matrix comes after it

    # The DOM once the script ran: the filters are live, and the rows and ids are the real ones.
    dom = _run_chromium(exe, tmp_path, "--dump-dom", page.as_uri())
    assert re.search(r'<html[^>]*data-js="on"', dom), "the page's script did not run (CSP hash?)"
    assert '<form id="filters">' in dom and '<section id="summary">' in dom and 'class="matrix"' in dom
    check = json.loads(results[0].read_text())
    passed = [rid for rid, v in check["sessions"][0]["requirements"].items() if v["verdict"] == "pass"]
    assert passed and all(f'title="{html.escape(rid)}' in dom for rid in passed)
    total = dom.count("<tr data-row")
    assert f"showing {total} of {total} rows" in dom
    # report.html#problems opens filtered: only rows with a failing or inconclusive verdict stay.
    dom = _run_chromium(exe, tmp_path, "--dump-dom", page.as_uri() + "#problems")
    shown = int(re.search(r"showing (\d+) of (\d+) rows", dom).group(1))
    hidden = len(re.findall(r'<tr data-row[^>]*\shidden=""', dom))
    assert shown + hidden == total and hidden > 0

    # Scrolled down the matrix (by a page that frames the report), its header row stays on screen.
    frame = tmp_path / "scrolled.html"
    target = re.findall(r'id="(m-sec-[^"]+)"', page.read_text())[-1]
    frame.write_text(
        '<!DOCTYPE html><html><body style="margin:0"><iframe id="f" src="' + page.as_uri() + '" '
        'style="border:0;width:1400px;height:700px"></iframe><script>document.getElementById("f").onload = '
        'function () { var w = this.contentWindow; w.scrollTo(0, w.document.getElementById("' + target + '")'
        ".getBoundingClientRect().top - 150); };</script></body></html>"
    )
    shot2 = tmp_path / "scrolled.png"
    _run_chromium(
        exe,
        tmp_path,
        "--allow-file-access-from-files",
        "--virtual-time-budget=3000",
        f"--screenshot={shot2}",
        "--window-size=1400,700",
        frame.as_uri(),
    )
    _, _, rows2 = _pixels(shot2.read_bytes())
    assert _count(rows2[:30], CARD_BG) == 0, "not scrolled: the summary is still on screen"
    assert _count(rows2[40:80], "#1e293b") > 20_000, "the matrix header did not stick below the navigation"
