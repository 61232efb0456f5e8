"""MetaSchedule tuning of ONNX models into a persistent, per-target tuning database.

Host-only. ``tune_model`` extracts the fused TIR functions that ``compilers.tvm``
compiles (of one model, or of several such as a bundle's TVM segments, each distinct
function once), searches schedules for them and measures each candidate either here or
on a device through an edgert agent (``tvm.time``, see device_agents/tvm_timer.py).
Every measured record is appended to the database as it arrives (MetaSchedule's
JSON database writes one line per commit), so an interrupted run keeps its work;
``compilers.tvm.compile_onnx(..., tuning_db=...)`` applies the best records.

0.27 workarounds (docs/tvm-notes.md): candidates are built in this process (the
stock builder's fresh workers spend ~29 s importing tensor intrinsics and hit its
30 s timeout forever) and timed by our own runner (the stock one asks for device
"llvm" and fails with "Unknown device: llvm").
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from edgert.errors import BackendError, UsageError
from edgert.onnx_file import load_model

from .tvm import import_specialized, legalize
from .tvm_db import database_dir, mark_emulated, open_database, tuning_target
from .tvm_target import export_compiler, is_cross, target_key

DEFAULT_TRIALS_PER_ITER = 32
NUMBER, REPEAT = 3, 3  # calls per repeat, repeats per candidate (runner results are per repeat)

Timer = Callable[[Path, list[dict[str, Any]]], list[float]]


# ------------------------------------------------------------------ tensor intrinsics

def _cpu_tensor_intrinsics() -> None:
    """Register only the CPU tensor intrinsics, before MetaSchedule imports all of them.

    Every ``TuneContext`` imports ``tvm.s_tir.tensor_intrin``, whose ``__init__`` also
    registers the CUDA, ROCm, Metal and Hexagon ones: ~25 s on a 2-core VM before the first
    candidate (the x86/arm/riscv ones, all that LLVM targets' schedule rules look up, take
    ~2 s). Here the package is entered without running its ``__init__``; its submodules
    still import normally. A no-op once the package is imported.
    """
    import importlib
    import importlib.util
    import sys

    import tvm.s_tir

    name = "tvm.s_tir.tensor_intrin"
    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    tvm.s_tir.tensor_intrin = package
    for cpu in ("x86", "arm_cpu", "riscv_cpu"):
        importlib.import_module(f"{name}.{cpu}")


# ------------------------------------------------------------ builder and runners

def _export(rt_mod: Any, target: Any, directory: str) -> str:
    """Link one candidate into a directory of its own (MetaSchedule's RemoveBuildArtifact
    callback deletes the artifact's whole directory once it is measured)."""
    path = os.path.join(tempfile.mkdtemp(dir=directory, prefix="cand-"), "candidate.so")
    rt_mod.export_library(path, fcompile=export_compiler(target))
    return path


def _make_builder(workdir: str) -> Any:
    """A MetaSchedule builder that compiles and links candidates in this process."""
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    @derived_object
    class InProcessBuilder(ms.builder.PyBuilder):
        def build(self, build_inputs: list[Any]) -> list[Any]:
            results = []
            for item in build_inputs:
                try:
                    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(item.mod)
                    rt_mod = tvm.compile(mod, target=item.target)
                    results.append(ms.builder.BuilderResult(_export(rt_mod, item.target, workdir), None))
                except Exception as exc:  # a candidate that does not build is a failed trial
                    results.append(ms.builder.BuilderResult(None, f"{type(exc).__name__}: {exc}"))
            return results

    return InProcessBuilder()


def _make_runner(timer: Timer) -> Any:
    """A MetaSchedule runner that times each built candidate with ``timer``."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class Done(ms.runner.PyRunnerFuture):
        def __init__(self, result: Any) -> None:
            super().__init__()
            self._result = result

        def done(self) -> bool:
            return True

        def result(self) -> Any:
            return self._result

    @derived_object
    class TimerRunner(ms.runner.PyRunner):
        def run(self, runner_inputs: list[Any]) -> list[Any]:
            futures = []
            for item in runner_inputs:
                args = [{"shape": [int(d) for d in info.shape], "dtype": str(info.dtype)}
                        for info in item.args_info]
                try:
                    result = ms.runner.RunnerResult(timer(Path(item.artifact_path), args), None)
                except Exception as exc:  # EdgertError from the device, TVMError locally
                    result = ms.runner.RunnerResult(None, f"{type(exc).__name__}: {exc}")
                futures.append(Done(result))
            return futures

    return TimerRunner()


def local_timer(library: Path, args: list[dict[str, Any]]) -> list[float]:
    """Time a candidate in this process (device_agents.tvm_timer, as the agent would)."""
    from edgert.device_agents.tvm_timer import time_function

    return time_function(library, None, args, NUMBER, REPEAT)


def agent_timer(client: Any) -> Timer:
    """Time candidates on the device behind ``client`` (an ``AgentClient``)."""
    def timer(library: Path, args: list[dict[str, Any]]) -> list[float]:
        sha = client.upload(library)
        reply = client.call("tvm.time", {"sha256": sha, "suffix": ".so", "func": None, "args": args,
                                         "number": NUMBER, "repeat": REPEAT})
        return [float(s) for s in reply["seconds"]]
    return timer


# ------------------------------------------------------------------- the tuning run

@dataclasses.dataclass
class TaskState:
    name: str
    weight: float  # calls per inference, summed over the models it occurs in
    models: list[str]  # stems of the model files the task occurs in
    trials: int = 0
    best_us: float | None = None


def best_total_ms(tasks: list[TaskState]) -> float | None:
    """Weight x best latency summed over the tasks measured so far (None before the first)."""
    measured = [t for t in tasks if t.best_us is not None]
    return sum(t.weight * t.best_us for t in measured) / 1e3 if measured else None


@dataclasses.dataclass
class TuneProgress:
    """What a progress bar shows; ``best_ms`` sums weight x best latency over measured tasks."""

    tasks_total: int
    tasks_measured: int
    trials: int
    best_ms: float | None
    elapsed_s: float
    budget_s: float | None
    emulated: bool = False


@dataclasses.dataclass
class TuneSummary:
    database: Path
    target: str
    tasks: list[TaskState]
    trials: int
    elapsed_s: float
    stopped_by: str  # "budget", "trials" or "search" (MetaSchedule ran out of candidates)
    emulated: bool = False  # timed on an emulated device: best_us says nothing about real hardware

    @property
    def best_ms(self) -> float | None:
        return best_total_ms(self.tasks)

    def to_dict(self) -> dict[str, Any]:
        return {"database": str(self.database), "target": self.target, "trials": self.trials,
                "elapsed_s": round(self.elapsed_s, 1), "stopped_by": self.stopped_by,
                "emulated": self.emulated,
                "tasks": [dataclasses.asdict(t) for t in self.tasks]}


def _callback(tasks: list[TaskState], deadline: float | None, start: float, budget: float | None,
              on_progress: Callable[[TuneProgress], None] | None, stopped: list[str],
              emulated: bool) -> Any:
    """Tracks best latencies, reports progress, and ends every task once the budget is spent."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class Watch(ms.measure_callback.PyMeasureCallback):
        def apply(self, task_scheduler: Any, task_id: int, measure_candidates: Any,
                  builder_results: Any, runner_results: Any) -> None:
            state = tasks[task_id]
            for result in runner_results:
                state.trials += 1
                if result.run_secs is not None and not result.error_msg:
                    us = 1e6 * sum(float(s) for s in result.run_secs) / len(result.run_secs)
                    state.best_us = us if state.best_us is None else min(state.best_us, us)
            if deadline is not None and time.monotonic() >= deadline:
                stopped[:] = ["budget"]
                for i in range(len(tasks)):
                    task_scheduler.terminate_task(i)
            if on_progress is not None:
                measured = sum(t.best_us is not None for t in tasks)
                on_progress(TuneProgress(len(tasks), measured, sum(t.trials for t in tasks),
                                         best_total_ms(tasks), time.monotonic() - start, budget, emulated))

    return Watch()


def extract(model_path: Path, target: Any) -> tuple[Any, list[Any]]:
    """The legalized Relax module and its MetaSchedule tasks (as ``compile_onnx`` would see them)."""
    from tvm.s_tir import meta_schedule as ms

    mod = legalize(import_specialized(load_model(Path(model_path)), {})[0], target)
    return mod, list(ms.relax_integration.extract_tasks(mod, tuning_target(target)))


def _merge(models: list[Path], target: Any) -> tuple[list[Any], list[list[str]]]:
    """The tasks of all ``models``, each distinct task once (weights summed), and where it occurs.

    Tasks are the same when their TIR is structurally equal, which is also how the
    database matches records to functions at compile time; a name used by two different
    tasks gets a suffix, since MetaSchedule names each task's log after it.
    """
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    merged: list[tuple[Any, int, list[str]]] = []  # (task, weight, model stems)
    by_hash: dict[int, list[int]] = {}
    for path in models:
        for task in extract(path, target)[1]:
            key = tvm_ffi.structural_hash(task.mod)
            same = [i for i in by_hash.get(key, []) if tvm_ffi.structural_equal(merged[i][0].mod, task.mod)]
            if same:
                first, weight, stems = merged[same[0]]
                merged[same[0]] = (first, weight + int(task.weight), stems + [path.stem])
            else:
                by_hash.setdefault(key, []).append(len(merged))
                merged.append((task, int(task.weight), [path.stem]))
    names: set[str] = set()
    tasks = []
    for task, weight, _ in merged:
        name, n = task.task_name, 1
        while name in names:
            name, n = f"{task.task_name}_{n}", n + 1
        names.add(name)
        tasks.append(ms.ExtractedTask(name, task.mod, task.target, list(task.dispatched), weight))
    return tasks, [stems for _, _, stems in merged]


def tune_model(models: Path | list[Path], db_root: Path, target: Any, *,
               time_budget_s: float | None = None,
               trials: int | None = None, timer: Timer | None = None,
               on_progress: Callable[[TuneProgress], None] | None = None,
               trials_per_iter: int = DEFAULT_TRIALS_PER_ITER, seed: int | None = None,
               verbose: bool = False, emulated: bool = False) -> TuneSummary:
    """Tune every task of ``models`` for ``target`` into ``db_root``; returns a summary.

    ``models``: one ONNX file, or several (a bundle's TVM segments) that share the
    budget and the round-robin scheduler; a task occurring in several is tuned once.
    Stops after ``time_budget_s`` (checked after each measured batch, so a run may
    overshoot by one batch) or ``trials`` measurements in total, whichever comes
    first. ``timer`` times one candidate (default: ``local_timer``; use
    ``agent_timer(client)`` to measure on a device; ``emulated``: that device is an
    emulator, and the summary and progress say so). Records already in the database
    are kept and seed the search. MetaSchedule's own logs go to ``<database>/logs``
    (and to stdout with ``verbose``).
    """
    import logging

    from tvm.s_tir import meta_schedule as ms

    if time_budget_s is None and trials is None:
        raise UsageError("give a time budget (--time-budget SECONDS) or a trial count (--trials N)")
    if timer is None and is_cross(target):
        raise UsageError(f"candidates for {target_key(target)} cannot run here; "
                         "measure them on the device with --device URL")
    os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    os.environ.setdefault("TVM_BIND_THREADS", "0")  # see docs/tvm-notes.md, "Threads"
    start = time.monotonic()
    paths = [Path(models)] if isinstance(models, (str, Path)) else [Path(m) for m in models]
    extracted, occurs = _merge(paths, target)
    database = open_database(db_root, target, create=True)
    if emulated:
        mark_emulated(db_root, target)
    logs = str(database_dir(db_root, target))  # MetaSchedule writes its logs to <this>/logs
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    for handler in list(ms_logger.handlers):  # an earlier run's files; unnamed ones crash its config
        ms_logger.removeHandler(handler)
        handler.close()
    ms_logger.setLevel(logging.INFO if verbose else logging.WARNING)
    workdir = tempfile.mkdtemp(prefix="edgert-tune-")  # candidates, deleted as they are measured
    try:
        _cpu_tensor_intrinsics()
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            extracted, work_dir=logs, seed=seed)
        where = dict(zip((t.task_name for t in extracted), occurs))
        states = [TaskState(c.task_name, float(w), where[c.task_name]) for c, w in zip(contexts, weights)]
        if not contexts:
            return TuneSummary(Path(db_root), target_key(target), [], 0, 0.0, "search", emulated)
        stopped = ["search"]
        budget_trials = trials if trials is not None else 1 << 30
        deadline = start + time_budget_s if time_budget_s is not None else None
        watch = _callback(states, deadline, start, time_budget_s, on_progress, stopped, emulated)
        ms.tune_tasks(
            tasks=contexts, task_weights=weights, work_dir=logs,
            max_trials_global=budget_trials, max_trials_per_task=budget_trials,
            num_trials_per_iter=trials_per_iter, builder=_make_builder(workdir),
            runner=_make_runner(timer or local_timer), database=database,
            measure_callbacks=ms.measure_callback.MeasureCallback.create("default") + [watch],
            # round-robin joins each batch as soon as it is measured; "gradient" joins nothing
            # until every task has had a batch (minutes for a ResNet), so a kill lost it all
            task_scheduler="round-robin")
        total = sum(s.trials for s in states)
        if stopped == ["search"] and trials is not None and total >= trials:
            stopped = ["trials"]
        return TuneSummary(Path(db_root), target_key(target), states, total,
                           time.monotonic() - start, stopped[0], emulated)
    except Exception as exc:
        if isinstance(exc, (UsageError, BackendError)):
            raise
        names = ", ".join(str(p) for p in paths)
        raise BackendError(f"MetaSchedule tuning of {names} failed: {type(exc).__name__}: {exc}",
                           path=names) from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def format_progress(p: TuneProgress) -> str:
    """One status line: tasks measured, trials, best total latency of the tuned kernels, time."""
    best = f"{p.best_ms:.3f} ms" if p.best_ms is not None else "-"
    budget = f"/{p.budget_s:.0f}" if p.budget_s is not None else ""
    label = " [EMULATED]" if p.emulated else ""
    return (f"{p.tasks_measured}/{p.tasks_total} tasks, {p.trials} trials, "
            f"best {best} (tuned kernels{label}), {p.elapsed_s:.0f}{budget} s")


def summary_line(summary: TuneSummary, model: Path) -> str:
    """What ``edgert tune`` prints at the end: tasks tuned, trials, why it stopped, the tuned
    kernels' total latency (labelled when timed under emulation) and the database."""
    name = model.name
    if model.suffix == ".edgert":
        name += f" (TVM segments {', '.join(sorted({m for t in summary.tasks for m in t.models}))})"
    measured = sum(t.best_us is not None for t in summary.tasks)
    best = summary.best_ms
    label = " [EMULATED: timed under emulation, not the board's speed]" if summary.emulated else ""
    return (f"{name}: {measured}/{len(summary.tasks)} tasks tuned, {summary.trials} trials "
            f"in {summary.elapsed_s:.0f} s (stopped by {summary.stopped_by}); "
            f"tuned kernels {best if best is not None else 0:.3f} ms{label}; database {summary.database}")


def summary_json(summary: TuneSummary) -> str:
    return json.dumps(summary.to_dict(), indent=1)
