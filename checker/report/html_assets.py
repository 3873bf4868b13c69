"""The HTML report's stylesheet and script, kept apart from the markup so each stays readable.

Both are constant strings: nothing from a report document is ever formatted into them (the
page's Content-Security-Policy allows exactly this script, by its hash). Colours are fixed
sRGB values, and the summary card and verdict backgrounds are distinct on purpose: the
screenshot test counts their pixels to see that the summary and the matrix were painted.
"""

from __future__ import annotations

# Verdict: (cell background, text colour). The symbol beside each (common.MARK) keeps the
# matrix readable without colour (print, colour blindness).
VERDICT_COLOURS = {
    "pass": ("#d4f0da", "#14532d"),
    "fail": ("#f9c5c0", "#7f1d1d"),
    "inconclusive": ("#fde9a8", "#713f12"),
    "not-applicable": ("#eceef1", "#4b5563"),
    "not-exercised": ("#f7f8fa", "#6b7280"),
}
CARD_BG = "#eef3fb"
# Resource ids get one of these everywhere in a timeline (its lifetime bar and the scanout
# spans that show it), so a reader can follow a buffer from creation to display.
PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#e15759", "#8cd17d")

_VERDICT_CSS = "".join(
    f".v-{v}{{background:{bg};color:{fg}}}.chip.v-{v}{{border-color:{fg}33}}" for v, (bg, fg) in VERDICT_COLOURS.items()
)

CSS = (
    """
:root{--nav-h:40px;--ink:#111827;--muted:#5b6472;--line:#d8dee8;--accent:#1d4ed8;--differs:#c026d3}
*{box-sizing:border-box}
[hidden]{display:none!important}
html{scroll-padding-top:calc(var(--nav-h) + 36px)}
body{margin:0;color:var(--ink);background:#fff;
 font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans","Helvetica Neue",Arial,sans-serif}
code,.mono{font-family:ui-monospace,"SFMono-Regular",Menlo,Consolas,"DejaVu Sans Mono",monospace;font-size:12.5px}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
h2{font-size:19px;margin:28px 0 10px;padding-bottom:4px;border-bottom:2px solid var(--ink)}
h3{font-size:16px;margin:22px 0 8px}
.top{background:#0f172a;color:#f8fafc;padding:14px 24px 12px}
.top h1{margin:0;font-size:22px;letter-spacing:.2px}
.top .meta{margin:4px 0 0;color:#cbd5e1;font-size:13px}
.top .meta b{color:#fff}
.headline{display:flex;gap:10px;flex-wrap:wrap;margin-top:10px}
.headline span{background:#1e293b;border:1px solid #334155;border-radius:4px;padding:2px 9px;font-size:13px}
.headline .bad{background:#7f1d1d;border-color:#b91c1c}
.headline .warn{background:#713f12;border-color:#a16207}
.headline .ok{background:#14532d;border-color:#15803d}
nav.toc{position:sticky;top:0;z-index:5;height:var(--nav-h);display:flex;align-items:center;gap:18px;
 padding:0 24px;background:#f8fafc;border-bottom:1px solid var(--line);white-space:nowrap;overflow-x:auto}
nav.toc a{color:#334155;font-weight:600;font-size:13px}
main{padding:0 24px 40px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(240px,1fr));gap:12px}
.card{border:1px solid #c9d6ea;border-radius:6px;padding:10px 12px}
.card .ch{display:flex;gap:8px;align-items:center;font-size:12px;color:var(--muted)}
.cid{display:inline-block;min-width:26px;text-align:center;background:#0f172a;color:#fff;border-radius:3px;
 padding:0 5px;font-weight:700;font-size:12px}
.kind{text-transform:uppercase;letter-spacing:.5px;font-weight:600}
.card .label{font-weight:700;font-size:15px;margin:4px 0 2px;overflow-wrap:anywhere}
.card .stats{color:#334155;font-size:13px}
.vbar{display:flex;height:10px;border-radius:3px;overflow:hidden;margin:8px 0 6px;border:1px solid #c9d6ea;
 background:#fff}
.vbar span{display:block;height:100%}
.chips{display:flex;flex-wrap:wrap;gap:4px;margin:0;padding:0;list-style:none}
.chip{border:1px solid;border-radius:10px;padding:0 7px;font-size:12px;white-space:nowrap}
.chip.zero{opacity:.45}
.fcounts{margin-top:6px;font-size:13px}
.fcounts b.bad{color:#b91c1c}
.notes{margin:6px 0 0;padding:0;list-style:none;font-size:12.5px}
.notes li{background:#fff7e0;border-left:3px solid #d97706;padding:2px 6px;margin-top:3px;word-break:break-word}
.card details{font-size:12.5px;margin-top:6px;color:var(--muted)}
.card details code{word-break:break-all}
.kv{border-collapse:collapse;font-size:12px}.kv td{padding:0 8px 0 0}
#filters{margin:18px 0 6px;padding:8px 12px;border:1px solid var(--line);border-radius:6px;background:#f8fafc;
 display:flex;flex-wrap:wrap;gap:8px 22px;align-items:center;font-size:13px}
#filters fieldset{border:0;margin:0;padding:0;display:flex;gap:4px;flex-wrap:wrap;align-items:center}
#filters legend{float:left;font-weight:700;margin-right:6px}
#filters label{border:1px solid var(--line);border-radius:4px;padding:1px 7px;background:#fff;cursor:pointer;
 user-select:none}
#filters button{font:inherit;border:1px solid #94a3b8;background:#fff;border-radius:4px;padding:1px 8px;cursor:pointer}
#shown{color:var(--muted);margin-left:auto}
.legend{font-size:12.5px;color:var(--muted);margin:4px 0 8px}
.legend .chip{margin-right:4px}
table.matrix{border-collapse:separate;border-spacing:0;min-width:70%;font-size:12.5px}
table.matrix th,table.matrix td{padding:3px 7px;border-bottom:1px solid #e5e9f0;vertical-align:middle}
table.matrix thead th{position:sticky;top:var(--nav-h);z-index:3;background:#1e293b;color:#f1f5f9;text-align:left;
 font-weight:600;border-bottom:0}
table.matrix thead th.col{min-width:118px;max-width:190px}
table.matrix thead th .sub{display:block;font-weight:400;font-size:11px;color:#cbd5e1;overflow:hidden;
 text-overflow:ellipsis;white-space:nowrap;max-width:180px}
table.matrix tr.sec th{background:#e2e8f0;text-align:left;font-size:12.5px;border-top:1px solid #cbd5e1}
table.matrix tr.sec th a{color:#0f172a}
table.matrix td.rid{min-width:16em;font-family:ui-monospace,Menlo,Consolas,"DejaVu Sans Mono",monospace;
 font-size:12px;word-break:break-word}
table.matrix td.meta{color:var(--muted);white-space:nowrap;font-size:12px;max-width:9em;overflow:hidden;
 text-overflow:ellipsis}
table.matrix td.v{white-space:nowrap;border-left:2px solid #fff}
table.matrix tr:hover td{filter:brightness(.96)}
tr.differs td.rid{box-shadow:inset 4px 0 0 var(--differs);background:#fdf4ff}
.tag{display:inline-block;border-radius:3px;padding:0 5px;font-size:11px;font-weight:700;
 font-family:system-ui,"DejaVu Sans",sans-serif;
 vertical-align:1px;margin-left:4px}
.tag.differs{background:var(--differs);color:#fff}
.tag.implied{background:#e0e7ff;color:#3730a3}
.tag.nc{background:#e5e7eb;color:#374151}
.sym{font-weight:700;display:inline-block;width:1.1em;text-align:center;margin-right:.15em}
.ev{color:inherit;opacity:.75;font-size:11px;margin-left:3px}
.fl{font-size:11px;font-weight:700;margin-left:4px;color:#991b1b}
td.none{background:#fff;color:#b6bcc6}
.off-pass .v-pass,.off-fail .v-fail,.off-inconclusive .v-inconclusive,.off-not-applicable .v-not-applicable,
.off-not-exercised .v-not-exercised{opacity:.3}
figure.tl{margin:10px 0 18px;border:1px solid var(--line);border-radius:6px;padding:8px 10px;background:#fcfdff}
figure.tl figcaption{font-size:13px;margin-bottom:4px}
figure.tl svg{width:100%;height:auto;display:block}
.tl text{font:11px system-ui,"DejaVu Sans",sans-serif;fill:#334155}
.tl .lane-label{fill:#475569;font-weight:600}
.tl .bar-label{font-size:10px;pointer-events:none}
.tl text.muted{fill:#64748b;font-size:10px}
.tl .grid{stroke:#e5e9f0}.tl .axis{stroke:#94a3b8}
.tl .fence{fill:#64748b}.tl .mark-definite{fill:#dc2626}.tl .mark-possible{fill:#d97706}
section.sec{margin-top:8px}
section.sec>h3{background:#f1f5f9;border-left:4px solid #334155;padding:5px 10px}
section.sec>h3 .loc{font-weight:400;font-size:12px;color:var(--muted);margin-left:8px}
article.req{border:1px solid var(--line);border-radius:6px;margin:6px 0;padding:6px 12px}
article.req.differs{border-left:4px solid var(--differs)}
article.req>header{display:flex;flex-wrap:wrap;gap:6px;align-items:baseline}
article.req>header code{font-weight:700;font-size:13px;word-break:break-all}
.lvl{font-weight:700;font-size:11.5px;border:1px solid #334155;border-radius:3px;padding:0 4px}
.basis{font-size:11.5px;border-radius:3px;padding:0 5px;background:#e0f2fe;color:#075985}
.binds{font-size:12px;color:var(--muted)}
article.req .summary{margin:4px 0}
article.req .where{font-size:12.5px;color:var(--muted);margin:2px 0}
blockquote{margin:6px 0;padding:4px 10px;border-left:3px solid #94a3b8;background:#f8fafc;color:#1f2937;
 font-style:italic}
.ncw{font-size:12.5px;background:#f3f4f6;border-radius:4px;padding:3px 8px;margin:4px 0}
table.vt{border-collapse:collapse;font-size:12.5px;margin:6px 0}
table.vt th,table.vt td{padding:2px 8px 2px 0;border-bottom:1px solid #eef1f5;text-align:left;vertical-align:top}
table.vt td.v{white-space:nowrap}
ol.findings{margin:6px 0 0;padding-left:22px}
ol.findings li{margin:6px 0;padding:4px 8px;border-radius:4px;background:#fff5f5;border-left:3px solid #dc2626}
ol.findings li.possible{background:#fffbeb;border-left-color:#d97706}
ol.findings li.divergence{background:#f5f3ff;border-left-color:#7c3aed}
.fh{font-size:12.5px}.fh b{text-transform:uppercase;font-size:11.5px}
.msg{margin:2px 0;word-break:break-word}
.evid{font-size:12px;color:#374151;word-break:break-all}
.why{font-size:12.5px;color:#92400e}
ul.related{margin:2px 0;padding-left:18px;font-size:12px;color:#374151}
table.data{border-collapse:collapse;font-size:12.5px;width:100%}
table.data th,table.data td{border:1px solid #e2e8f0;padding:3px 8px;text-align:left;vertical-align:top}
table.data thead th{background:#f1f5f9}
table.data td.nw{white-space:nowrap}
#not-checkable h3{font-size:14px;margin:12px 0 4px}
table.data td.num{min-width:3em;text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
table.data td.small{font-size:12px;color:#374151;word-break:break-word}
.muted{color:var(--muted)}
ul.nclist{margin:4px 0 10px;padding-left:20px;font-size:12.5px}
footer{margin:30px 24px;color:var(--muted);font-size:12px}
@media print{nav.toc,#filters{display:none!important}table.matrix thead th{position:static}
 .top{background:#fff;color:#000}.top .meta{color:#333}}
"""
    + _VERDICT_CSS
    + f".card{{background:{CARD_BG}}}"
)

# Filters hide whole rows (matrix) and whole requirement blocks (details) by data attributes
# the renderer writes; sections and tables whose rows are all hidden are hidden with them.
# Without JS the filter bar stays hidden and everything is shown.
JS = """
(function () {
  "use strict";
  var bar = document.getElementById("filters");
  document.documentElement.setAttribute("data-js", "on");
  if (!bar) { return; }
  bar.hidden = false;
  function picked(group) {
    var out = {};
    bar.querySelectorAll('input[data-group="' + group + '"]').forEach(function (b) {
      if (b.checked) { out[b.value] = true; }
    });
    return out;
  }
  function apply() {
    var v = picked("verdict"), b = picked("basis"), only = picked("only"), shown = 0, total = 0;
    ["pass", "fail", "inconclusive", "not-applicable", "not-exercised"].forEach(function (k) {
      document.body.classList.toggle("off-" + k, !v[k]);
    });
    document.querySelectorAll("[data-row]").forEach(function (el) {
      var vs = (el.getAttribute("data-v") || "").split(" ").filter(Boolean);
      var ok = (vs.length === 0 || vs.some(function (x) { return v[x]; })) &&
               b[el.getAttribute("data-b")] === true &&
               (!only.differs || el.hasAttribute("data-differs")) &&
               (!only.findings || el.hasAttribute("data-findings"));
      el.hidden = !ok;
      if (el.tagName === "TR") { total += 1; shown += ok ? 1 : 0; }
    });
    document.querySelectorAll("[data-fgroup]").forEach(function (g) {
      g.hidden = g.querySelector("[data-row]:not([hidden])") === null;
    });
    document.getElementById("shown").textContent = "showing " + shown + " of " + total + " rows";
  }
  function preset(p) {
    bar.querySelectorAll('input[data-group="verdict"]').forEach(function (b) {
      b.checked = p === "all" || b.value === "fail" || b.value === "inconclusive";
    });
    bar.querySelectorAll('input[data-group="basis"]').forEach(function (b) { b.checked = true; });
    bar.querySelectorAll('input[data-group="only"]').forEach(function (b) { b.checked = false; });
    apply();
  }
  bar.addEventListener("change", apply);
  bar.querySelectorAll("button[data-preset]").forEach(function (btn) {
    btn.addEventListener("click", function () { preset(btn.getAttribute("data-preset")); });
  });
  // report.html#problems opens filtered to the failing and inconclusive rows (a link worth sharing).
  preset(location.hash === "#problems" ? "problems" : "all");
})();
"""
