"""Benchmark settings: one frozen value built once (CLI/TOML) and passed down, units in names."""
from __future__ import annotations

import dataclasses
from typing import Any

from edgert.errors import UsageError


@dataclasses.dataclass(frozen=True)
class BenchSettings:
    """How long and how often to run a model. ``runs`` fixes the count and turns adaptivity off."""

    warmup_runs: int = 5
    runs: int | None = None
    min_runs: int = 10
    max_runs: int = 100_000
    min_duration_ms: float = 1_000.0
    max_duration_ms: float = 10_000.0
    target_ci_fraction: float = 0.01  # stop when the 95% CI of the median is within +-1% of it
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.warmup_runs < 0:
            raise UsageError("--warmup must be >= 0")
        if self.runs is not None and self.runs < 1:
            raise UsageError("--runs must be >= 1")
        if self.min_duration_ms < 0 or self.max_duration_ms <= 0:
            raise UsageError("--min-time and --max-time must be positive")
        if self.max_duration_ms < self.min_duration_ms:
            raise UsageError("--max-time must not be below --min-time")
        if not 0 < self.target_ci_fraction < 1:
            raise UsageError("the target CI fraction must be between 0 and 1")
        if self.threads is not None and self.threads < 1:
            raise UsageError("--threads must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BenchSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
