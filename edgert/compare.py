"""Is B faster than A? Compare bench result files on their raw samples (two, or N against the first).

The medians alone cannot say whether a difference is real: the test runs on ``samples_ms``
(two-sided Mann-Whitney U, no normality assumed), the effect size is the ratio of medians with a
seeded bootstrap CI, and a difference below a practical threshold is called not meaningful even
when it is significant (with thousands of runs, 0.2% differences are "significant"). The p99
gets its own verdict from a bootstrap CI of its ratio, so a tail that moves the other way is
said. With N files each is compared with the first and the geometric mean of the ratios
summarises them (pyperf's ``compare_to``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgert.errors import UsageError
from edgert.result import is_emulated

SCHEMA = "edgert.compare/1"
MANY_SCHEMA = "edgert.compare-many/1"
PRACTICAL_FRACTION = 0.01  # differences under 1% of A's median do not matter in practice
BOOTSTRAP_RESAMPLES = 2000
_DEVICE_KEYS = ("hostname", "arch", "cpu_model", "cores", "kernel", "transport")


def _side(result: dict[str, Any], name: str) -> tuple[dict[str, Any], np.ndarray]:
    """Validate one result file and extract what the comparison shows about it."""
    if not str(result.get("schema", "")).startswith("edgert.result/"):
        raise UsageError(f"{name} is not a bench result (schema {result.get('schema')!r}); "
                         "compare takes two files written by `edgert bench --json`", side=name)
    samples = np.asarray(result.get("samples_ms") or [], dtype=np.float64)
    model = result.get("model") or {}
    if samples.size < 2:
        raise UsageError(f"{name} has {samples.size} raw samples; comparing needs at least 2 "
                         "(re-run `edgert bench` with more runs)", side=name)
    backend = result.get("backend") or {}
    summary = {
        "model": (result.get("model") or {}).get("path"),
        "sha256": model.get("sha256"),
        "source_sha256": model.get("source_sha256"),  # a bundle: the ONNX file it was compiled from
        "backend": f"{backend.get('name', '?')} {backend.get('version', '')}".strip(),
        "hostname": (result.get("device") or {}).get("hostname"),
        "n": int(samples.size),
        "p50": float(np.percentile(samples, 50)),
        "p99": float(np.percentile(samples, 99)),
        "emulated": is_emulated(result),
        "warnings": list(result.get("warnings") or []),
    }
    return summary, samples


def bootstrap_ratio_ci95(a: Sequence[float], b: Sequence[float], seed: int = 0,
                         resamples: int = BOOTSTRAP_RESAMPLES, q: float = 50.0) -> tuple[float, float]:
    """Percentile-bootstrap 95% CI of percentile_q(b) / percentile_q(a) (the median by
    default), resampling each side on its own."""
    rng = np.random.default_rng(seed)
    stats = []
    for x in (np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)):
        out = np.empty(resamples)
        chunk = max(1, 2_000_000 // x.size)  # bound memory: ~2M resampled values at a time
        for start in range(0, resamples, chunk):
            stop = min(start + chunk, resamples)
            out[start:stop] = np.percentile(x[rng.integers(0, x.size, (stop - start, x.size))], q, axis=1)
        stats.append(out)
    low, high = np.percentile(stats[1] / stats[0], [2.5, 97.5])
    return float(low), float(high)


def same_model(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same file, or a bundle and the ONNX model it was compiled from (its manifest's
    ``source.sha256``, recorded in the result), or two bundles of one source."""
    ids_a = {a["sha256"], a.get("source_sha256")} - {None}
    ids_b = {b["sha256"], b.get("source_sha256")} - {None}
    return bool(ids_a & ids_b)


def _p99_verdict(ratio: float, ci: tuple[float, float], practical_fraction: float) -> str:
    change = abs(ratio - 1.0) * 100
    if ci[0] <= 1.0 <= ci[1] or abs(ratio - 1.0) < practical_fraction:
        return "p99: no clear change"
    return f"p99 is {fixed(change, 0)}% {'lower (better)' if ratio < 1 else 'higher (worse)'} (95% CI of the ratio " \
           f"{fixed(ci[0], 2)}..{fixed(ci[1], 2)})"


def fixed(value: float, decimals: int, sign: str = "") -> str:
    """``value`` with ``decimals`` decimals, or in 4 significant digits past 10^6: a hand-edited
    1e300 ms sample gave ratios printed with 300 digits."""
    return f"{value:{sign}.{decimals}f}" if abs(value) < 1e6 else f"{value:{sign}.4g}"


def format_p(p: float) -> str:
    """``p<0.001`` below that, else two significant digits (``p=0.003``, ``p=0.41``)."""
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def _verdict(ratio: float, p: float, alpha: float, significant: bool, meaningful: bool,
             practical_fraction: float) -> str:
    change = abs(ratio - 1.0) * 100
    word = "faster" if ratio < 1 else "slower"
    if not significant:
        return f"no significant difference ({format_p(p)})"
    if not meaningful:
        return (f"no meaningful difference: B is {change:.1f}% {word} than A ({format_p(p)}), "
                f"below the {100 * practical_fraction:g}% practical threshold")
    factor = max(ratio, 1 / ratio) if ratio > 0 else math.inf
    if factor >= 2:  # a 32x speed-up read as "97% faster", its reverse as "3085% slower"
        return f"B is {factor:.3g}x {word} than A ({format_p(p)})"
    shown = fixed(change, 0) if change >= 10 else f"{change:.1f}"
    return f"B is {shown}% {word} than A ({format_p(p)})"


def _warnings(a: dict[str, Any], b: dict[str, Any], ra: dict[str, Any], rb: dict[str, Any]
              ) -> list[str]:
    warnings = [f"{name} was measured on an emulated device: its timings say nothing about real hardware"
                for name, side in (("A", a), ("B", b)) if side["emulated"]]  # first: it changes every number
    da, db = ra.get("device") or {}, rb.get("device") or {}
    differing = [k for k in _DEVICE_KEYS if da.get(k) != db.get(k)]
    if differing:
        warnings.append("the devices differ (" + ", ".join(
            f"{k}: {da.get(k)!r} vs {db.get(k)!r}" for k in differing) + "): the difference may "
            "come from the machines, not the configuration")
    for name, side in (("A", a), ("B", b)):
        if side["warnings"]:
            warnings.append(f"{name} carries {len(side['warnings'])} stability warning(s): "
                            + "; ".join(side["warnings"]))
    return warnings


def compare(a: dict[str, Any], b: dict[str, Any], alpha: float = 0.01, *,
            allow_different_models: bool = False,
            practical_fraction: float = PRACTICAL_FRACTION, seed: int = 0) -> dict[str, Any]:
    """Compare result B against baseline A; the returned report's ``verdict`` is for people.

    Raises UsageError when the two files measured different models (by SHA-256) unless
    ``allow_different_models``; device differences and emulation only produce warnings.
    """
    from scipy.stats import mannwhitneyu

    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be between 0 and 1, not {alpha}", alpha=alpha)
    if practical_fraction < 0:
        raise UsageError("the practical threshold must be >= 0",
                         practical_fraction=practical_fraction)
    side_a, xa = _side(a, "A")
    side_b, xb = _side(b, "B")
    if not same_model(side_a, side_b) and not allow_different_models:
        raise UsageError(
            f"A and B measured different models ({side_a['model']} sha256 "
            f"{str(side_a['sha256'])[:12]}..., {side_b['model']} sha256 "
            f"{str(side_b['sha256'])[:12]}...); add --allow-different-models to compare anyway",
            a_sha256=side_a["sha256"], b_sha256=side_b["sha256"])
    p = float(mannwhitneyu(xa, xb, alternative="two-sided").pvalue)
    if math.isnan(p):  # every sample identical on both sides
        p = 1.0
    for name, side in (("A", side_a), ("B", side_b)):  # a hand-edited file: no run takes 0 ms
        if side["p50"] <= 0 or side["p99"] <= 0:  # B's 0 read as "100% faster"
            raise UsageError(f"{name}'s median or p99 latency is 0 ms: not a measurement, no ratio to or "
                             "from it", side=name)
    ratio = side_b["p50"] / side_a["p50"]
    significant = p < alpha
    meaningful = significant and abs(ratio - 1.0) >= practical_fraction
    p99_ratio = side_b["p99"] / side_a["p99"]
    p99_ci = bootstrap_ratio_ci95(xa, xb, seed=seed, q=99.0)
    p99_verdict = _p99_verdict(p99_ratio, p99_ci, practical_fraction)
    verdict = _verdict(ratio, p, alpha, significant, meaningful, practical_fraction)
    if meaningful and not p99_verdict.endswith("no clear change") and (ratio < 1) != (p99_ratio < 1):
        verdict += f", but its {p99_verdict}"
    return {
        "schema": SCHEMA,
        "a": side_a, "b": side_b,
        "p50_change": ratio - 1.0,
        "p99_change": side_b["p99"] / side_a["p99"] - 1.0,
        "median_ratio": ratio,
        "median_ratio_ci95": list(bootstrap_ratio_ci95(xa, xb, seed=seed)),
        "p99_ratio": p99_ratio,
        "p99_ratio_ci95": list(p99_ci),
        "p99_verdict": p99_verdict,
        "test": {"name": "mann-whitney-u", "alternative": "two-sided", "p_value": p,
                 "alpha": alpha},
        "practical_fraction": practical_fraction,
        "significant": significant,
        "meaningful": meaningful,
        "faster": meaningful and ratio < 1,
        "slower": meaningful and ratio > 1,
        "verdict": verdict,
        "warnings": _warnings(side_a, side_b, a, b),
    }


def compare_many(results: Sequence[dict[str, Any]], alpha: float = 0.01, *,
                 allow_different_models: bool = False,
                 practical_fraction: float = PRACTICAL_FRACTION, seed: int = 0) -> dict[str, Any]:
    """Every result against the first (the same test for each pair), plus the geometric mean of
    the p50 and p99 ratios over the others."""
    if len(results) < 2:
        raise UsageError("compare needs at least two result files")
    pairs = [compare(results[0], other, alpha, allow_different_models=allow_different_models,
                     practical_fraction=practical_fraction, seed=seed) for other in results[1:]]
    return {
        "schema": MANY_SCHEMA,
        "baseline": pairs[0]["a"],
        "comparisons": pairs,
        "geometric_mean": {key: float(np.exp(np.mean(np.log([p[key] for p in pairs]))))
                           for key in ("median_ratio", "p99_ratio")},
    }


def _describe(side: dict[str, Any]) -> str:
    name = Path(str(side["model"])).name if side["model"] else "?"
    return (f"{name}, {side['backend']} on {side['hostname']} ({side['n']} runs)"
            + (" [EMULATED]" if side["emulated"] else ""))


def render_compare(report: dict[str, Any]) -> str:
    """The report as a few plain lines: what was compared, the numbers, the verdict, warnings."""
    from edgert.units import duration_ms

    a, b = report["a"], report["b"]
    lo, hi = report["median_ratio_ci95"]
    lines = [
        f"A: {_describe(a)}",
        f"B: {_describe(b)}",
        f"p50: {duration_ms(a['p50'])} -> {duration_ms(b['p50'])} ({fixed(100 * report['p50_change'], 1, '+')}%)",
        f"p99: {duration_ms(a['p99'])} -> {duration_ms(b['p99'])} ({fixed(100 * report['p99_change'], 1, '+')}%)",
        f"median B/A: {fixed(report['median_ratio'], 3)} (95% CI {fixed(lo, 3)}..{fixed(hi, 3)}, bootstrap)",
        f"Mann-Whitney U, two-sided: {format_p(report['test']['p_value'])} "
        f"(alpha {report['test']['alpha']:g})",
        f"verdict: {report['verdict']}",
        f"         {report['p99_verdict']}",
    ]
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def render_many(report: dict[str, Any]) -> str:
    """A table of every file against the first, the geometric mean, then the warnings."""
    from edgert.units import duration_ms

    base = report["baseline"]
    rows = [("", "configuration", "runs", "p50", "p99", "p50 vs A", "p99 vs A", "test", "verdict")]
    rows.append(("A", _describe(base), str(base["n"]), duration_ms(base["p50"]), duration_ms(base["p99"]),
                 "baseline", "baseline", "", ""))
    for n, pair in enumerate(report["comparisons"]):
        b = pair["b"]
        rows.append((chr(ord("B") + n) if n < 25 else str(n + 1), _describe(b), str(b["n"]),
                     duration_ms(b["p50"]), duration_ms(b["p99"]),
                     f"{fixed(pair['median_ratio'], 3)}x", f"{fixed(pair['p99_ratio'], 3)}x",
                     format_p(pair["test"]["p_value"]),
                     pair["verdict"].replace("B is", "is").split(" (p")[0] + "; " + pair["p99_verdict"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    gm = report["geometric_mean"]
    lines.append(f"geometric mean of the ratios to A: p50 {fixed(gm['median_ratio'], 3)}x, "
                 f"p99 {fixed(gm['p99_ratio'], 3)}x "
                 f"(Mann-Whitney U, two-sided, alpha {report['comparisons'][0]['test']['alpha']:g}, per file)")
    seen = set()
    for n, pair in enumerate(report["comparisons"]):
        for w in pair["warnings"]:
            w = w.replace("B ", f"{chr(ord('B') + n)} ", 1) if w.startswith("B ") else w
            if w not in seen:
                seen.add(w)
                lines.append(f"warning: {w}")
    return "\n".join(lines)