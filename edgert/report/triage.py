"""Warnings grouped by kind and ordered by severity, so 70 lines read as a handful of groups.

The kind is recognised from the wording ``edgert.stats``, ``edgert.sweep``, ``edgert.result``
and ``edgert.power_status`` use; anything unrecognised stays visible as "other".
"""
from __future__ import annotations

import dataclasses
import re

from edgert.report.model import Finding

# (severity, kind, pattern): first match wins; severities: 0 numbers not measured, 1 a setting or
# run went wrong, 2 the measurement is noisy, 3 for information.
RULES: tuple[tuple[int, str, str], ...] = (
    (0, "emulated: not hardware numbers", r"emulat"),
    (0, "power not measured (fixture or static reading)", r"fixture|static value|power read from"),
    (2, "noisy or drifting runs", r"above the median|standard deviation|drifted"),
    (2, "confidence interval too wide", r"CI of the median"),
    (2, "too few runs or too short a workload", r"timer resolution|too few|fewer than|runs were measured"),
    (1, "server scenario: the system did not keep up", r"^server:"),
    (1, "a clock setting did not take or was not measured", r"did not take|not measured|throttled|left out"),
    (1, "busy or warming machine", r"busy|load average|warmed by|clock of .* changed"),
    (3, "other", r""),
)
SEVERITY_NAMES = ("numbers not measured", "setting or run problem", "measurement noise", "information")


@dataclasses.dataclass
class Group:
    severity: int
    kind: str
    findings: list[Finding]

    @property
    def severity_name(self) -> str:
        return SEVERITY_NAMES[self.severity]


def classify(finding: Finding) -> tuple[int, str]:
    if finding.emulated:
        return RULES[0][0], RULES[0][1]
    for severity, kind, pattern in RULES:
        if re.search(pattern, finding.text, re.IGNORECASE):
            return severity, kind
    raise AssertionError("the last rule matches everything")


def group(findings: list[Finding]) -> list[Group]:
    """Groups, most severe first, then largest; findings keep their order inside a group."""
    groups: dict[tuple[int, str], Group] = {}
    for finding in findings:
        severity, kind = classify(finding)
        groups.setdefault((severity, kind), Group(severity, kind, [])).findings.append(finding)
    return sorted(groups.values(), key=lambda g: (g.severity, -len(g.findings)))
