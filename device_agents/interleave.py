"""Time several artifacts in alternating blocks in one process (``bench.interleaved``).

Timing candidates one after another lets load drift on the device (another process, a
thermal throttle, qemu's host) favour whichever ran in the quieter minute. Here every
artifact is loaded and warmed up first, then the timed runs come in blocks of
``block_runs`` runs in ``order``, which the host chooses (``block_order``: ABBA rounds, so
a linear drift costs every candidate the same). Each artifact's runs cycle through the
input cases with its own cursor, so over the request every candidate sees every case
equally often. Sessions stay loaded between blocks: reloading would time the engine's
start-up, not the model. Raw samples only; statistics are the host's.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgert.backends import BackendOptions
from edgert.errors import EdgertError, UsageError
from edgert.runner import peak_rss_bytes, prepared_session
from edgert.settings import BenchSettings
from edgert.tensors import check_feeds
from edgert.timing import RawRun

MAX_BLOCKS = 10_000  # a request naming more is refused, not run for hours


@dataclasses.dataclass(frozen=True)
class Contender:
    """One artifact of an interleaved request: its name in the request, file and engine."""

    name: str
    path: Path
    backend: str


def block_order(names: Sequence[str], rounds: int) -> list[str]:
    """``rounds`` rounds over ``names``, every other round reversed: A B B A A B ...

    Within two rounds each candidate's blocks sit symmetrically around the middle, so a
    load that rises or falls linearly adds the same time to all of them.
    """
    return [name for r in range(rounds) for name in (names if r % 2 == 0 else names[::-1])]


def run_interleaved(contenders: Sequence[Contender], order: Sequence[str], block_runs: int,
                    settings: BenchSettings, cases: Sequence[Mapping[str, np.ndarray]],
                    options: BackendOptions,
                    progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Load and warm up every contender, then time ``order``'s blocks of ``block_runs`` runs.

    Returns ``{"order", "block_runs", "raw": {name: RawRun dict + "blocks" and "cases" (the
    block and the case index of each timed run)}, "failed": {name: why}, "first_outputs", "peak_rss_bytes",
    "described": {name: {"backend", "inputs", "outputs"}}}``:
    a contender that fails to load or to run its warm-up is left out of the blocks (named
    in ``failed``), so the others are still compared; one failing mid-block is an error.
    """
    names = [c.name for c in contenders]
    if len(set(names)) != len(names) or not names:
        raise UsageError("an interleaved request needs distinct artifact names", names=names)
    if unknown := set(order) - set(names):
        raise UsageError(f"the block order names artifacts not in the request: {sorted(unknown)}")
    if block_runs < 1 or len(order) > MAX_BLOCKS:
        raise UsageError(f"an interleaved request needs block_runs >= 1 and at most {MAX_BLOCKS} "
                         f"blocks, got {block_runs} and {len(order)}")
    failed: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        loaded: dict[str, _Loaded] = {}
        for c in contenders:
            try:
                loaded[c.name] = _load(stack, c, settings, cases, options)
            except EdgertError as exc:
                failed[c.name] = exc.message.strip().splitlines()[0][:300]
        clock = time.get_clock_info("perf_counter")
        start_unix, begin = time.time(), time.perf_counter_ns()
        samples = {name: [] for name in loaded}
        starts = {name: [] for name in loaded}
        blocks: dict[str, list[int]] = {name: [] for name in loaded}
        cases_run: dict[str, list[int]] = {name: [] for name in loaded}
        kept = [name for name in order if name in loaded]
        for index, name in enumerate(kept):
            one = loaded[name]
            for _ in range(block_runs):
                case = one.next
                t0 = time.perf_counter_ns()
                one.run()
                t1 = time.perf_counter_ns()
                samples[name].append(t1 - t0)
                starts[name].append(t0)
                blocks[name].append(index)
                cases_run[name].append(case)
            if progress is not None:
                progress((index + 1) * block_runs, (time.perf_counter_ns() - begin) / 1e6)
        end_unix = time.time()
        raw = {name: dict(RawRun(samples[name], starts[name], loaded[name].warmup_ns, "runs",
                                 clock.implementation, clock.resolution * 1e9, start_unix,
                                 end_unix).to_dict(), blocks=blocks[name], cases=cases_run[name])
               for name in loaded}
        return {"order": kept, "block_runs": block_runs, "raw": raw, "failed": failed,
                "first_outputs": {name: one.first for name, one in loaded.items()},
                "described": {name: one.described for name, one in loaded.items()},
                "peak_rss_bytes": peak_rss_bytes()}


class _Loaded:
    """A loaded session with its cases, run in turn by ``run``; warmed up on creation."""

    def __init__(self, session: Any, feeds: list[dict[str, np.ndarray]], warmup_runs: int,
                 description: dict[str, Any]) -> None:
        self.session, self.feeds, self.next = session, feeds, 0
        self.described = {"backend": description,
                          "inputs": [s.to_dict() | {"shape": list(feeds[0][s.name].shape)}
                                     for s in session.inputs],
                          "outputs": [s.to_dict() for s in session.outputs]}
        self.first = [np.asarray(o) for o in session.run(feeds[0])]
        self.warmup_ns: list[int] = []
        for _ in range(warmup_runs):
            t0 = time.perf_counter_ns()
            self.run()
            self.warmup_ns.append(time.perf_counter_ns() - t0)

    def run(self) -> None:
        self.session.run(self.feeds[self.next])
        self.next = (self.next + 1) % len(self.feeds)


def _load(stack: contextlib.ExitStack, contender: Contender, settings: BenchSettings,
          cases: Sequence[Mapping[str, np.ndarray]], options: BackendOptions) -> _Loaded:
    """``contender``'s session kept open on ``stack``, warmed up on every case in turn."""
    with contextlib.ExitStack() as attempt:
        description, session, defaults = attempt.enter_context(prepared_session(
            contender.path, contender.backend, settings, options=options,
            feeds=dict(cases[0]) if cases else None))
        feeds = [_checked({**defaults, **case}, session) for case in cases] or [defaults]
        loaded = _Loaded(session, feeds, settings.warmup_runs, description)
        stack.push(attempt.pop_all())  # loaded and warmed up: keep it open for the blocks
        return loaded


def _checked(feeds: dict[str, Any], session: Any) -> dict[str, np.ndarray]:
    arrays = {k: np.asarray(v) for k, v in feeds.items()}
    check_feeds(session.inputs, arrays)
    return arrays
