"""Search per-layer width configurations under a latency (and energy) budget, OFA style.

The space is every combination of the file's level widths per prunable group (the widths
its shared weights were trained for, and the ones the latency table measured). Latency and
energy come from the table (``lut.predict``, corrected), accuracy from an evaluation
(``evaluate``), cached per configuration since it is the expensive part.

A space of at most ``exhaustive_up_to`` configurations is evaluated whole (the digits CNN
has 4^4 = 256), which gives the exact Pareto set. Otherwise evolution (Once-for-All's
search, made multi-objective): start from the uniform levels and
random configurations; every generation, parents are drawn from the Pareto fronts of all
frequencies plus the best configurations under the budget at the target frequency; children
come by crossover (each group's width from either parent) and mutation (a group moves to a
neighbouring width). The result is the Pareto set per frequency over everything evaluated
(no configuration in it is beaten on latency, energy where measured, and accuracy at once),
stored with every uniform level added (``stored_set``: the levels are always candidates), and
the best configuration under the budget. With the sets, the file gets the graph of every
configuration in them (``config_graph``), so a device runs them without onnx.

Host-only: builds graphs with onnx.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgert.errors import UsageError

from . import config as C
from . import lut, tables, values
from .runtime import VariantModel

SCHEMA = tables.SCHEMAS[tables.PARETO]
MAX_POPULATION = MAX_GENERATIONS = 10_000
MAX_EXHAUSTIVE = 1_000_000


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    population: int = 24
    generations: int = 10
    mutation: float = 0.2  # chance that a child's group moves to a neighbouring width
    parents: int = 12
    seed: int = 0
    exhaustive_up_to: int = 512  # a space this small is evaluated whole (the exact Pareto set)

    def __post_init__(self) -> None:
        # the CLI's options first, by their names; each evaluation runs the model, so the caps are
        # far beyond any useful search but keep a typo from running for ever
        for option, value, low, high in (("--population", self.population, 2, MAX_POPULATION),
                                         ("--generations", self.generations, 0, MAX_GENERATIONS),
                                         ("--exhaustive-up-to", self.exhaustive_up_to, 0, MAX_EXHAUSTIVE)):
            if not low <= value <= high:
                raise UsageError(f"search: {option} must be {low}..{high}, got {value}")
        if not 0 <= self.mutation <= 1 or self.parents < 2:
            raise UsageError("search: need 0 <= mutation <= 1 and parents >= 2")


@dataclasses.dataclass(frozen=True)
class Candidate:
    config: C.Config
    accuracy: float
    latency_ms: tuple[float, ...]  # per table frequency, corrected prediction
    energy_mj: tuple[float, ...] | None

    def to_dict(self, j: int, **extra: Any) -> dict[str, Any]:
        out = {"config": self.config.encode(), "key": self.config.key, "accuracy": self.accuracy,
               "latency_ms": self.latency_ms[j], **extra}
        if self.energy_mj is not None:
            out["energy_mj"] = self.energy_mj[j]
        return out


def dominates(a: Candidate, b: Candidate, j: int) -> bool:
    """``a`` is no worse than ``b`` on every objective at frequency ``j`` and better on one."""
    ka, kb = _objectives(a, j), _objectives(b, j)
    return all(x <= y for x, y in zip(ka, kb)) and ka != kb


def _objectives(c: Candidate, j: int) -> tuple[float, ...]:
    energy = () if c.energy_mj is None else (c.energy_mj[j],)
    return (c.latency_ms[j], *energy, -c.accuracy)


def pareto(cands: Sequence[Candidate], j: int) -> list[Candidate]:
    """The non-dominated candidates at frequency ``j``, fastest first."""
    unique = list({c.config: c for c in cands}.values())
    front = [c for c in unique if not any(dominates(o, c, j) for o in unique)]
    return sorted(front, key=lambda c: (c.latency_ms[j], -c.accuracy))


def stored_set(cands: Sequence[Candidate], j: int, levels: Sequence[C.Config]) -> list[dict[str, Any]]:
    """The set stored for frequency ``j``: the Pareto front plus every uniform level, fastest
    first. A level is marked ``level`` (its index) and, when the front beats it on *predicted*
    latency, ``dominated``: predictions err, and with the levels in the set a choice made on
    measured latency among its members can never be worse than the best uniform level."""
    front = pareto(cands, j)
    on_front = {c.config for c in front}
    by_config = {c.config: c for c in cands}
    index = {config: i for i, config in enumerate(levels)}
    members = front + [by_config[config] for config in levels if config not in on_front]
    members.sort(key=lambda c: (c.latency_ms[j], -c.accuracy))
    return [c.to_dict(j, **({"level": index[c.config]} if c.config in index else {}),
                      **({} if c.config in on_front else {"dominated": True})) for c in members]


def fits(c: Candidate, j: int, latency_ms: float, energy_mj: float | None) -> bool:
    return c.latency_ms[j] <= latency_ms and (energy_mj is None or (c.energy_mj is not None
                                                                     and c.energy_mj[j] <= energy_mj))


def best_under(cands: Sequence[Candidate], j: int, latency_ms: float, energy_mj: float | None
               ) -> Candidate | None:
    ok = [c for c in cands if fits(c, j, latency_ms, energy_mj)]
    return max(ok, key=lambda c: (c.accuracy, -c.latency_ms[j])) if ok else None


class Searcher:
    def __init__(self, meta: dict[str, Any], table: dict[str, Any], score: Callable[[C.Config], float],
                 settings: SearchSettings) -> None:
        self.meta, self.table, self.score, self.settings = meta, table, score, settings
        self.widths = C.candidate_widths(meta)
        self.rng = random.Random(settings.seed)
        self.seen: dict[C.Config, Candidate] = {}
        self.energy = all("energy_mj" in b for b in table["blocks"])

    def evaluate(self, config: C.Config) -> Candidate:
        if config not in self.seen:
            n = len(self.table["frequencies"])
            latency = tuple(lut.predict(self.table, config, j) for j in range(n))
            energy = tuple(lut.predict(self.table, config, j, quantity="energy_mj") for j in range(n)) \
                if self.energy else None
            self.seen[config] = Candidate(config, float(self.score(config)), latency, energy)
        return self.seen[config]

    def random_config(self) -> C.Config:
        return C.make(self.meta, {g: self.rng.choice(ws) for g, ws in self.widths.items()})

    def child(self, a: C.Config, b: C.Config) -> C.Config:
        da, db = a.as_dict(), b.as_dict()
        kept = {}
        for g, ws in self.widths.items():
            w = da[g] if self.rng.random() < 0.5 else db[g]
            if self.rng.random() < self.settings.mutation:
                i = ws.index(w) + self.rng.choice((-1, 1))
                w = ws[min(max(i, 0), len(ws) - 1)]
            kept[g] = w
        return C.make(self.meta, kept)

    def run(self, j: int, latency_ms: float, energy_mj: float | None) -> list[Candidate]:
        s = self.settings
        groups = sorted(self.widths)
        if math.prod(len(self.widths[g]) for g in groups) <= s.exhaustive_up_to:
            for combo in itertools.product(*(self.widths[g] for g in groups)):
                self.evaluate(C.make(self.meta, dict(zip(groups, combo))))
            return list(self.seen.values())
        population = [C.of_level(self.meta, i) for i in range(len(self.meta["levels"]))]
        population += [self.random_config() for _ in range(max(0, s.population - len(population)))]
        for config in population:
            self.evaluate(config)
        for _ in range(s.generations):
            pool = list(self.seen.values())
            fronts = {c.config for k in range(len(self.table["frequencies"])) for c in pareto(pool, k)}
            under = sorted((c for c in pool if fits(c, j, latency_ms, energy_mj)),
                           key=lambda c: -c.accuracy)[:s.parents // 2]
            parents = list(fronts | {c.config for c in under})
            self.rng.shuffle(parents)
            parents = parents[:s.parents] if len(parents) > s.parents else parents
            if len(parents) < 2:
                parents += [self.random_config() for _ in range(2 - len(parents))]
            for _ in range(s.population):
                self.evaluate(self.child(*self.rng.sample(parents, 2)))
        return list(self.seen.values())


def search(path: str | Path, *, latency_ms: float, frequency: float, energy_mj: float | None = None,
           accuracy: str | Callable[[VariantModel], float] = "proxy", settings: SearchSettings | None = None,
           threads: int | None = 1, write: bool = True) -> dict[str, Any]:
    """``edgert search``: the best configuration under the budget at ``frequency`` and the Pareto set
    at every frequency of the table; stored in the file as ``ofa/pareto`` unless ``write`` is False.
    ``accuracy``: "proxy", "digits", "MODULE:FUNCTION" or the evaluation itself."""
    from . import config_graph, evaluate

    latency_ms = values.number(latency_ms, "the latency budget (ms)")  # NaN/inf would be stored as non-JSON
    if energy_mj is not None:
        energy_mj = values.number(energy_mj, "the energy budget (mJ)")
    table = lut.read(path)
    j = lut.frequency_index(table, frequency)
    if write:
        tables.check_writable(path)
    if energy_mj is not None and not all("energy_mj" in b for b in table["blocks"]):
        raise UsageError(f"{path}'s table has no energy (no power sensor when `edgert lut` ran): "
                         "search with --latency-ms only")
    settings = settings or SearchSettings()
    t0 = time.time()
    with VariantModel(path, threads=threads, config_budget=0.5, graph_builder=config_graph.build) as vm:
        meta = vm._file.meta
        if accuracy == "proxy":
            mass = evaluate.importance_mass(meta, vm._file.tensors)

            def score(config: C.Config) -> float:
                return evaluate.proxy_score(mass, config)
        else:
            fn = evaluate.resolve(accuracy) if isinstance(accuracy, str) else accuracy
            name = accuracy if isinstance(accuracy, str) else getattr(fn, "__qualname__", repr(fn))

            def score(config: C.Config) -> float:
                vm.select_config(config)
                return evaluate.checked_score(fn, vm, name)

        searcher = Searcher(meta, table, score, settings)
        pool = searcher.run(j, latency_ms, energy_mj)
        levels = [C.of_level(meta, i) for i in range(len(meta["levels"]))]
        fronts = [stored_set(pool, k, levels) for k in range(len(table["frequencies"]))]
        # a device runs these without onnx: their graphs go into the file with the sets
        graphs = config_graph.graphs_to_store(
            meta, vm._file.tensors, dict.fromkeys(C.decode(meta, e["config"]) for front in fronts for e in front))
    best = best_under(pool, j, latency_ms, energy_mj)
    result = {
        "schema": SCHEMA, "accuracy": accuracy if isinstance(accuracy, str) else
        f"{getattr(accuracy, '__module__', '?')}:{getattr(accuracy, '__qualname__', '?')}",
        "proxy": accuracy == "proxy",
        "frequencies": table["frequencies"], "frequency_unit": table["frequency_unit"],
        "emulated": table["emulated"], "fixture": table.get("fixture", False),
        "energy_status": table.get("energy_status"), "lut_measured_unix": table["measured_unix"],
        "pareto": fronts,
        "query": {"latency_ms": latency_ms, "energy_mj": energy_mj, "frequency": table["frequencies"][j]},
        "best": best.to_dict(j) if best else None,
        "evaluated": len(pool), "settings": dataclasses.asdict(settings), "seconds": round(time.time() - t0, 1),
    }
    if write:
        tables.store(path, {tables.PARETO: result}, graphs)
    return result


def read(path: str | Path) -> dict[str, Any]:
    result = tables.read(path, tables.PARETO)
    if result is None:
        raise UsageError(f"{path} has no Pareto sets: run `edgert search {path} ...` first", path=str(path))
    return result
