"""Assemble the sections into one self-contained HTML page (inline CSS, no script, no URLs).

The page needs no JavaScript: navigation is anchors, long configs wrap. With nothing to run
and nothing to fetch, it opens from disk, offline, without a console error.
"""

from __future__ import annotations

import datetime as dt
from string import Template

from .. import __version__
from ..engine.local import progress_bar
from ..workspace import Workspace
from .data import ReportData
from .html import esc
from .sections import Context, Section, builders, headline
from .thumbnails import Thumbnails

CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --kept:#3b6fb6;
        --drop:#e07b39; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); font:14px/1.45 system-ui,
       -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.wrap { max-width:1200px; margin:0 auto; padding:0 24px; }
header.top { background:var(--ink); color:#fff; padding:18px 0 14px; }
header.top h1 { margin:0; font-size:22px; font-weight:650; letter-spacing:.2px; }
header.top h1 span { color:#9fb3c8; font-weight:400; }
header.top .meta { color:#9fb3c8; font-size:12.5px; margin-top:4px; word-break:break-all; }
nav { position:sticky; top:0; z-index:2; background:#fff; border-bottom:1px solid var(--line); }
nav .wrap { display:flex; flex-wrap:wrap; gap:4px 18px; padding-top:9px; padding-bottom:9px; }
nav a { color:var(--muted); text-decoration:none; font-size:13px; }
nav a:hover { color:var(--kept); }
.kpis { display:grid; grid-template-columns:repeat(auto-fit, minmax(170px, 1fr)); gap:14px;
        margin:22px 0 6px; }
.kpi { background:#fff; border:1px solid var(--line); border-radius:10px; padding:14px 16px; }
.kpi .label { text-transform:uppercase; font-size:11px; letter-spacing:.6px; color:var(--muted); }
.kpi .value { font-size:27px; font-weight:650; margin:2px 0; font-variant-numeric:tabular-nums; }
.kpi .note { color:var(--muted); font-size:12px; }
.kpi.kept .value { color:var(--kept); }
.kpi.dropped .value { color:var(--drop); }
section { background:#fff; border:1px solid var(--line); border-radius:10px; margin:18px 0;
          padding:18px 24px 22px; scroll-margin-top:52px; }
section h2 { margin:0 0 2px; font-size:19px; }
section .lead { margin:0 0 14px; color:var(--muted); max-width:860px; }
h3 { font-size:15px; margin:22px 0 10px; scroll-margin-top:52px; }
h3 .count { color:var(--muted); font-weight:400; font-size:13px; margin-left:6px; }
h4 { font-size:12px; text-transform:uppercase; letter-spacing:.6px; color:var(--muted);
     margin:10px 0 8px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th { text-align:left; font-size:11px; text-transform:uppercase; letter-spacing:.5px;
     color:var(--muted); font-weight:600; padding:6px 10px; border-bottom:2px solid var(--line); }
td { padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
table.matrix th, table.matrix td.num { text-align:center; }
table.funnel td { vertical-align:middle; }
table.funnel td:first-child, th { white-space:nowrap; }
.bar { width:280px; height:12px; background:#edf0f3; border-radius:6px; overflow:hidden; }
.bar span { display:block; height:100%; background:var(--kept); border-radius:6px; }
th.num { text-align:right; }
.nowrap { white-space:nowrap; }
td code { font:11.5px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace;
     color:#3e4c59; word-break:break-all; }
.muted, .note { color:var(--muted); }
.facts { display:flex; flex-wrap:wrap; gap:8px 28px; margin:4px 0 12px; }
.facts .label { display:block; font-size:11px; text-transform:uppercase; letter-spacing:.5px;
                color:var(--muted); }
.facts .value { font-weight:600; font-variant-numeric:tabular-nums; word-break:break-all; }
.plots { display:flex; flex-wrap:wrap; gap:12px; align-items:flex-start; }
img.plot { max-width:100%; height:auto; }
.gallery { display:grid; grid-template-columns:repeat(auto-fill, minmax(172px, 1fr)); gap:12px; }
.card { margin:0; border:1px solid var(--line); border-radius:8px; padding:8px; background:#fff; }
.card.pair { grid-column:span 2; }
.images { display:flex; gap:6px; }
.thumb { position:relative; flex:1; }
.thumb img, .thumb .missing { display:block; width:100%; height:128px; object-fit:contain;
        background:#eef1f4; border-radius:5px; }
.thumb .missing { display:flex; align-items:center; justify-content:center;
                  color:var(--muted); font-size:12px; }
.thumb .tag { position:absolute; left:4px; top:4px; background:rgba(31,41,51,.78); color:#fff;
              font-size:10.5px; padding:1px 6px; border-radius:4px; }
figcaption { margin-top:7px; font-size:12.5px; }
figcaption .caption { margin:0 0 5px; overflow:hidden; display:-webkit-box;
                      -webkit-line-clamp:3; -webkit-box-orient:vertical; }
.evidence { display:flex; flex-wrap:wrap; gap:3px; }
h3 + .evidence { margin:-4px 0 10px; }
.evidence > span { background:var(--bg); border-radius:4px; padding:1px 6px; font-size:11.5px;
                   font-variant-numeric:tabular-nums; overflow-wrap:anywhere; }
.evidence b { font-weight:500; color:var(--muted); }
.gallery.compact { grid-template-columns:repeat(auto-fill, minmax(124px, 1fr)); gap:10px; }
.gallery.compact .thumb img, .gallery.compact .thumb .missing { height:104px; }
figcaption .uid { display:block; margin-top:4px; color:var(--muted); font-size:11px; }
mark { background:#ffe08a; padding:0 1px; border-radius:2px; }
.badge { display:inline-block; font-size:10.5px; font-weight:600; padding:1px 7px;
         border-radius:9px; margin-bottom:4px; }
.badge.keep { background:#e3ecf8; color:var(--kept); }
.badge.drop { background:#fbe9dd; color:#b5541b; }
.verdict { white-space:nowrap; margin-bottom:3px; }
.verdict .badge { margin:0; font-size:10px; padding:1px 5px; }
.verdict .value { font-weight:600; font-size:11px; font-variant-numeric:tabular-nums; }
.border > div { border-left:3px solid var(--line); padding-left:12px; margin-bottom:10px; }
p.note { margin:-4px 0 10px; }
footer { color:var(--muted); font-size:12px; padding:8px 24px 30px; }
"""

PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>pairsift report: $name</title>
<style>$css</style>
</head>
<body>
<header class="top"><div class="wrap"><h1>pairsift <span>curation report</span></h1>
<div class="meta">$root · generated $generated</div></div></header>
<nav><div class="wrap">$nav</div></nav>
<main class="wrap">
<div class="kpis">$kpis</div>
$sections
</main>
<footer class="wrap">pairsift $version · one self-contained file: plots and thumbnails are
embedded, nothing is fetched.</footer>
</body>
</html>
""")


def render_report(ws: Workspace, *, max_thumbnails: int = 12, borderline: int = 8,
                  progress: bool = False) -> str:
    """The report page of ``ws``: every section whose data the workspace holds."""
    data = ReportData(ws)
    todo = builders(data)
    sections: list[Section] = []
    with (Thumbnails(ws.image_columns()) as thumbs,
          progress_bar("report", len(todo), unit="sections", enabled=progress) as advance):
        ctx = Context(data, thumbs, max_thumbnails=max_thumbnails, borderline=borderline)
        for build in todo:
            section = build(ctx)
            if section is not None:
                sections.append(section)
            advance(1)
        kpis = "".join(_kpi(*item) for item in headline(ctx))
    return PAGE.substitute(
        name=esc(ws.root.name), css=CSS, root=esc(ws.root), version=esc(__version__),
        generated=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        nav="".join(f'<a href="#{s.id}">{esc(s.title)}</a>' for s in sections),
        kpis=kpis, sections="\n".join(_section(s) for s in sections))


def _kpi(label: str, value: str, note: str) -> str:
    return (f'<div class="kpi {esc(label)}"><div class="label">{esc(label)}</div>'
            f'<div class="value">{value}</div><div class="note">{esc(note)}</div></div>')


def _section(section: Section) -> str:
    lead = f'<p class="lead">{esc(section.lead)}</p>' if section.lead else ""
    return (f'<section id="{esc(section.id)}"><h2>{esc(section.title)}</h2>{lead}'
            f"{section.body}</section>")
