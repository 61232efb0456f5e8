"""How ``backend="auto"`` picks between candidates timed on a device (host only).

Each decision has a baseline: ORT for a segment (the reference engine, built for any
target), the whole model as one ORT call for partitioned-vs-whole. The fastest other
candidate (the challenger, by median) replaces it only when both hold on the raw samples:

- its median is more than ``MARGIN`` below the baseline's, and
- a one-sided Mann-Whitney U test says it is faster at ``ALPHA`` (no normality assumed).

Candidates within noise of each other therefore keep the baseline, so a choice can be
reproduced: ``edgert bench --device`` on the kept candidates (the same request, warm-up and
run count as ``edgert.devices.timer``) gives samples that ``decide`` turns into the same
choice unless the true difference sits at the margin.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import Any, Mapping, Sequence

from edgert.errors import InternalError

ALPHA = 0.01
MARGIN = 0.05


@dataclasses.dataclass(frozen=True)
class Decision:
    chosen: str
    baseline: str
    challenger: str | None  # None: the baseline was the only candidate timed
    median_ratio: float  # challenger's median / baseline's (1.0 without a challenger)
    p_value: float  # one-sided: is the challenger faster? (1.0 without a challenger)

    @property
    def reason(self) -> str:
        if self.challenger is None:
            return f"{self.baseline} is the only candidate that could be timed"
        rule = (f"{self.challenger} replaces the baseline {self.baseline} only when its median "
                f"is more than {MARGIN:.0%} lower and a one-sided Mann-Whitney U test gives "
                f"p < {ALPHA:g}")
        return (f"{rule}; its median is {self.median_ratio:.2f}x the baseline's, "
                f"p={self.p_value:.2g}")

    def to_dict(self) -> dict[str, Any]:
        return {"baseline": self.baseline, "challenger": self.challenger,
                "median_ratio": self.median_ratio, "p_value": self.p_value,
                "alpha": ALPHA, "margin": MARGIN}


def decide(baseline: str, samples_ms: Mapping[str, Sequence[float]]) -> Decision:
    """The candidate to keep from raw per-run samples (milliseconds) of each one timed."""
    from scipy.stats import mannwhitneyu

    if baseline not in samples_ms or any(len(s) < 1 for s in samples_ms.values()):
        raise InternalError(f"auto's decision needs samples of the baseline {baseline!r}",
                            timed=sorted(samples_ms))
    medians = {name: statistics.median(s) for name, s in samples_ms.items()}
    others = [name for name in samples_ms if name != baseline]
    if not others:
        return Decision(baseline, baseline, None, 1.0, 1.0)
    challenger = min(others, key=medians.get)
    ratio = float(medians[challenger] / medians[baseline]) if medians[baseline] > 0 else 1.0
    p = float(mannwhitneyu(samples_ms[challenger], samples_ms[baseline], alternative="less").pvalue)
    if math.isnan(p):  # every sample identical on both sides
        p = 1.0
    wins = ratio < 1 - MARGIN and p < ALPHA
    return Decision(challenger if wins else baseline, baseline, challenger, ratio, p)
