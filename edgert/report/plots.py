"""Matplotlib on the Agg canvas without pyplot (no GUI, no figure registry): figures in, PNG out."""
from __future__ import annotations

import io
from typing import Any

from edgert.errors import UsageError

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
P50_COLOR = "#111111"
P99_COLOR = "#d62728"
DPI = 110
_STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
          "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
          "grid.alpha": 0.3}


def figure(width_in: float, height_in: float, rows: int = 1, cols: int = 1, **kwargs: Any):
    """A Figure and its axes grid (always 2-D), styled for the report."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise UsageError("the HTML report needs matplotlib: pip install matplotlib") from exc
    matplotlib.rcParams.update(_STYLE)
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, **kwargs)
    return fig, axes


def to_png(fig: Any) -> bytes:
    """PNG bytes; no creation-time metadata, so the same data gives the same file."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def to_svg(fig: Any) -> bytes:
    """SVG bytes (crisp at any zoom, small for bar charts); no date or random ids, so the same
    data gives the same file."""
    import matplotlib

    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "edgert", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    return buf.getvalue()


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def summary_bars(ax: Any, labels: list[str], summaries: list[dict[str, Any]], unit: str = "ms"
                 ) -> None:
    """Horizontal p50 bars with their 95% CI as error bars and p99 as a red tick."""
    y = list(range(len(labels)))
    p50 = [s["p50"] for s in summaries]
    lo = [s["p50"] - s["ci95"][0] if s.get("ci95") else 0.0 for s in summaries]
    hi = [s["ci95"][1] - s["p50"] if s.get("ci95") else 0.0 for s in summaries]
    ax.barh(y, p50, color=[color(i) for i in y], alpha=0.8, xerr=[lo, hi], capsize=4,
            error_kw={"elinewidth": 1.2, "ecolor": P50_COLOR})
    ax.scatter([s["p99"] for s in summaries], y, marker="|", s=300, color=P99_COLOR,
               linewidths=2, zorder=3)
    ends = [max(s["p99"], s["ci95"][1] if s.get("ci95") else 0.0) for s in summaries]
    for yi, summary, end in zip(y, summaries, ends):
        ax.annotate(f"p50 {summary['p50']:.3g} · p99 {summary['p99']:.3g} {unit}", (end, yi),
                    xytext=(8, 0), textcoords="offset points", va="center", fontsize=9)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel(f"latency ({unit})")
    ax.set_xlim(0, max(ends) * 1.3)
    ax.grid(axis="y", visible=False)  # no legend: every caption says what the bar and tick are
