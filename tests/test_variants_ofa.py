"""lut, search and the Pareto-set adaptive model on a small real CNN (random weights, real ORT).

Timing numbers here are whatever this machine gives: the tests check structure, storage,
budgets and dominance, never speed.
"""
from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgert.cli import main as cli_main
from edgert.errors import BundleError, UsageError
from edgert.variants import aiofile, tables
from edgert.variants import config as C
from edgert.variants import config_graph, lut, search
from edgert.variants import open as open_variants
from edgert.variants.adaptive_configs import ConfigAdaptiveModel
from edgert.variants.frequency import FrequencySetting
from edgert.variants.prune import prune

FAST = lut.LutSettings(window_ms=1.0, repeats=1, checks=3)


def _cnn(path: Path) -> Path:
    """conv-BN-relu, conv-BN-relu with a residual add, strided conv-BN-relu, GAP, Gemm."""
    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def conv_bn(name: str, x: str, cin: int, cout: int, stride: int = 1, relu: bool = True) -> str:
        inits.append(numpy_helper.from_array(rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.2,
                                             f"{name}.w"))
        for suffix, value in (("g", rng.uniform(0.2, 1.5, cout)), ("b", rng.standard_normal(cout) * 0.1),
                              ("m", rng.standard_normal(cout) * 0.1), ("v", rng.uniform(0.5, 1.5, cout))):
            inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}.{suffix}"))
        nodes.append(helper.make_node("Conv", [x, f"{name}.w"], [f"{name}.c"], name=name, pads=[1, 1, 1, 1],
                                      strides=[stride, stride]))
        nodes.append(helper.make_node("BatchNormalization", [f"{name}.c"] + [f"{name}.{s}" for s in "gbmv"],
                                      [f"{name}.bn"], name=f"{name}_bn"))
        if not relu:
            return f"{name}.bn"
        nodes.append(helper.make_node("Relu", [f"{name}.bn"], [f"{name}.r"], name=f"{name}_relu"))
        return f"{name}.r"

    h = conv_bn("stem", "x", 1, 16)
    b = conv_bn("b1b", conv_bn("b1a", h, 16, 16), 16, 16, relu=False)
    nodes.append(helper.make_node("Add", [h, b], ["res"], name="res"))
    nodes.append(helper.make_node("Relu", ["res"], ["res.r"], name="res_relu"))
    d = conv_bn("down", "res.r", 16, 32, stride=2)
    nodes.append(helper.make_node("GlobalAveragePool", [d], ["gap"], name="gap"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="flat"))
    inits.append(numpy_helper.from_array(rng.standard_normal((10, 32)).astype(np.float32), "fc.w"))
    inits.append(numpy_helper.from_array(np.zeros(10, np.float32), "fc.b"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc", transB=1))
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    src = path.with_suffix(".onnx")
    onnx.save(model, str(src))
    prune(src, [0, 0.5, 0.75], path)
    return path


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file with a latency table at two (unpinned, local) settings."""
    path = _cnn(tmp_path_factory.mktemp("ofa") / "cnn.aio")
    lut.measure(path, [FrequencySetting(1.0, label="local a"), FrequencySetting(2.0, label="local b")], FAST)
    return path


def test_lut_is_stored_with_provenance_and_covers_every_width(measured: Path) -> None:
    table = lut.read(measured)
    meta = aiofile.read_meta(measured)
    widths = C.candidate_widths(meta)
    assert table["schema"] == lut.SCHEMA and table["frequencies"] == [1.0, 2.0]
    assert table["device"]["transport"] == "local" and table["emulated"] is False
    assert table["device"]["hostname"] and table["settings"]["repeats"] == 1
    for block in table["blocks"]:
        expected = int(np.prod([len(widths[g]) for g in block["groups"]]))
        assert len(block["latency_ms"]) == expected
        assert all(len(v) == 2 for v in block["latency_ms"].values())
    convs = [b for b in table["blocks"] if b["ops"][0] == "Conv"]
    assert [b["ops"] for b in convs][0] == ["Conv", "BatchNormalization", "Relu"]  # fused chain
    assert all(len(b["groups"]) >= 1 for b in convs)
    assert len(table["checks"]) == 3 + len(meta["levels"])
    assert {"a", "b"} <= set(table["correction"][0]) and "p50" in table["prediction_error"][1]["sum_of_blocks"]
    config = C.of_level(meta, 1)
    raw = lut.predict(table, config, 0, corrected=False)
    by_hand = table["overhead_ms"][0] + sum(
        b["latency_ms"][lut.width_key([config.as_dict()[g] for g in b["groups"]])][0] for b in table["blocks"])
    assert raw == pytest.approx(by_hand)


def test_tables_are_covered_by_the_checksum(measured: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.aio"
    copy.write_bytes(measured.read_bytes())
    raw = bytearray(copy.read_bytes())
    start = bytes(raw).index(b'"schema":"edgert.aio.lut/1"')
    raw[start + 1] ^= 0x01  # one flipped bit inside the stored table
    copy.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="checksum"):
        lut.read(copy)


def test_search_respects_budget_and_pareto_dominance(measured: Path) -> None:
    table = lut.read(measured)
    meta = aiofile.read_meta(measured)
    levels = [lut.predict(table, C.of_level(meta, i), 0) for i in range(len(meta["levels"]))]
    budget = (levels[0] + levels[-1]) / 2
    result = search.search(measured, latency_ms=budget, frequency=1.0,  # evolution, not the whole space
                           settings=search.SearchSettings(population=8, generations=3, exhaustive_up_to=0))
    best = result["best"]
    assert best is not None and best["latency_ms"] <= budget
    assert lut.predict(table, C.decode(meta, best["config"]), 0) == pytest.approx(best["latency_ms"])
    for j, stored in enumerate(result["pareto"]):
        # every uniform level is in every stored set, marked; the rest is the Pareto front
        assert sorted(e["level"] for e in stored if "level" in e) == list(range(len(meta["levels"])))
        assert all(e["config"] == C.of_level(meta, e["level"]).encode() for e in stored if "level" in e)
        front = [e for e in stored if not e.get("dominated")]
        assert front and all("level" in e for e in stored if e.get("dominated"))
        for a in front:
            for b in front:  # nobody in a front is dominated by another member
                assert not (a["latency_ms"] <= b["latency_ms"] and a["accuracy"] >= b["accuracy"]
                            and (a["latency_ms"], a["accuracy"]) != (b["latency_ms"], b["accuracy"])) or a is b
        assert [e["latency_ms"] for e in stored] == sorted(e["latency_ms"] for e in stored)
        for e in stored:  # a dominated level is beaten on predicted latency and accuracy by a front member
            if e.get("dominated"):
                assert any(f["latency_ms"] <= e["latency_ms"] and f["accuracy"] >= e["accuracy"] for f in front)
    # the best under the budget is at least as good as every uniform level that fits
    fitting = [i for i, t in enumerate(levels) if t <= budget]
    from edgert.variants.evaluate import importance_mass, proxy_score

    f = aiofile.read(measured)
    mass = importance_mass(f.meta, f.tensors)
    f.close()
    assert all(best["accuracy"] >= proxy_score(mass, C.of_level(meta, i)) for i in fitting)
    stored = search.read(measured)
    assert stored["pareto"] == json.loads(json.dumps(result["pareto"]))
    assert lut.read(measured)["blocks"] == table["blocks"]  # the lut survived the rewrite


def test_a_small_space_is_searched_whole(measured: Path) -> None:
    """At most ``exhaustive_up_to`` configurations: every one is evaluated, so the stored front
    is the exact Pareto set of the space."""
    meta = aiofile.read_meta(measured)
    widths = C.candidate_widths(meta)
    space = int(np.prod([len(ws) for ws in widths.values()]))
    result = search.search(measured, latency_ms=1e6, frequency=1.0, write=False,
                           settings=search.SearchSettings(population=2, generations=0, exhaustive_up_to=space))
    assert result["evaluated"] == space
    table = lut.read(measured)
    from edgert.variants.evaluate import importance_mass, proxy_score

    f = aiofile.read(measured)
    mass = importance_mass(f.meta, f.tensors)
    f.close()
    points = {}
    for combo in itertools.product(*(widths[g] for g in sorted(widths))):
        c = C.make(meta, dict(zip(sorted(widths), combo)))
        points[c.encode()] = (lut.predict(table, c, 0), proxy_score(mass, c))
    exact = {k for k, (t, a) in points.items()
             if not any(t2 <= t and a2 >= a and (t2, a2) != (t, a) for t2, a2 in points.values())}
    front = {e["config"] for e in result["pareto"][0] if not e.get("dominated")}
    assert front == exact


def test_search_refuses_bad_queries(measured: Path) -> None:
    with pytest.raises(UsageError, match="no frequency 3"):
        search.search(measured, latency_ms=1.0, frequency=3.0)
    with pytest.raises(UsageError, match="no energy"):
        search.search(measured, latency_ms=1.0, energy_mj=1.0, frequency=1.0)
    with pytest.raises(UsageError, match="MODULE:FUNCTION"):
        search.search(measured, latency_ms=1.0, frequency=1.0, accuracy="nonsense")
    with pytest.raises(UsageError, match="--population must be 2..10000"):  # 1e26 ran for ever
        search.SearchSettings(population=10**26, exhaustive_up_to=0)
    with pytest.raises(UsageError, match="--generations"):
        search.SearchSettings(generations=-1)


def test_search_with_a_user_evaluation(measured: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_eval.py").write_text(
        "import numpy as np\n"
        "def score(model):\n"
        "    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)\n"
        "    return float(np.abs(model.run({'x': x})[0]).sum()) + model.configs.built * 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = search.search(measured, latency_ms=1e6, frequency=2.0, accuracy="my_eval:score",
                           settings=search.SearchSettings(population=4, generations=1), write=False)
    assert result["best"] is not None and not result["proxy"]
    best = max((e for front in result["pareto"] for e in front), key=lambda e: e["accuracy"])
    assert result["best"]["accuracy"] == pytest.approx(best["accuracy"])  # no budget: the top score


@pytest.mark.parametrize("body, message", [
    ("def score(model):\n    raise RuntimeError('boom')\n", "raised RuntimeError: boom"),
    ("def score(model):\n    return 'high'\n", "returned 'high'"),
    ("def score(model):\n    return float('nan')\n", "returned nan"),
    ("def score(model):\n    return True\n", "returned True"),
    ("def score():\n    return 1.0\n", "raised TypeError"),
    ("raise ValueError('at import')\n", "cannot import bad_eval: ValueError"),
    ("def score(model:\n", "cannot import bad_eval: SyntaxError"),
])
def test_a_bad_user_evaluation_is_one_line(measured: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           body: str, message: str) -> None:
    """Tracebacks before, or NaN and True stored as accuracies (NaN made all 256 configurations Pareto)."""
    module = f"bad_eval_{abs(hash(body))}"  # one module per case: Python caches imports by name
    (tmp_path / f"{module}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = measured.read_bytes()
    with pytest.raises(UsageError, match=re.escape(message.replace("bad_eval", module))):
        search.search(measured, latency_ms=1e6, frequency=2.0, accuracy=f"{module}:score",
                      settings=search.SearchSettings(population=4, generations=1))
    assert measured.read_bytes() == before
    with pytest.raises(UsageError, match="cannot import"):
        search.search(measured, latency_ms=1e6, frequency=2.0, accuracy=".rel:score")


def test_adaptive_model_runs_pareto_configurations(measured: Path) -> None:
    search.search(measured, latency_ms=1e6, frequency=1.0, settings=search.SearchSettings(population=6,
                                                                                          generations=2))
    pareto = search.read(measured)
    front_keys = [{e["key"] for e in front} for front in pareto["pareto"]]
    freq = {"now": 1.0}
    feeds = {"x": np.zeros((1, 1, 8, 8), np.float32)}
    fastest = min(e["latency_ms"] for e in pareto["pareto"][0])
    model = ConfigAdaptiveModel(measured, budget_ms=1e6, frequency_source=lambda: freq["now"], threads=1)
    try:
        model.run(feeds)
        top = max(pareto["pareto"][0], key=lambda e: e["accuracy"])
        assert model.current["key"] == top["key"]  # roomy budget: the most accurate
        model.budget_ms = fastest * 1.0000001
        for _ in range(10):
            model.run(feeds)
        assert all(c.config in front_keys[0] for c in model.choices)
        freq["now"] = 2.5  # above the table: the fastest setting's set
        model._freq = None
        model.run(feeds)
        assert model.choices[-1].config in front_keys[1]
        assert len(model.model.configs) >= len(front_keys[0] | front_keys[1]) - 1
    finally:
        model.close()
    bad = {**pareto, "pareto": [[{**e, "latency_ms": float("nan")} for e in front] for front in pareto["pareto"]]}
    with pytest.raises(UsageError, match="the ofa/pareto table given is malformed"):  # was used as is
        ConfigAdaptiveModel(measured, budget_ms=1e6, frequency_source=lambda: 1.0, threads=1, pareto=bad)


def test_adaptive_model_keeps_a_given_models_pareto_sessions(measured: Path) -> None:
    """A VariantModel opened by the caller (default configuration budget) handed in: every
    Pareto configuration stays built, so walking them all builds nothing more."""
    search.search(measured, latency_ms=1e6, frequency=1.0, settings=search.SearchSettings(population=6,
                                                                                          generations=2))
    members = {e["key"] for front in search.read(measured)["pareto"] for e in front}
    vm = open_variants(measured, threads=1)
    model = ConfigAdaptiveModel(vm, budget_ms=1e6, frequency_source=lambda: 1.0)
    try:
        built = vm.configs.built
        assert built == len(members) == len(vm.configs)
        for front in model.sets:
            for entry in front:
                vm.select_config(entry["cfg"])
        assert vm.configs.built == built
        for bad in (0.0, -1.0, float("nan")):
            model._freq = None
            model.frequency_source = lambda: bad  # noqa: B023 - read at once
            with pytest.raises(UsageError, match="frequency source"):
                model.run({"x": np.zeros((1, 1, 8, 8), np.float32)})
    finally:
        model.close()


def test_cli_lut_and_search_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _cnn(tmp_path / "cli.aio")
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["search", str(path), "--latency-ms", "5", "--freq", "1"])
    assert exit_info.value.code != 0
    assert "no latency table" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["lut", str(path), "--emulated", "1.0", "--cpu-freqs", "600000"])
    assert "choose one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main(["lut", str(path), "--device", "ssh://pi@board", "--emulated", "1.0", "--clock", "cpu"])
    assert "cannot see an emulated CPU quota" in capsys.readouterr().err  # refused before connecting
    before = path.read_bytes()
    for args, message in ((["--emulated", "1.0", "--window-ms", "nan"], "window_ms"),
                          (["--emulated", "1.0", "--window-ms", "inf"], "window_ms"),
                          (["--cpu-freqs", "nan"], "positive number"), (["--cpu-freqs", "1e400"], "positive number"),
                          (["--cpu-freqs", "1400000,1.4GHz"], "listed twice"), (["--emulated", "1,1"], "twice"),
                          (["--emulated", "1", "--threads", "99999999999"], "threads"),
                          (["--emulated", "1", "--threads", "-1"], "threads")):
        with pytest.raises(SystemExit):  # tracebacks, a duplicate setting stored, or -1 threads stored
            cli_main(["lut", str(path), *args])
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (args, err)
    assert path.read_bytes() == before


def test_lut_on_emulated_levels_is_labelled(tmp_path: Path) -> None:
    from edgert.device_agents.emulated import EmulatedDomain
    from edgert.variants.lut_run import EMULATED_WINDOW_PERIODS

    if not EmulatedDomain().available():
        pytest.skip("no writable cgroup with cpu bandwidth control")
    path = _cnn(tmp_path / "emu.aio")
    settings, unit, emulated = lut.settings_for(None, "policy0", (1.0, 0.5))
    table = lut.measure(path, settings, FAST, unit=unit, emulated=emulated)
    assert table["emulated"] is True and table["device"]["emulated"] is True
    assert table["frequencies"] == [0.5, 1.0] and table["labels"] == ["emulated 0.5", "emulated 1"]
    # windows of whole quota periods; the half level's quota (5 ms in a 10 ms period) is under
    # two kernel bandwidth slices (5 ms each by default), so it runs at a longer period
    periods = [EmulatedDomain().period_for(f) / 1e3 for f in table["frequencies"]]
    assert [t["period_ms"] for t in table["timing"]] == periods
    assert periods[1] == 10.0 and periods[0] >= 10.0
    assert all(t["window_ms"] == EMULATED_WINDOW_PERIODS * p for t, p in zip(table["timing"], periods))
    assert tables.read(path, tables.LUT)["frequency_unit"] == "emulated fraction"


def test_cli_lut_then_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from edgert.device_agents.emulated import EmulatedDomain

    if not EmulatedDomain().available():
        pytest.skip("no writable cgroup with cpu bandwidth control")
    path = _cnn(tmp_path / "cli.aio")
    cli_main(["lut", str(path), "--emulated", "1.0", "--window-ms", "1", "--repeats", "1", "--checks", "2"])
    out = capsys.readouterr().out
    assert "EMULATED" in out and "sum of blocks vs whole network p50" in out
    cli_main(["search", str(path), "--latency-ms", "1000", "--freq", "1.0", "--population", "4",
              "--generations", "1"])
    out = capsys.readouterr().out
    assert "best: " in out and "proxy score" in out and "(EMULATED levels, not clocks)" in out
    best = search.read(path)["best"]
    assert C.decode(aiofile.read_meta(path), best["config"]).key == best["key"]
    before = path.read_bytes()
    for flag, value in (("--latency-ms", "nan"), ("--latency-ms", "inf"), ("--energy-mj", "nan")):
        with pytest.raises(SystemExit):  # NaN was stored in ofa/pareto (not JSON) and reported as a budget
            cli_main(["search", str(path), "--latency-ms", "1000", "--freq", "1.0", flag, value])
        assert "finite" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_energy_table_from_a_power_rail_and_energy_budget(tmp_path: Path) -> None:
    """Power from the Jetson Orin fixture's rails (constant fixture values, not a measurement):
    the table then has energy per block, and search honours an energy budget."""
    fixture = Path(__file__).parent / "fixtures" / "sysfs" / "jetson_orin"
    path = _cnn(tmp_path / "energy.aio")
    table = lut.measure(path, [FrequencySetting(1.0, label="fixture")], FAST, power="auto",
                        sysfs_root=str(fixture))
    assert table["power_source"] and all("energy_mj" in b for b in table["blocks"])
    assert all(v[0] > 0 for b in table["blocks"] for v in b["energy_mj"].values())
    meta = aiofile.read_meta(path)
    energies = [lut.predict(table, C.of_level(meta, i), 0, quantity="energy_mj") for i in range(3)]
    budget = float(np.median(energies))
    result = search.search(path, latency_ms=1e6, energy_mj=budget, frequency=1.0,
                           settings=search.SearchSettings(population=6, generations=2))
    assert result["best"]["energy_mj"] <= budget
    assert all("energy_mj" in e for e in result["pareto"][0])
    assert result["energy_status"] == "fixture"


def test_search_output_says_fixture_power_and_which_budget_failed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixture = Path(__file__).parent / "fixtures" / "sysfs" / "jetson_orin"
    path = _cnn(tmp_path / "energy.aio")
    lut.measure(path, [FrequencySetting(1.0, label="fixture")], FAST, power="auto", sysfs_root=str(fixture))
    cli_main(["search", str(path), "--latency-ms", "1000", "--freq", "1", "--energy-mj", "1000",
              "--population", "4", "--generations", "1"])
    assert "mJ (FIXTURE power: not a measurement)" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # the latency budget is met; the energy one is not
        cli_main(["search", str(path), "--latency-ms", "1000", "--freq", "1", "--energy-mj", "1e-9",
                  "--population", "4", "--generations", "1"])
    err = capsys.readouterr().err
    assert "no configuration meets 1000 ms and 1e-09 mJ" in err and "the most frugal" in err and "FIXTURE" in err


def _synthetic(measured: list[float]) -> dict:
    """A table of one block over one group with widths 1..len(measured) (entry = width ms), no
    overhead; check w measured ``measured[w - 1]``."""
    widths = range(1, len(measured) + 1)
    return {"frequencies": [1.0], "overhead_ms": [0.0],
            "blocks": [{"groups": [7], "latency_ms": {str(w): [float(w)] for w in widths}}],
            "checks": [{"config": f"7:{w}", "measured_ms": [m]} for w, m in zip(widths, measured)]}


def test_correction_is_fitted_and_used_only_when_it_helps() -> None:
    table = _synthetic([3.0, 5.0, 7.0, 9.0])  # exactly 2 x sum + 1
    fitted = lut.fit(table)
    assert fitted["correction"][0]["used"] and fitted["correction"][0]["a"] == pytest.approx(2.0)
    assert fitted["prediction_error"][0]["corrected_leave_one_out"]["p50"] == pytest.approx(0.0, abs=1e-9)
    assert lut.predict({**table, **fitted}, C.Config(((7, 3),)), 0) == pytest.approx(7.0)
    exact = lut.fit(_synthetic([1.0, 2.0, 3.0, 4.0]))  # the sum is already right
    assert exact["prediction_error"][0]["sum_of_blocks"]["p50"] == 0.0
    assert not exact["correction"][0]["used"] and exact["correction"][0]["a"] == 1.0
    with pytest.raises(UsageError, match="did not measure"):
        lut.predict(table, C.Config(((7, 5),)), 0)


def test_emulated_levels_time_windows_of_whole_quota_periods() -> None:
    from edgert.variants.lut_run import EMULATED_WINDOW_PERIODS, at_setting

    base = lut.LutSettings(window_ms=30.0)
    assert at_setting(base, FrequencySetting(1.2e6, label="policy0 1200000 kHz")) == base
    emulated = at_setting(base, FrequencySetting(0.5, label="emulated 0.5", period_ms=10.0))
    assert emulated.window_ms == EMULATED_WINDOW_PERIODS * 10.0 and emulated.period_ms == 10.0
    long = at_setting(lut.LutSettings(window_ms=125.0), FrequencySetting(0.5, period_ms=10.0))
    assert long.window_ms == 130.0  # rounded up to whole periods
    with pytest.raises(UsageError, match="period_ms"):
        lut.LutSettings(period_ms=10.0, clock="cpu")


def test_paired_timing_cancels_the_speed_each_period_runs_at() -> None:
    """Two runs costing 1x and 3x the CPU time of one unit, on a CPU whose speed changes every
    15 ms (1x, 2x, 3x slower in turn, as a quota level's periods do here): paired timing gives
    their ratio, 3, and the dearer one's wall time per call, never less than its CPU time."""
    import time as time_module

    from edgert.variants.lut_run import interleaved

    unit = 1e-4

    def burn(units: int) -> None:
        slow = 1 + int(time_module.perf_counter() / 0.015) % 3
        t0 = time_module.process_time()
        while time_module.process_time() - t0 < units * unit * slow:
            pass

    (cheap, _), (dear, _) = interleaved([lambda: burn(1), lambda: burn(3)],
                                        lut.LutSettings(window_ms=40.0, repeats=5, period_ms=10.0))
    assert 2.7 < dear / cheap < 3.3, (dear, cheap)
    assert dear >= 3 * unit * 1e3, dear  # at least the fastest speed's CPU time


def test_interleaved_rounds_change_order() -> None:
    from edgert.variants.lut_run import interleaved

    order: list[int] = []
    runs = [lambda i=i: order.append(i) for i in range(3)]
    interleaved(runs, lut.LutSettings(window_ms=1e-6, repeats=4))  # one call per window
    rounds = [tuple(order[6 + 3 * r: 9 + 3 * r]) for r in range(4)]  # after the calibration calls
    assert all(sorted(r) == [0, 1, 2] for r in rounds) and len(set(rounds)) > 1, rounds


def _stored_graphs(path: Path) -> set[str]:
    f = aiofile.read(path)
    try:
        return {name for name in f.tensors if name.startswith(tables.GRAPHS)}
    finally:
        f.close()


def _unstored(meta: dict, stored: set[str]) -> C.Config:
    """A configuration that is neither a level nor stored in the file."""
    levels = {C.of_level(meta, i) for i in range(len(meta["levels"]))}
    widths = C.candidate_widths(meta)
    for seed in range(1000):
        rng = np.random.default_rng(seed)
        config = C.make(meta, {g: int(rng.choice(ws)) for g, ws in widths.items()})
        if config not in levels and C.CONFIG_GRAPH.format(config.key) not in stored:
            return config
    raise AssertionError("every configuration is stored")


def test_search_stores_the_graphs_of_its_pareto_configurations(measured: Path) -> None:
    meta = aiofile.read_meta(measured)
    levels = {C.of_level(meta, i).key for i in range(len(meta["levels"]))}
    for population in (6, 3):  # a second search replaces the first one's graphs
        search.search(measured, latency_ms=1e6, frequency=1.0,
                      settings=search.SearchSettings(population=population, generations=1, seed=population))
        keys = {e["key"] for front in search.read(measured)["pareto"] for e in front}
        assert _stored_graphs(measured) == {C.CONFIG_GRAPH.format(k) for k in keys - levels}
    assert keys - levels  # the sets hold per-layer configurations, not only levels


def test_a_device_without_onnx_runs_the_stored_pareto_configurations(measured: Path, tmp_path: Path) -> None:
    """Device side (onnx blocked): ConfigAdaptiveModel and select_config build every session from
    graphs stored by `edgert search`; a configuration the file does not store is refused in one
    clear line. Outputs equal those of graphs built afresh on the host."""
    from conftest import run_python

    search.search(measured, latency_ms=1e6, frequency=1.0,
                  settings=search.SearchSettings(population=6, generations=2))
    meta = aiofile.read_meta(measured)
    stored = _stored_graphs(measured)
    unstored = _unstored(meta, stored)
    code = (
        "import json, numpy as np\n"
        "from edgert.errors import UsageError\n"
        "from edgert.variants import ConfigAdaptiveModel, open as open_variants\n"
        "from edgert.variants import config as C\n"
        "x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)\n"
        "model = ConfigAdaptiveModel(sys.argv[1], budget_ms=1e6, frequency_source=lambda: 1.0, threads=1)\n"
        "outputs = {}\n"
        "for entry in model.sets[0]:\n"
        "    model.model.select_config(entry['cfg'])\n"
        "    outputs[entry['config']] = model.model.run({'x': x})[0].tolist()\n"
        "model.run({'x': x})\n"
        "chosen = model.current['config']\n"
        "model.close()\n"
        "with open_variants(sys.argv[1], threads=1) as vm:\n"
        "    try:\n"
        "        vm.select_config(C.decode(vm._file.meta, sys.argv[2]))\n"
        "        refused = None\n"
        "    except UsageError as exc:\n"
        "        refused = str(exc)\n"
        "assert 'onnx' not in sys.modules\n"
        "print(json.dumps({'outputs': outputs, 'chosen': chosen, 'refused': refused}))\n")
    proc = run_python(code, str(measured), unstored.encode(), block=("onnx",))
    assert proc.returncode == 0, proc.stderr
    done = json.loads(proc.stdout)
    front = search.read(measured)["pareto"][0]
    assert set(done["outputs"]) == {e["config"] for e in front}
    assert done["chosen"] == max(front, key=lambda e: e["accuracy"])["config"]  # roomy budget
    assert f"stores no graph for configuration {unstored.key}" in done["refused"]
    assert "edgert search" in done["refused"] and "graph_builder" in done["refused"]
    # the host builds the same configurations from the level-0 graph (a copy without stored graphs)
    bare = tmp_path / "bare.aio"
    shutil.copy(measured, bare)
    tables.store(bare, {}, graphs={})
    assert not _stored_graphs(bare)
    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8)).astype(np.float32)
    with open_variants(bare, threads=1, graph_builder=config_graph.build) as vm:
        for text, out in done["outputs"].items():
            vm.select_config(C.decode(meta, text))
            np.testing.assert_allclose(np.array(out, np.float32), vm.run({"x": x})[0], rtol=1e-5, atol=1e-6)
    with open_variants(bare, threads=1) as vm:  # no builder, nothing stored: the clear error
        config = next(C.decode(meta, e["config"]) for front in search.read(bare)["pareto"] for e in front
                      if C.CONFIG_GRAPH.format(e["key"]) in stored)
        with pytest.raises(UsageError, match="stores no graph"):
            vm.select_config(config)
        vm.select_config(C.of_level(meta, 1))  # levels always have their graph
        assert vm.run({"x": x})[0].shape == (2, 10)


def test_stored_graphs_are_covered_by_the_checksum(measured: Path, tmp_path: Path) -> None:
    search.search(measured, latency_ms=1e6, frequency=1.0, settings=search.SearchSettings(population=6,
                                                                                          generations=1))
    name = sorted(_stored_graphs(measured))[0]
    f = aiofile.read(measured)
    try:
        graph = bytes(f.tensors[name])
    finally:
        f.close()
    copy = tmp_path / "copy.aio"
    raw = bytearray(measured.read_bytes())
    at = bytes(raw).index(graph) + len(graph) // 2
    raw[at] ^= 0x01  # one flipped bit inside a stored graph
    copy.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="checksum"):
        open_variants(copy)


def test_pareto_sets_and_tables_survive_rewrites_and_are_covered_by_the_checksum(tmp_path: Path) -> None:
    """The file round trip: a rewrite keeps the stored sets and graphs byte for byte, a search
    keeps the lut, every byte of both tables is under the data checksum; a new lut removes the
    sets (searched on the old numbers) and keeps the graphs."""
    path = _cnn(tmp_path / "rt.aio")
    lut.measure(path, [FrequencySetting(1.0, label="a")], FAST)
    result = search.search(path, latency_ms=1e6, frequency=1.0,
                           settings=search.SearchSettings(population=6, generations=1))
    before = (lut.read(path), search.read(path), {k: bytes(v) for k, v in _graph_tensors(path).items()})
    assert before[1]["pareto"] == json.loads(json.dumps(result["pareto"])) and before[2]
    tables.store(path, {})  # a rewrite that changes nothing else
    assert (lut.read(path), search.read(path), {k: bytes(v) for k, v in _graph_tensors(path).items()}) == before
    for marker in (b'"schema":"edgert.aio.pareto/1"', b'"schema":"edgert.aio.lut/1"'):
        raw = bytearray(path.read_bytes())
        at = bytes(raw).index(marker) + len(marker) + 5
        raw[at] ^= 0x01
        copy = tmp_path / "flipped.aio"
        copy.write_bytes(bytes(raw))
        with pytest.raises(BundleError, match="checksum"):
            search.read(copy)
    lut.measure(path, [FrequencySetting(1.0, label="b")], FAST)  # a new table: sets removed, graphs kept
    assert lut.read(path)["labels"] == ["b"] and tables.read(path, tables.PARETO) is None
    assert any("Pareto sets searched on the previous table were removed" in w for w in lut.read(path)["warnings"])
    assert {k: bytes(v) for k, v in _graph_tensors(path).items()} == before[2]
    lut.measure(path, [FrequencySetting(1.0, label="c")], FAST)  # no sets to remove: no such warning
    assert not any("Pareto" in w for w in lut.read(path)["warnings"])


def _graph_tensors(path: Path) -> dict[str, np.ndarray]:
    f = aiofile.read(path)
    try:
        return {k: np.array(v) for k, v in f.tensors.items() if k.startswith(tables.GRAPHS)}
    finally:
        f.close()


def _two_head_layers(path: Path) -> Path:
    """Two attention-like layers: x @ Wq, split into heads of 4 by a Reshape with an explicit
    head count, relu, merged back by a Reshape, @ Wo; the pruner removes whole heads."""
    rng = np.random.default_rng(0)
    inits, nodes, h = [], [], "x"
    for i in range(2):
        inits += [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), f"wq{i}"),
                  numpy_helper.from_array(np.array([1, 4, 4], np.int64), f"split{i}"),
                  numpy_helper.from_array(np.array([1, 16], np.int64), f"merge{i}"),
                  numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), f"wo{i}")]
        nodes += [helper.make_node("MatMul", [h, f"wq{i}"], [f"q{i}"], name=f"q{i}"),
                  helper.make_node("Reshape", [f"q{i}", f"split{i}"], [f"qh{i}"], name=f"split{i}"),
                  helper.make_node("Relu", [f"qh{i}"], [f"qr{i}"], name=f"act{i}"),
                  helper.make_node("Reshape", [f"qr{i}", f"merge{i}"], [f"qm{i}"], name=f"merge{i}"),
                  helper.make_node("MatMul", [f"qm{i}", f"wo{i}"], [f"h{i}"], name=f"o{i}")]
        h = f"h{i}"
    graph = helper.make_graph(nodes, "heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info(h, TensorProto.FLOAT, [1, 8])], inits)
    src = path.with_suffix(".onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    prune(src, [0, 0.5], path)
    return path


def test_a_configuration_graph_rewrites_the_attention_head_reshapes(tmp_path: Path) -> None:
    """A per-layer configuration's graph is built from level 0's, whose head Reshapes say 4
    heads: with 2 heads kept in one layer and 4 in the other, the built graph must say so in
    each layer's split and merge constants, and compute that configuration."""
    path = _two_head_layers(tmp_path / "heads.aio")
    meta = aiofile.read_meta(path)
    assert set(meta["template"]["reshapes"]) == {"split0", "merge0", "split1", "merge1"}
    entries = [meta["template"]["reshapes"][f"split{i}"] for i in range(2)]  # [[entry, segments, unit]]
    heads = [(e[0] if isinstance(e[0], list) else e)[1][0][0] for e in entries]
    sizes = C.prunable(meta)  # the two head groups and the width between the layers
    config = C.make(meta, {**sizes, heads[0]: 8})  # not a level: half the heads in layer 0 only
    assert config not in {C.of_level(meta, i) for i in range(len(meta["levels"]))}
    f = aiofile.read(path)
    try:
        built = onnx.load_from_string(config_graph.build(meta, f.tensors, config))
        w = {k: np.array(f.tensors[k]) for k in ("wq0", "wo0", "wq1", "wo1")}
    finally:
        f.close()
    consts = {t.name: numpy_helper.to_array(t).tolist() for t in built.graph.initializer
              if t.name.startswith(("split", "merge"))}
    assert consts == {"split0": [1, 2, 4], "merge0": [1, 8], "split1": [1, 4, 4], "merge1": [1, 16]}
    x = np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)
    h = np.maximum(x @ w["wq0"][:, :8], 0) @ w["wo0"][:8]  # the file's channels: kept prefix first
    want = np.maximum(h @ w["wq1"], 0) @ w["wo1"]
    with open_variants(path, graph_builder=config_graph.build) as vm:
        vm.select_config(config)
        np.testing.assert_allclose(vm.run({"x": x})[0], want, rtol=1e-4, atol=1e-4)
    # the block table cuts such a model too (its shape inference sees the rewritten heads)
    table = lut.measure(path, [FrequencySetting(1.0, label="here")], FAST)
    assert lut.predict(table, config, 0, corrected=False) > 0
    assert {b["ops"][0] for b in table["blocks"]} >= {"MatMul", "Reshape"}


def test_a_new_table_removes_the_pareto_sets_searched_on_the_old_one(tmp_path: Path) -> None:
    path = _cnn(tmp_path / "stale.aio")
    empty = tmp_path / "no-sensors"  # a sysfs tree without rails or counters: auto finds nothing
    empty.mkdir()
    first = lut.measure(path, [FrequencySetting(1.0, label="local")], FAST, power="auto", sysfs_root=str(empty))
    assert any("found no power source" in w for w in first["warnings"])  # it said nothing before
    search.search(path, latency_ms=1e6, frequency=1.0, settings=search.SearchSettings(population=4, generations=1))
    assert tables.read(path, tables.PARETO) is not None
    table = lut.measure(path, [FrequencySetting(2.0, label="local")], FAST)
    assert tables.read(path, tables.PARETO) is None  # its predictions came from the replaced table
    assert any("run `edgert search` again" in w for w in table["warnings"])
    assert lut.read(path)["frequencies"] == [2.0]


@pytest.mark.parametrize("name, change, message", [
    (tables.LUT, lambda t: t.pop("blocks"), "ofa/lut.blocks"),
    (tables.LUT, lambda t: t.update(schema="something.else/9"), "schema"),
    (tables.LUT, lambda t: t.update(frequencies=["a"]), "frequencies"),
    (tables.LUT, lambda t: t["overhead_ms"].clear(), "overhead_ms has 0 values"),
    (tables.LUT, lambda t: t["blocks"][0]["latency_ms"].update({"x": [-5.0]}), "below 0"),
    (tables.PARETO, lambda t: t["pareto"][0][0].pop("latency_ms"), "no latency_ms"),
    (tables.PARETO, lambda t: t["pareto"][0][0].update(accuracy=None), "accuracy"),
    (tables.PARETO, lambda t: t.update(pareto=5), "ofa/pareto.pareto"),
    (tables.PARETO, lambda t: t["pareto"].append([]), "2 sets for 1 frequencies"),
])
def test_a_checksummed_but_malformed_table_is_refused(measured: Path, tmp_path: Path, name: str, change,
                                                      message: str) -> None:
    """Written by another tool with a valid checksum: KeyError/IndexError tracebacks or negative
    predictions before."""
    path = tmp_path / "bad.aio"
    shutil.copy(measured, path)
    if tables.read(path, tables.PARETO) is None:
        search.search(path, latency_ms=1e6, frequency=1.0, settings=search.SearchSettings(population=4, generations=1))
    table = json.loads(json.dumps(tables.read(path, name)))
    if name == tables.LUT:
        table["frequencies"], table["overhead_ms"] = table["frequencies"][:1], table["overhead_ms"][:1]
        for block in table["blocks"]:
            block["latency_ms"] = {k: v[:1] for k, v in block["latency_ms"].items()}
        table["checks"] = [{**c, "measured_ms": c["measured_ms"][:1]} for c in table["checks"]]
        table["correction"] = table["correction"][:1]
    else:
        table["frequencies"], table["pareto"] = table["frequencies"][:1], table["pareto"][:1]
    tables.store(path, {name: table})
    tables.read(path, name)  # the trimmed table is well formed
    change(table)
    tables.store(path, {name: table})
    with pytest.raises(BundleError, match=re.escape(message)):
        tables.read(path, name)


def test_lut_of_a_model_with_integer_inputs(tmp_path: Path) -> None:
    """Token ids (int64) into an embedding Gather, then an MLP, as in BERT: every block input was
    declared float, so ORT refused the Gather's block ('Type tensor(float) of input ... is invalid')."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "emb"),
             numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
             helper.make_node("MatMul", ["e", "w1"], ["h"], name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(nodes, "ids", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 4])], inits)
    src = tmp_path / "ids.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    path = tmp_path / "ids.aio"
    prune(src, [0, 0.5], path)
    table = lut.measure(path, [FrequencySetting(1.0, label="local")], FAST)
    assert table["blocks"] and all(v[0] >= 0 for b in table["blocks"] for v in b["latency_ms"].values())


def test_a_table_that_cannot_be_stored_is_kept_and_stored_later(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The file damaged while its table was measured: the store fails, the table is kept beside
    it (it was lost), and `lut --from-json` stores it once the file is whole again."""
    path = _cnn(tmp_path / "m.aio")
    original = path.read_bytes()

    def damage(_: str) -> None:
        data = bytearray(original)
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    with pytest.raises(BundleError, match=r"could not store the latency table in .*m\.aio: .*checksum.*; the "
                                          r"measurement is kept in (\S+\.json): once") as caught:
        lut.measure(path, [FrequencySetting(1.0, label="local")], FAST, progress=damage)
    kept = Path(re.search(r"kept in (\S+\.json):", str(caught.value)).group(1))
    assert kept.parent == tmp_path and json.loads(kept.read_text())["schema"] == tables.SCHEMAS[tables.LUT]
    path.write_bytes(original)
    cli_main(["lut", str(path), "--from-json", str(kept)])
    assert "stored the latency table of" in capsys.readouterr().out
    assert lut.read(path) == json.loads(kept.read_text())


def test_from_json_refuses_a_table_that_is_not_this_files(measured: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = _cnn(tmp_path / "m.aio")
    table = lut.read(measured)
    before = path.read_bytes()
    cases = (({**table, "checks": [{**table["checks"][0], "config": "99:4"}]}, "is the table of another file"),
             ({**table, "blocks": [{**table["blocks"][0], "groups": [99]}]}, "is the table of another file"),
             ({**table, "overhead_ms": "x"}, "the ofa/lut table given is malformed"),
             ([1, 2], "the ofa/lut table given is malformed"))
    for value, message in cases:
        (tmp_path / "t.json").write_text(json.dumps(value))
        with pytest.raises(SystemExit):
            cli_main(["lut", str(path), "--from-json", str(tmp_path / "t.json")])
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    with pytest.raises(SystemExit):
        cli_main(["lut", str(path), "--from-json", str(tmp_path / "t.json"), "--emulated", "1"])
    assert "give no --cpu-freqs or --emulated" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_a_disk_too_small_for_the_rewrite_is_refused_before_measuring(small_disk: Path) -> None:
    path = _cnn(small_disk / "m.aio")
    (small_disk / "filler").write_bytes(b"\0" * (small_disk.stat().st_blksize * 2048))  # leaves < 16 MiB
    with pytest.raises(BundleError, match=r"needs about \d+ MiB free in .*, and \d+ MiB are"):
        lut.measure(path, [FrequencySetting(1.0, label="local")], FAST,
                    progress=lambda _: pytest.fail("measured on a disk that could not take the result"))


def test_a_disk_that_fills_during_the_measurement_loses_nothing(small_disk: Path) -> None:
    """ENOSPC at the store: the kept copy cannot go beside the file either, so it goes to the
    temp directory, and the file is unchanged."""
    path = _cnn(small_disk / "m.aio")
    before = path.read_bytes()

    def fill(_: str) -> None:
        if not (small_disk / "filler").exists():
            with open(small_disk / "filler", "wb") as out:
                try:
                    while True:
                        out.write(b"\0" * (1 << 20))
                except OSError:
                    pass

    with pytest.raises(BundleError, match=r"No space left on device; the measurement is kept in (\S+)") as caught:
        lut.measure(path, [FrequencySetting(1.0, label="local")], FAST, progress=fill)
    kept = Path(re.search(r"kept in (\S+\.json):", str(caught.value)).group(1))
    try:
        assert small_disk not in kept.parents and lut.SCHEMA == json.loads(kept.read_text())["schema"]
        assert path.read_bytes() == before
        assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "m.aio", "m.onnx"]  # no partial file
    finally:
        kept.unlink()
