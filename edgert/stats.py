"""Latency statistics: pure functions over raw samples, used for local and remote runs alike.

Nothing here measures; the timing loop (``edgert.timing``) only collects samples. Warnings are
worded for people, after pyperf ("the max is 40% above the median").
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
CI_METHOD = "bootstrap"  # the one CI of the median edgert reports: seeded percentile bootstrap
MIN_RUNS_FOR_TAILS = 20


def median_ci95(samples: Sequence[float]) -> tuple[float, float]:
    """Distribution-free 95% CI of the median from order statistics (cheap: the stopping rule).

    Uses the normal approximation to the binomial ranks; with fewer than 6 samples the
    interval is the whole range.
    """
    x = np.sort(np.asarray(samples, dtype=np.float64))
    n = len(x)
    if n < 6:
        return float(x[0]), float(x[-1])
    half = 1.96 * math.sqrt(n) / 2
    lo = max(int(math.floor(n / 2 - half)), 0)
    hi = min(int(math.ceil(n / 2 + half)), n - 1)
    return float(x[lo]), float(x[hi])


def bootstrap_median_ci95(samples: Sequence[float], seed: int = 0,
                          resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[float, float]:
    """Percentile-bootstrap 95% CI of the median (seeded, so a result file is reproducible)."""
    x = np.asarray(samples, dtype=np.float64)
    n = len(x)
    if n == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    medians = np.empty(resamples)
    chunk = max(1, 2_000_000 // n)  # bound memory: resample at most ~2M values at a time
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        medians[start:stop] = np.median(x[idx], axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return float(low), float(high)


def ci_converged(samples: Sequence[float], fraction: float) -> bool:
    """True when the 95% CI of the median lies within +-``fraction`` of the median."""
    if len(samples) < 6:
        return False
    med = float(np.median(samples))
    lo, hi = median_ci95(samples)
    return med > 0 and (med - lo) <= fraction * med and (hi - med) <= fraction * med


def summarize(samples_ms: Sequence[float], seed: int = 0) -> dict[str, Any]:
    """The ``latency_ms`` block of a result file."""
    x = np.asarray(samples_ms, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no samples to summarize")
    p50, p90, p95, p99 = np.percentile(x, [50, 90, 95, 99])
    return {
        "n": int(x.size),
        "p50": float(p50), "p90": float(p90), "p95": float(p95), "p99": float(p99),
        "mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
        "min": float(x.min()), "max": float(x.max()),
        "mad": float(np.median(np.abs(x - p50))),
        "ci95": list(bootstrap_median_ci95(x, seed=seed)),
        "ci_method": f"percentile {CI_METHOD}, {BOOTSTRAP_RESAMPLES} resamples",
    }


def stability_warnings(samples_ms: Sequence[float], *, timer_resolution_ms: float,
                       target_ci_fraction: float | None = None, seed: int = 0) -> list[str]:
    """Plain-language reasons not to trust a measurement too much."""
    x = np.asarray(samples_ms, dtype=np.float64)
    n = x.size
    warnings: list[str] = []
    if n == 0:
        return ["no runs were measured"]
    med = float(np.median(x))
    if n == 1:  # summarize reports std 0 and a zero-width CI: say they mean nothing
        warnings.append("only 1 run was measured: it has no spread, so its std (0) and the zero-width "
                        "95% CI of the median say nothing; measure more runs")
    if n < MIN_RUNS_FOR_TAILS:
        warnings.append(f"only {n} runs were measured: p95/p99 are not meaningful below "
                        f"{MIN_RUNS_FOR_TAILS}")
    if med > 0 and x.max() > 1.5 * med:
        warnings.append(f"the max is {100 * (x.max() / med - 1):.0f}% above the median")
    if n > 1 and x.mean() > 0 and x.std(ddof=1) > 0.1 * x.mean():
        warnings.append(f"the standard deviation is {100 * x.std(ddof=1) / x.mean():.0f}% of the "
                        "mean: the system may be busy or throttling")
    if n >= 20:
        first, second = np.median(x[: n // 2]), np.median(x[n // 2:])
        drift = (second - first) / first if first > 0 else 0.0
        if abs(drift) > 0.05:
            word = "slower" if drift > 0 else "faster"
            warnings.append(f"the second half of the runs was {100 * abs(drift):.0f}% {word} than "
                            "the first: performance drifted (thermal throttling, frequency scaling?)")
    if med < 1000 * timer_resolution_ms:
        warnings.append(f"the median ({med * 1000:.3f} us) is under 1000x the timer resolution "
                        f"({timer_resolution_ms * 1e6:.0f} ns): measure a longer workload")
    if target_ci_fraction is not None and n >= 6 and not ci_converged(x, target_ci_fraction):
        lo, hi = bootstrap_median_ci95(x, seed=seed)  # the reported CI, not the stopping rule's
        warnings.append(f"the 95% CI of the median ({CI_METHOD}: {lo:.4g}..{hi:.4g} ms) is wider than "
                        f"+-{100 * target_ci_fraction:g}%: increase --max-time")
    return warnings
