"""Time one compiled TVM kernel on this device, for MetaSchedule tuning driven from a host.

Device side: the TVM runtime and numpy only (no compiler, no RPC server). The host
builds each candidate, uploads it to the agent store and asks for ``tvm.time``; the
answer is raw per-repeat seconds, and the host's runner turns them into records.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgert.errors import BackendError, UsageError

MAX_REPEAT = 100
MAX_NUMBER = 10_000


def _check_args(args: Any) -> list[tuple[tuple[int, ...], str]]:
    if not isinstance(args, list) or not args:
        raise UsageError("tvm.time needs args: a list of {shape, dtype}")
    specs = []
    for arg in args:
        try:
            shape = tuple(int(d) for d in arg["shape"])
            dtype = np.dtype(str(arg["dtype"])).name
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"bad tvm.time argument {arg!r}: {exc}") from exc
        if any(d < 0 for d in shape):
            raise UsageError(f"bad tvm.time argument shape {shape}")
        specs.append((shape, dtype))
    return specs


def _random(shape: tuple[int, ...], dtype: str, rng: np.random.Generator) -> np.ndarray:
    if np.issubdtype(np.dtype(dtype), np.floating):
        return rng.uniform(-1, 1, shape).astype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(dtype)
    return rng.integers(0, 8, shape).astype(dtype)  # small values: index-like args stay in range


def time_function(library: Path, func: str | None, args: list[dict[str, Any]],
                  number: int = 1, repeat: int = 3, min_repeat_ms: int = 0) -> list[float]:
    """Seconds per call of ``func`` (None: the module's entry), one value per repeat.

    Arguments are fresh random tensors of the given shapes and dtypes; ``number``
    calls are averaged inside each repeat by TVM's ``time_evaluator``.
    """
    os.environ.setdefault("TVM_BIND_THREADS", "0")  # read when TVM's pool starts; see docs/tvm-notes.md
    import tvm

    specs = _check_args(args)
    if not (1 <= number <= MAX_NUMBER and 1 <= repeat <= MAX_REPEAT):
        raise UsageError(f"tvm.time: number must be 1..{MAX_NUMBER} and repeat 1..{MAX_REPEAT}")
    try:  # TVM picks the loader by the file's suffix: the agent hands over a named .so
        module = tvm.runtime.load_module(str(library))
    except Exception as exc:  # TVMError for a foreign or broken library
        raise BackendError(f"TVM cannot load the candidate {library}: {exc}",
                           path=str(library)) from exc
    name = func or module.entry_name
    device = tvm.cpu()
    rng = np.random.default_rng(0)
    tensors = [tvm.runtime.tensor(_random(shape, dtype, rng), device) for shape, dtype in specs]
    try:
        evaluator = module.time_evaluator(name, device, number=number, repeat=repeat,
                                          min_repeat_ms=min_repeat_ms)
        return [float(s) for s in evaluator(*tensors).results]
    except Exception as exc:  # a candidate that fails at run time is a failed measurement
        raise BackendError(f"TVM could not run {name} from {library}: {exc}", path=str(library)) from exc


def serve_request(params: dict[str, Any], library: Path) -> dict[str, Any]:
    """The agent's ``tvm.time`` handler body: params {func, args, number, repeat}."""
    seconds = time_function(library, params.get("func"), params.get("args"),
                            int(params.get("number", 1)), int(params.get("repeat", 3)),
                            int(params.get("min_repeat_ms", 0)))
    return {"seconds": seconds}
