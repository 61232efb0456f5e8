"""The one self-contained HTML page: inline CSS, plots as data URIs, no script, no network."""
from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from typing import Any

from edgert.report.model import Finding, Loaded, Note, Plot, Section, Table
from edgert.report.provenance import facts

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;
 margin:0 auto;max-width:1180px;padding:20px 24px 60px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 10px;border-bottom:2px solid #ddd;
 padding-bottom:4px}
.sub{color:#555;margin:0 0 18px}
.warnings{border-radius:6px;padding:12px 16px;margin:0 0 20px;border:2px solid #d08a00;
 background:#fff6e0}
.warnings.emulated{border-color:#c62828;background:#fdecea}
.warnings.ok{border-color:#2e7d32;background:#edf7ed}
.warnings h2{margin:0 0 6px;border:0;padding:0;font-size:18px}
.warnings ul{margin:0;padding-left:20px}.warnings li{margin:3px 0}
.warnings li.emulated{color:#b71c1c;font-weight:600}
.src{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;color:#444}
figure{margin:14px 0 22px}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#444;font-size:14px;margin-top:4px}
table{border-collapse:collapse;margin:10px 0 18px;font-size:14px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.prov{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:14px}
.prov table{margin:0;width:100%}.prov th{width:120px;white-space:nowrap}
.prov td{word-break:break-all}.prov caption{text-align:left;font-weight:600;padding:4px 0}
.note{background:#f4f4f4;padding:8px 12px;border-radius:4px}
"""


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{html.escape(str(value) if value is not None else '—')}</td>"
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


def _table(table: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in table.header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in table.rows)
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plot(plot: Plot, href: str) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    alt = html.escape(plot.caption, quote=True)
    return (f'<figure><a href="{html.escape(href, quote=True)}"><img src="data:image/png;base64,'
            f'{data}" alt="{alt}"></a><figcaption>{html.escape(plot.caption)}</figcaption></figure>')


def _section(section: Section, hrefs: dict[str, str]) -> str:
    parts = [f"<section><h2>{html.escape(section.title)}</h2>"]
    for block in section.blocks:
        if isinstance(block, Plot):
            parts.append(_plot(block, hrefs[block.slug]))
        elif isinstance(block, Table):
            parts.append(_table(block))
        elif isinstance(block, Note):
            parts.append(f'<p class="note">{html.escape(block.text)}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _warnings(warnings: list[Finding]) -> str:
    if not warnings:
        return ('<div class="warnings ok" id="warnings"><h2>No warnings</h2>'
                "<p>None of the files reports a reason to distrust its numbers.</p></div>")
    ordered = sorted(warnings, key=lambda w: not w.emulated)  # stable: emulation first
    emulated = any(w.emulated for w in warnings)
    items = "".join(
        f'<li class="{"emulated" if w.emulated else "plain"}"><span class="src">'
        f"{html.escape(w.source)}</span>: {html.escape(w.text)}</li>" for w in ordered)
    title = (f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}"
             + (" — includes EMULATED numbers" if emulated else ""))
    return (f'<div class="warnings{" emulated" if emulated else ""}" id="warnings">'
            f"<h2>{html.escape(title)}</h2><ul>{items}</ul></div>")


def _provenance(items: list[Loaded]) -> str:
    cards = []
    for item in items:
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                       for k, v in facts(item))
        cards.append(f"<table><caption>{html.escape(item.label)}</caption>{rows}</table>")
    return f'<section><h2>Provenance</h2><div class="prov">{"".join(cards)}</div></section>'


def render(items: list[Loaded], sections: list[Section], warnings: list[Finding],
           hrefs: dict[str, str], version: str) -> str:
    """The whole document; ``hrefs`` maps each plot slug to its PNG file, relative to the page."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    files = ", ".join(html.escape(i.label) for i in items)
    body = "\n".join(_section(s, hrefs) for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>edgert report</title><style>{CSS}</style></head>
<body><h1>edgert report</h1>
<p class="sub">{len(items)} result file{'s' if len(items) != 1 else ''}: {files} · generated {now}
 by edgert {html.escape(version)}</p>
{_warnings(warnings)}
{body}
{_provenance(items)}
</body></html>
"""
