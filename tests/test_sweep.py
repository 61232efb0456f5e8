"""Sweeps: energy on constant-rail fixtures, byte-exact restore (also after SIGKILL), emulated
levels on a real ONNX Runtime model, and the same sweep through a TCP agent."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import make_matmul_model
from edgert.device_agents.emulated import EmulatedDomain
from edgert.device_agents.sweep import run_sweep
from edgert.errors import SysfsError, UsageError
from edgert import power_status
from edgert.settings import BenchSettings, SweepRequest
from edgert.sweep import (SweepJob, build_point, build_result, mean_power_w, parse_freqs, parse_levels,
                          summary_lines, sweep)

from test_discovery import board, tree

REPO = Path(__file__).resolve().parent.parent
VDD_IN_W = 5.016 * 1.184  # jetson_orin fixture: in1_input 5016 mV, curr1_input 1184 mA
FAST = BenchSettings(warmup_runs=1, runs=25)


def _job(model: Path, **request) -> SweepJob:
    return SweepJob(model, SweepRequest(**request))


def orin_job(tmp_path: Path, **changes) -> SweepJob:
    root = board(tmp_path, "jetson_orin")
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    fields = dict(settings=FAST, cpu_freqs=(1510400,), cpu_policies=("policy0",),
                  sysfs_root=str(root), journal_path=tmp_path / "journal.json", idle_s=0.1)
    return SweepJob(model, SweepRequest(**{**fields, **changes}))


def test_a_fixture_rail_is_a_labelled_reading_never_measured_energy(tmp_path):
    job = orin_job(tmp_path)
    raw = run_sweep(job.request, job.model)
    result = build_result(job, json.loads(json.dumps(raw)), {"emulated": False})
    [rp], [p] = raw["points"], result["points"]
    starts, samples = rp["raw"]["starts_ns"], rp["raw"]["samples_ns"]
    duration_s = (starts[-1] + samples[-1] - starts[0]) / 1e9
    assert p["runs"] == 25 and p["duration_s"] == duration_s >= sum(samples) / 1e9
    # The fixture's files gave the watts while this host ran the model: not a measurement.
    assert p["power_status"] == "fixture"
    assert p["power_w"] is p["energy_per_inference_mj"] is p["energy_above_idle_mj"] is None
    reading = p["power_reading"]
    assert reading["power_w"] == pytest.approx(VDD_IN_W, rel=1e-12)  # V x A of the fixture files
    assert reading["energy_per_inference_mj"] == pytest.approx(VDD_IN_W * duration_s / 25 * 1e3, rel=1e-12)
    assert "energy_above_idle_mj" not in reading
    assert result["power"] == {"source": "VDD_IN (watts)", "measured": False, "status": "fixture",
                               "reason": result["power"]["reason"]}
    assert "fixture" in result["power"]["reason"] and result["fixture"] is True
    assert "fixture" in result["warnings"][0] and "not measured" in result["warnings"][1]
    assert p["power_source"] == "VDD_IN (watts)" and p["power_samples"] >= 1
    [line] = summary_lines(result)
    assert "fixture, not measured" in line and "mJ" not in line
    from edgert.report import render_report
    from edgert.result import write_json

    write_json(result, tmp_path / "sweep.json")
    page = render_report([tmp_path / "sweep.json"], tmp_path / "report.html").read_text()
    summary = page[page.index('id="summary"'):page.index('id="warnings"')]
    assert "<td>fixture, not measured</td>" in summary and " mJ</td>" not in summary
    assert "Power and energy: not measured (fixture)" in page and "Least energy" not in page

    assert p["setting"] == {"domain": "policy0", "kind": "cpu", "requested": 1510400, "unit": "kHz",
                            "readback": 1510400, "readback_by_domain": {"policy0": 1510400},
                            "readback_after": 1510400}
    assert p["throttled"] is False and p["emulated"] is False and p["error"] is None
    assert p["temperatures_c"]["cpu-thermal"] == 47.531
    assert result["schema"] == "edgert.sweep/1" and result["emulated"] is False
    assert not any("span" in w for w in result["warnings"])  # the samples bracket the window
    assert result["backend"]["name"] == "ort" and result["model"]["inputs"][0]["name"] == "x"


def _raw_point(watts: list[float], idle: list[float]) -> dict:
    s = 1_000_000
    return {"setting": {"domain": "policy0", "kind": "cpu", "requested": 1, "unit": "kHz"}, "error": None,
            "raw": {"samples_ns": [s] * 4, "starts_ns": [0, s, 2 * s, 3 * s], "stop_reason": "runs",
                    "timer_resolution_ns": 1},
            "power": {"kind": "watts", "t_ns": [0, 4 * s], "values": watts, "read_errors": 0},
            "idle_power": {"kind": "watts", "t_ns": [0, s], "values": idle, "read_errors": 0}}


def test_power_that_moves_is_measured_and_power_that_never_moves_is_static():
    moving = build_point(_raw_point([5.0, 7.0], [2.0, 2.0]), "VDD_IN (watts)", False, 0, [], "/")
    assert moving["power_status"] == "measured" and moving["power_w"] == pytest.approx(6.0)
    assert moving["energy_above_idle_mj"] == pytest.approx((6.0 - 2.0) * 0.004 / 4 * 1e3)
    static = build_point(_raw_point([5.0, 5.0], [5.0, 5.0]), "VDD_IN (watts)", False, 0, [], "/")
    assert static["power_status"] == "static" and static["power_w"] is None
    assert static["energy_above_idle_mj"] is None and static["power_reading"]["power_w"] == 5.0
    assert power_status.label(static) == "static, not measured"
    meter_on_fixture = build_point(_raw_point([5.0, 6.0], [2.0, 2.5]), "meter+line:///dev/ttyUSB0 (watts)",
                                   False, 0, [], "/fixtures/orin")
    assert meter_on_fixture["power_status"] == "measured"  # a meter is read on the device, not from sysfs


def test_mean_power_integrates_rails_and_differences_counters():
    s = 1_000_000_000
    watts = {"kind": "watts", "t_ns": [0, s], "values": [2.0, 4.0]}
    assert mean_power_w(watts, s // 4, 3 * s // 4) == pytest.approx(3.0)
    assert mean_power_w(watts, 2 * s, 3 * s) == pytest.approx(4.0)  # held flat after the last sample
    joules = {"kind": "joules", "t_ns": [0, s, 2 * s], "values": [0.0, 5.0, 15.0]}
    assert mean_power_w(joules, s // 2, 3 * s // 2) == pytest.approx(7.5)
    assert mean_power_w({"kind": "joules", "t_ns": [0], "values": [1.0]}, 0, s) is None


def test_clocks_that_do_not_take_become_error_points_and_every_file_is_restored(tmp_path):
    root = board(tmp_path, "jetson_nano")
    before = tree(root)
    journal = tmp_path / "journal.json"
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    job = _job(model, settings=BenchSettings(warmup_runs=0, runs=3), cpu_freqs="all",
                   gpu_freqs="all", sysfs_root=str(root), journal_path=journal, idle_s=0.02)
    result = sweep(job)
    points = result["points"]
    measured = [p for p in points if p["error"] is None]
    # The fixture's cur_freq files are static: only the current clocks can be verified.
    assert [(p["setting"]["domain"], p["setting"]["requested"]) for p in measured] == \
        [("policy0", 1479000), ("57000000.gpu", 76800000)]
    failed = [p for p in points if p["error"]]
    assert len(failed) == len(points) - 2 >= 10
    assert all("did not take" in p["error"] and p["latency_ms"] is None and p["power_w"] is None
               for p in failed)
    assert {p["setting"]["readback"] for p in failed} == {1479000, 76800000}
    assert measured[0]["power_w"] is None and measured[0]["power_status"] == "fixture"
    assert measured[0]["power_reading"]["power_w"] == pytest.approx(5.573, rel=1e-3)  # POM_5V_IN
    assert tree(root) == before and not journal.exists()


def test_gpu_points_run_with_the_cpu_clocks_restored(tmp_path):
    """--cpu-freqs then --gpu-freqs: every GPU point ran with policy0 still pinned at the last
    CPU setting (min = max), which its result did not record."""
    root = board(tmp_path, "jetson_nano")
    policy = root / "sys/devices/system/cpu/cpufreq/policy0"
    before = {name: (policy / name).read_text() for name in ("scaling_min_freq", "scaling_max_freq")}
    seen: dict[str, dict[str, str]] = {}

    def progress(event: dict) -> None:
        if "setting" in event:
            seen[event["setting"]["domain"]] = {name: (policy / name).read_text() for name in before}

    request = SweepRequest(settings=BenchSettings(warmup_runs=0, runs=3), cpu_freqs=(1479000,),
                           cpu_policies=("policy0",), gpu_freqs=(76800000,), sysfs_root=str(root),
                           journal_path=tmp_path / "journal.json", idle_s=0.0, power="none")
    raw = run_sweep(request, make_matmul_model(tmp_path / "m.onnx", symbolic=False), progress=progress)
    assert [p["error"] for p in raw["points"]] == [None, None]
    assert seen["57000000.gpu"] == before


def test_a_killed_sweep_is_restored_from_the_journal_by_the_next_one(tmp_path):
    root = board(tmp_path, "jetson_nano")
    before = tree(root)
    journal = tmp_path / "journal.json"
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    job = _job(model, settings=BenchSettings(warmup_runs=0, runs=1000), cpu_freqs=(1479000,),
                   sysfs_root=str(root), journal_path=journal, idle_s=0.0, power="none")
    code = textwrap.dedent(f"""
        import sys, time, json
        sys.path.insert(0, {str(REPO)!r})
        from edgert.device_agents.sweep import run_sweep
        from edgert.settings import SweepRequest
        request = SweepRequest.from_dict(json.loads({json.dumps(json.dumps(job.request.to_dict()))}))
        def progress(data):
            if data.get("runs"):
                print("measuring", flush=True)
                time.sleep(60)
        run_sweep(request, {str(model)!r}, progress=progress)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "measuring"
    assert tree(root) != before and journal.exists()  # pinned: min = max = 1479000
    child.send_signal(signal.SIGKILL)
    assert child.wait(10) == -signal.SIGKILL
    assert tree(root) != before
    again = sweep(_job(job.model, **{**job.request.__dict__, "settings": BenchSettings(warmup_runs=0, runs=2)}))
    assert any("restored 2 setting(s)" in w for w in again["warnings"])
    assert tree(root) == before and not journal.exists()


def test_a_machine_without_cpufreq_says_to_use_emulated_levels(tmp_path):
    job = _job(make_matmul_model(tmp_path / "m.onnx", symbolic=False), settings=FAST,
                   cpu_freqs="all", sysfs_root=str(tmp_path), journal_path=tmp_path / "j.json")
    with pytest.raises(SysfsError, match="--emulated"):
        sweep(job)


def test_option_parsing():
    assert parse_freqs("all", "kHz") == "all"
    assert parse_freqs("600000,1.2GHz,900MHz", "kHz") == (600000, 1200000, 900000)
    assert parse_freqs("76800000,921.6MHz", "Hz") == (76800000, 921600000)
    assert parse_freqs(None, "Hz") is None
    with pytest.raises(UsageError, match="whole number"):
        parse_freqs("0.5kHz", "kHz")
    with pytest.raises(UsageError, match="bad frequency"):
        parse_freqs("fast", "kHz")
    assert parse_levels("1.0,0.5,0.25") == (1.0, 0.5, 0.25)
    with pytest.raises(UsageError, match=r"\(0, 1\]"):
        parse_levels("1.5")
    with pytest.raises(UsageError, match="needs levels"):  # was "choose one of --cpu-freqs and --emulated"
        parse_levels(" ")


def make_matmul_chain(path: Path, size: int = 256, depth: int = 8) -> Path:
    """A chain of size x size MatMuls, all of it CPU work (256 x 8: a few ms on one core)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    for i in range(depth):
        w = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"]))
        prev = f"h{i}"
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [size, size])],
                              [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [size, size])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.skipif(not EmulatedDomain().available(),
                    reason="needs root and a cgroup with cpu bandwidth control")
def test_emulated_levels_on_a_real_model_slow_it_down_and_say_so(tmp_path):
    cgroup_before = Path("/proc/self/cgroup").read_text()
    # ~25 ms of work per run at full speed: the quota is enforced at the scheduler tick (4 ms at
    # CONFIG_HZ=250), so runs of a few ms can slip past it; runs spanning many ticks slow down
    # roughly as 1/level (measured for benchmarks/variants.py's stability subject).
    job = _job(make_matmul_chain(tmp_path / "chain.onnx", size=512, depth=10),
                   settings=BenchSettings(warmup_runs=2, runs=9, threads=1),
                   emulated_levels=(1.0, 0.5, 0.1), journal_path=tmp_path / "journal.json",
                   idle_s=0.0, power="none")
    result = sweep(job)
    points = result["points"]
    assert result["emulated"] is True and "emulated" in result["warnings"][0]
    assert [p["setting"]["domain"] for p in points] == ["emulated"] * 3
    assert [p["setting"]["readback"] for p in points] == [1.0, 0.5, 0.1]  # read from the cgroup
    assert all(p["emulated"] is True and p["error"] is None for p in points)
    p50 = [p["latency_ms"]["p50"] for p in points]
    print("p50 ms per level:", p50)
    # Loose: this 2-core machine is shared (a busy neighbour can slow the 100% level several-fold).
    assert p50[2] > 1.5 * p50[0] and p50[2] > p50[1]
    assert Path("/proc/self/cgroup").read_text() == cgroup_before


def test_the_same_sweep_through_a_tcp_agent(tmp_path, monkeypatch):
    from edgert.device_agents import serve
    from edgert.device_agents.agent import Agent
    from edgert.device_agents.store import ArtifactStore
    from edgert.device_agents.sweep import serve_request
    from edgert.devices.address import parse_url

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # the agent's journal directory
    token = tmp_path / "token"
    token.write_text("correct-horse-battery-staple\n")
    job = orin_job(tmp_path, journal_path=None)
    agent = Agent(ArtifactStore(tmp_path / "store"), sysfs_root=job.request.sysfs_root)  # its own root
    # The integrator's Agent._sweep_run; registered here until agent.py has it.
    agent.handlers.setdefault("sweep.run", lambda params, progress: {
        **serve_request(params, agent._artifact(params), agent.sysfs_root, progress),
        "device": agent._facts(params.get("transport", "agent"))})
    ready = threading.Event()
    server = threading.Thread(target=serve.serve_tcp, daemon=True,
                              args=(agent, "127.0.0.1", 0, serve.read_token(token), ready, 1))
    server.start()
    assert ready.wait(10)
    before = tree(Path(job.request.sysfs_root))
    addr = parse_url(f"tcp://127.0.0.1:{ready.port}").replace(token_file=token)
    seen: list[dict] = []
    result = sweep(job, addr, seen.append)
    server.join(10)
    [p] = result["points"]
    assert result["device"]["transport"] == "tcp" and result["device"]["emulated"] is False
    assert p["runs"] == 25 and len(p["samples_ms"]) == 25
    assert p["power_status"] == "fixture" and p["energy_per_inference_mj"] is None
    assert p["power_reading"]["energy_per_inference_mj"] == pytest.approx(
        VDD_IN_W * p["duration_s"] / 25 * 1e3, rel=1e-12)
    assert any("setting" in d for d in seen)
    assert tree(Path(job.request.sysfs_root)) == before
    assert (tmp_path / "state/edgert").is_dir() and not (tmp_path / "state/edgert/dvfs-journal.json").exists()


def test_energy_from_a_um25c_meter_on_a_pty(tmp_path):
    from test_meter import Pty, serve_um, um_frame

    pty = Pty()
    try:
        serve_um(pty, um_frame(0x09C9, 5100, 8000))  # 5.1 V, 0.8 A
        job = orin_job(tmp_path, power=f"meter+um25c://{pty.path}?timeout=0.5", idle_s=0.6)
        result = sweep(job)
    finally:
        pty.close()
    [p] = result["points"]
    assert result["power_source"] == {"name": f"meter+um25c://{pty.path}", "kind": "watts"}
    # The emulated meter sends one constant frame: a meter, so not "fixture", but static.
    assert p["power_status"] == "static" and p["power_w"] is None and result["power"]["measured"] is False
    reading = p["power_reading"]
    assert reading["power_w"] == pytest.approx(5.1 * 0.8, rel=1e-12)
    assert reading["energy_per_inference_mj"] == pytest.approx(5.1 * 0.8 * p["duration_s"] / 25 * 1e3, rel=1e-12)
    assert reading["idle_power_w"] == pytest.approx(5.1 * 0.8, rel=1e-12) and p["power_samples"] >= 2


def test_a_sweep_with_a_clock_that_did_not_take_still_renders(tmp_path):
    """The fixture's other clocks do not take: error points carry no latency and are listed, not drawn."""
    from edgert.report import render_report
    from edgert.result import write_json

    result = sweep(orin_job(tmp_path, cpu_freqs=(1510400, 729600)))
    assert [p["error"] is None for p in result["points"]] == [True, False]
    write_json(result, tmp_path / "sweep.json")
    page = render_report([tmp_path / "sweep.json"], tmp_path / "report.html").read_text()
    assert "policy0 = 729600: not measured" in page and "policy0 1510.4 MHz (fixture clock)" in page
