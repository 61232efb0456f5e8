"""``edgert bench A B ...``: several artifacts timed interleaved, one result each (host side).

Every model is loaded and warmed up, then timed in blocks of ``block_runs`` runs in ABBA
rounds (``device_agents.interleave``) by one process: this machine's, or the device agent's
in one ``bench.interleaved`` request, so the per-command cost of reaching a board stays out
of the samples and load drift costs every model alike. It is the request ``compile
--backend auto --device`` times its candidates with (``edgert.devices.timer``). Each model
gets an ordinary result file, plus an ``interleaved`` block naming the other models, the
block order and the block of each run.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgert.device_agents.interleave import Contender, block_order, run_interleaved
from edgert.devices.address import DeviceAddress
from edgert.errors import UsageError
from edgert.settings import BenchSettings

DEFAULT_RUNS = 20  # per model, when --runs is not given


def bench_interleaved(models: Sequence[Path], backend: str, settings: BenchSettings, block_runs: int,
                      cases: Sequence[tuple[str, Mapping[str, np.ndarray]]],
                      device: DeviceAddress | None, target: str = "host",
                      progress: Callable[[int, float], None] | None = None) -> list[dict[str, Any]]:
    """One result per model (in ``models``' order), all timed in one interleaved process."""
    from edgert import device_facts, result, run_metadata
    from edgert.bench import agreement

    names = [Path(m).stem for m in models]
    if len(set(names)) != len(names):
        raise UsageError("models benched together need distinct file names (they name the "
                         f"result files): {', '.join(str(m) for m in models)}")
    if settings.scenario != "single-stream" or settings.concurrency != 1:
        raise UsageError("several models are timed interleaved in the single-stream scenario only")
    runs = settings.runs or DEFAULT_RUNS
    settings = dataclasses.replace(settings, runs=runs)
    if block_runs < 1 or runs % block_runs:
        raise UsageError(f"--runs ({runs}) must be a whole number of --block-runs ({block_runs})")
    order = block_order(names, runs // block_runs)
    if device is None or device.scheme == "local":
        facts = device_facts.collect("local")
        measured = run_metadata.around(lambda: run_interleaved(
            [Contender(n, Path(m), backend) for n, m in zip(names, models)], order, block_runs,
            settings, [dict(case) for _, case in cases], _options(settings, target), progress))
    else:
        from edgert.device_agents.protocol import pack_array
        from edgert.devices.connect import open_client

        params = {"settings": settings.to_dict(), "target": target,
                  "cases": [{k: pack_array(np.asarray(v)) for k, v in case.items()} for _, case in cases]}
        with open_client(device) as client:
            measured = client.bench_interleaved(
                {n: (Path(m), backend) for n, m in zip(names, models)}, order, block_runs, params,
                progress)
        facts = measured.pop("device")
        facts["emulated"] = bool(facts.get("emulated") or device.emulated)
    if measured["failed"]:
        name, why = next(iter(measured["failed"].items()))
        raise UsageError(f"{name} could not be timed: {why}", failed=measured["failed"])
    case_names = [name for name, _ in cases]
    first = measured["first_outputs"]
    results = []
    for name, path in zip(names, models):
        raw = dict(measured["raw"][name])
        blocks, case_index = raw.pop("blocks"), raw.pop("cases")
        one = dict(measured["described"][name], raw=raw, peak_rss_bytes=measured["peak_rss_bytes"],
                   # the others' blocks sit between this one's runs: no throughput to speak of
                   scenario={"name": "single-stream", "concurrency": 1, "throughput_ips": None},
                   run_metadata=measured.get("run_metadata"))
        if case_names:
            one["cases"] = [case_names[i] for i in case_index]
        extra: dict[str, Any] = {"interleaved": {"models": names, "block_runs": block_runs,
                                                 "order": measured["order"], "blocks": blocks}}
        if name != names[0]:  # outputs on the first case, as bench compares backends
            extra["agreement"] = agreement(first[names[0]], first[name], names[0])
        results.append(result.build(model_path=Path(path), device=dict(facts), settings=settings,
                                    measured=one, extra=extra))
    return results


def _options(settings: BenchSettings, target: str) -> Any:
    from edgert.backends import BackendOptions

    return BackendOptions(threads=settings.threads, target=target)
