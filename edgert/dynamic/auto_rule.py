"""How ``backend="auto"`` picks between candidates timed on a device (host only).

Each decision has a baseline: ORT for a segment (the reference engine, built for any
target), the whole model as one ORT call for partitioned-vs-whole. The fastest other
candidate (the challenger, by median) replaces it only when both hold on the raw samples:

- its median is more than ``MARGIN`` below the baseline's, and
- a one-sided Mann-Whitney U test says it is faster at ``ALPHA`` (no normality assumed).

Candidates within noise of each other therefore keep the baseline, so a choice can be
reproduced: ``edgert bench A B --device`` on the kept candidates (the same interleaved
request, warm-up and run counts as ``edgert.devices.timer``) gives samples that ``decide``
turns into the same choice unless the true difference sits at the margin. Near the
boundary (``unsettled``) the timer takes more samples before deciding; looking twice makes
a false win somewhat likelier than ``ALPHA`` (at most about 3x with two extra looks).

``compare`` says how a second timing relates to a first choice: the same choice, or a
contradiction (the rival of the choice is significantly faster the other way round), or
merely inconclusive (the second timing cannot tell the two apart at ``ALPHA``).
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


UNSETTLED_RATIO = 1 - MARGIN / 2  # a challenger's median this far below the baseline's ...
SETTLED_P = ALPHA / 10  # ... that is not yet this significant, or within MARGIN/2 of the margin


def unsettled(decision: Decision) -> bool:
    """Whether more samples could still change ``decision``: the challenger looks faster
    by at least half the margin, and either its p-value is not a decade below ``ALPHA`` or
    its median ratio lies within half the margin of ``1 - MARGIN``."""
    if decision.challenger is None or decision.median_ratio >= UNSETTLED_RATIO:
        return False
    return decision.p_value >= SETTLED_P or decision.median_ratio > 1 - 1.5 * MARGIN


def agreement(chosen: str, again: Decision, samples_ms: Mapping[str, Sequence[float]]) -> str:
    """How a second timing (``again``, decided on ``samples_ms``) relates to ``chosen``:

    - ``"reproduced"``: the rule on the second samples gives ``chosen`` again;
    - ``"contradicted"``: it does not, and the candidate the first timing rejected (or the
      one it kept over the baseline) is significantly faster (one-sided U, p < ALPHA) than
      ``chosen`` in the second samples;
    - ``"inconclusive"``: it does not, but the second samples cannot tell the two apart.
    """
    from scipy.stats import mannwhitneyu

    if again.chosen == chosen:
        return "reproduced"
    rival = again.chosen
    p = float(mannwhitneyu(samples_ms[rival], samples_ms[chosen], alternative="less").pvalue)
    return "contradicted" if p < ALPHA else "inconclusive"
