"""The one self-contained HTML page: inline CSS, plots as data URIs (no files beside it), no
script, no network. Order: the ranked summary, warnings grouped and collapsed, details, provenance."""
from __future__ import annotations

import base64
import html
from datetime import datetime, timezone
from typing import Any

from edgert.report import summary, triage
from edgert.report.model import Finding, Loaded, Note, Plot, Section, Table
from edgert.report.provenance import KIND_NAMES, facts
from edgert.units import duration_ms

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1b1b1b;
 margin:0 auto;max-width:1180px;padding:20px 24px 60px;background:#fff}
h1{font-size:26px;margin:0 0 4px}h2{font-size:20px;margin:36px 0 10px;border-bottom:2px solid #ddd;
 padding-bottom:4px}
.sub{color:#555;margin:0 0 18px}
h3{font-size:18px;margin:22px 0 4px}h3 .count{font-size:13px;color:#666;font-weight:400}
.answer{margin:4px 0 8px;font-size:15px}
.pair{display:grid;grid-template-columns:minmax(0,1fr);gap:4px}
table.ranked{margin:4px 0}table.ranked td:nth-child(n+3):not(:last-child){white-space:nowrap}table.ranked tr.best td{background:#e8f5e9;font-weight:600}
table.ranked tr.emulated td{background:#fdecea}
.warnings{border-radius:6px;padding:10px 16px;margin:26px 0 20px;border:1px solid #e0c070;background:#fffaf0}
.warnings.ok{border-color:#2e7d32;background:#edf7ed}
.warnings h2{margin:0 0 6px;border:0;padding:0;font-size:18px}
.warnings .serious{color:#b71c1c;font-weight:600;margin:4px 0}
details{margin:4px 0}details summary{cursor:pointer;padding:2px 0}
details ul{margin:4px 0 8px;padding-left:22px;font-size:14px}details li{margin:2px 0}
.sev{display:inline-block;min-width:170px;font-size:12px;font-weight:600;text-transform:uppercase;
 letter-spacing:.03em}
.sev0 .sev{color:#b71c1c}.sev1 .sev{color:#c25e00}.sev2 .sev{color:#6d5d00}.sev3 .sev{color:#555}
.count{color:#666}
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


def _plot(plot: Plot) -> str:
    data = base64.b64encode(plot.image).decode("ascii")
    alt = html.escape(plot.caption, quote=True)
    return (f'<figure><img src="data:{plot.mime};base64,{data}" alt="{alt}">'
            f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>")


def _section(section: Section) -> str:
    parts = [f"<section><h2>{html.escape(section.title)}</h2>"]
    for block in section.blocks:
        if isinstance(block, Plot):
            parts.append(_plot(block))
        elif isinstance(block, Table):
            parts.append(_table(block))
        elif isinstance(block, Note):
            parts.append(f'<p class="note">{html.escape(block.text)}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _answer(model: str, ranked: summary.Ranked) -> str:
    """One sentence a person can act on: the fastest, by how much, and the most efficient."""
    best, base = ranked.configs[0], ranked.base
    text = f"<b>Fastest: {html.escape(best.name)}</b>, p50 {html.escape(duration_ms(best.p50_ms))}"
    if best is not base:
        text += f", {base.p50_ms / best.p50_ms:.2f}× faster than the baseline {html.escape(base.name)}"
    if len(ranked.configs) > 1:
        second = ranked.configs[1]
        text += f"; the next, {html.escape(second.name)}, is {second.p50_ms / best.p50_ms:.2f}× slower"
    text += "."
    if ranked.least_energy is not None:
        e = ranked.least_energy
        text += f" <b>Least energy: {html.escape(e.name)}</b>, {e.energy_mj:.4g} mJ per inference."
    elif any(c.energy_note and c.energy_note != "no power source" for c in ranked.configs):
        text += " Energy: not measured (no real power reading in these files)."
    return f'<p class="answer">{text}</p>'


def _summary(models: dict[str, list[summary.Config]]) -> str:
    parts = ['<section id="summary"><h2>Summary: which configuration is best</h2>'
             '<p class="sub">Per model, every measured configuration ranked by median latency. '
             "× baseline is against the first ONNX Runtime bench of that model. Energy is shown only "
             "where power was really measured.</p>"]
    for idx, (model, configs) in enumerate(models.items()):
        ranked = summary.rank(configs)
        header, rows, classes = summary.cells(ranked)
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join(f'<tr class="{cls}">' + "".join(_cell(v) for v in row) + "</tr>"
                       for row, cls in zip(rows, classes))
        parts.append(f'<div class="model"><h3>{html.escape(model)} <span class="count">'
                     f"{len(configs)} configuration{'s' if len(configs) != 1 else ''}</span></h3>"
                     f"{_answer(model, ranked)}"
                     f'<div class="pair"><table class="ranked"><thead><tr>{head}</tr></thead>'
                     f"<tbody>{body}</tbody></table>{_plot(summary.plot(model, ranked, idx))}</div></div>")
    parts.append("</section>")
    return "".join(parts)


def _warnings(warnings: list[Finding]) -> str:
    if not warnings:
        return ('<section class="warnings ok" id="warnings"><h2>No warnings</h2>'
                "<p>None of the files reports a reason to distrust its numbers.</p></section>")
    groups = triage.group(warnings)
    blocks = []
    for g in groups:
        items = "".join(f'<li><span class="src">{html.escape(w.source)}</span>: {html.escape(w.text)}</li>'
                        for w in g.findings)
        blocks.append(f'<details class="sev{g.severity}"><summary><span class="sev">{html.escape(g.severity_name)}'
                      f"</span> {html.escape(g.kind)} <span class=\"count\">({len(g.findings)})</span>"
                      f"</summary><ul>{items}</ul></details>")
    title = (f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''} in {len(groups)} "
             f"group{'s' if len(groups) != 1 else ''}")
    serious = sum(len(g.findings) for g in groups if g.severity == 0)
    lead = (f'<p class="serious">{serious} say some numbers were not measured (emulated, or power from '
            "a fixture or a static reading): those rows are marked in the summary.</p>") if serious else ""
    return (f'<section class="warnings" id="warnings"><h2>{html.escape(title)}</h2>{lead}'
            f'<p class="sub">Click a group to open it.</p>{"".join(blocks)}</section>')


def _provenance(items: list[Loaded]) -> str:
    cards = []
    for item in items:
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
                       for k, v in [("file", item.path.name), *facts(item)])
        cards.append(f"<table><caption>{html.escape(item.label)}</caption>{rows}</table>")
    return f'<section><h2>Provenance</h2><div class="prov">{"".join(cards)}</div></section>'


def render(items: list[Loaded], models: dict[str, list[summary.Config]], sections: list[Section],
           warnings: list[Finding], version: str) -> str:
    """The whole document: summary, grouped warnings, the detail sections, provenance."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "\n".join(_section(s) for s in sections)
    kinds = ", ".join(f"{n} {k}" for k, n in _kinds(items).items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>edgert report</title><style>{CSS}</style></head>
<body><h1>edgert report</h1>
<p class="sub">{len(items)} result file{'s' if len(items) != 1 else ''} ({html.escape(kinds)}) · generated {now}
 by edgert {html.escape(version)}</p>
{_summary(models)}
{_warnings(warnings)}
{body}
{_provenance(items)}
</body></html>
"""


def _kinds(items: list[Loaded]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        kind = KIND_NAMES.get(str(item.data.get("schema")), "other")
        out[kind] = out.get(kind, 0) + 1
    return out
