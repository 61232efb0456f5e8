"""``edgert calibrate``: every All-in-One level at every setting through the sweep machinery,
here and on a device over the real sshd (agent store, sysfs fixture trees, power rails), and
the accuracy table the report's Pareto fronts read."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from agent_env import agent_command, current_xdg
from conftest import run_cli
from edgert.errors import SysfsError, UsageError
from edgert.hashing import sha256_file
from edgert.report import render_report
from edgert.settings import BenchSettings, SweepRequest
from edgert.sweep import SweepJob
from edgert.variants import aiofile, open as open_variants
from edgert.variants.accuracy import accuracy_of, store_accuracy
from edgert.variants.calibrate import calibrate_device
from edgert.variants.prune import prune
from sshd import sshd_available

from test_discovery import board, tree
from test_variants_prune import tiny_model

VDD_IN_W = 5.016 * 1.184  # jetson_orin fixture: in1_input 5016 mV, curr1_input 1184 mA
CURRENT_KHZ = 1510400  # the fixture's scaling_cur_freq: the only clock that "takes" on static files
FAST = BenchSettings(warmup_runs=1, runs=20)


@pytest.fixture
def tiny_aio(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.aio"
    prune(tiny_model(tmp_path / "tiny.onnx"), [0, 0.5, 0.75], path)
    return path


def _energy_is_power_times_window(table: dict, watts_expected: float) -> None:
    """A fixture's constant rail is a labelled reading, never energy; its arithmetic still holds:
    every level's reading is that power x its measured window / runs."""
    assert "energy_mj" not in table and "power_w" not in table
    assert table["power"]["status"] == "fixture" and table["power"]["measured"] is False
    assert "not measured" in table["warnings"][1] and "fixture" in table["warnings"][0]
    reading = table["power_reading"]
    for row_p, row_e, row_d in zip(reading["power_w"], reading["energy_mj"], table["detail"]):
        for watts, mj, block in zip(row_p, row_e, row_d):
            assert watts == pytest.approx(watts_expected, rel=1e-3)
            assert block["n"] == 20
            # energy = W x window / runs, and the window (first start to last end) >= the runs
            assert mj >= watts * block["mean"] * (1 - 1e-9)


# (fixture, its current cpu0 clock and another it lists, in kHz, its constant input rail: INA3221
# on hwmon, and the Nano's legacy ina3221x driver)
BOARDS = [("jetson_orin", CURRENT_KHZ, 729600, VDD_IN_W, "VDD_IN (watts)"),
          ("jetson_nano", 1479000, 710400, 5.573, "POM_5V_IN (watts)")]


@pytest.mark.parametrize("name, khz, other, watts, source", BOARDS, ids=[b[0] for b in BOARDS])
def test_local_calibration_times_every_level_samples_power_and_leaves_out_a_clock_that_did_not_take(
        tmp_path, tiny_aio, name, khz, other, watts, source):
    root = board(tmp_path, name)
    before = tree(root)
    data_sha = aiofile.read(tiny_aio).metadata["sha256"]
    job = SweepJob(tiny_aio, SweepRequest(settings=FAST, cpu_freqs=(khz, other), cpu_policies=("policy0",),
                                          sysfs_root=str(root), journal_path=tmp_path / "journal.json",
                                          idle_s=0.05))
    table = calibrate_device(job)
    assert table["frequencies"] == [khz] and table["frequency_unit"] == "khz"
    assert table["emulated"] is False and table["ratios"] == [0.0, 0.5, 0.75]
    assert table["labels"] == [f"policy0 {khz} kHz"] and table["readback"] == [khz]
    assert any(f"left out policy0 {other} kHz" in w and "did not take" in w for w in table["warnings"])
    assert table["power"]["source"] == source
    _energy_is_power_times_window(table, watts)
    assert all(v == pytest.approx(watts, rel=1e-3) for row in table["power_reading"]["idle_power_w"] for v in row)
    assert tree(root) == before  # every pinned file restored
    with open_variants(tiny_aio) as vm:  # stored; the data section (and its checksum) untouched
        assert vm.calibration["p50_ms"] == table["p50_ms"] and vm.calibration["power"] == table["power"]
    assert aiofile.read(tiny_aio).metadata["sha256"] == data_sha


def test_calibration_without_a_power_source_has_latency_only_and_no_setting_is_an_error(tmp_path, tiny_aio):
    root = board(tmp_path, "jetson_orin")
    job = SweepJob(tiny_aio, SweepRequest(settings=FAST, cpu_freqs=(CURRENT_KHZ,), cpu_policies=("policy0",),
                                          sysfs_root=str(root), journal_path=tmp_path / "journal.json",
                                          power="none", idle_s=0.0))
    table = calibrate_device(job, write=False)
    assert "energy_mj" not in table and "power_w" not in table
    assert not any("sampled" in w for w in table["warnings"])  # nothing was: it said both
    assert table["fixture"] is True  # a fixture tree's clocks: the report says "(fixture clock)"
    assert len(table["p50_ms"]) == 3 and all(v > 0 for row in table["p50_ms"] for v in row)
    with pytest.raises(SysfsError, match="measured no setting.*729600"):
        calibrate_device(replace(job, request=replace(job.request, cpu_freqs=(729600,))), write=False)
    with pytest.raises(UsageError, match="one kind of setting"):
        calibrate_device(replace(job, request=replace(job.request, emulated_levels=(1.0,))), write=False)


def test_calibrate_through_the_cli_on_a_local_device_url_with_accuracy(tmp_path, tiny_aio):
    root = board(tmp_path, "jetson_orin")
    acc = tmp_path / "acc.json"
    acc.write_text(json.dumps({"0": 0.97, "0.5": 0.95, "0.75": 0.9}))
    proc = run_cli("calibrate", str(tiny_aio), "--device", "local", "--cpu-freqs", str(CURRENT_KHZ),
                   "--cpu-policy", "policy0", "--sysfs-root", str(root), "--idle", "0.05",
                   "--max-time", "0.2", "--accuracy", str(acc),
                   env={"XDG_STATE_HOME": str(tmp_path / "state")})
    assert proc.returncode == 0, proc.stderr
    assert "accuracy stored for 3 levels" in proc.stdout and "power fixture: not measured" in proc.stdout
    with open_variants(tiny_aio) as vm:
        assert "energy_mj" not in vm.calibration and len(vm.calibration["power_reading"]["energy_mj"]) == 3
        assert [accuracy_of(vm._file.meta, lv.ratio) for lv in vm.levels] == [0.97, 0.95, 0.9]
    page = render_report([tiny_aio], tmp_path / "report.html").read_text()  # reads it all from the file
    assert "<th>mJ at 1510.4 MHz</th>" not in page and "<th>Pareto-optimal at</th>" in page
    assert '<td class="num">0.95</td>' in page and "not measured" in page
    source = aiofile.read_meta(tiny_aio)["source"]["sha256"]
    assert source in page[page.index("<h2>Provenance</h2>"):]  # the pruned model's sha256 ('—' before)


def test_accuracy_is_checked_against_the_levels(tiny_aio, tmp_path):
    with pytest.raises(UsageError, match=r"no level with ratio 0.3 \(its ratios: 0, 0.5, 0.75\)"):
        store_accuracy(tiny_aio, {"0": 0.9, "0.3": 0.8})
    with pytest.raises(UsageError, match="missing for ratio\\(s\\) 0.75"):
        store_accuracy(tiny_aio, {0.0: 0.9, 0.5: 0.8})
    with pytest.raises(UsageError, match="finite number"):
        store_accuracy(tiny_aio, {0.0: 0.9, 0.5: float("nan"), 0.75: 0.7})
    with pytest.raises(UsageError, match="ratio 0 twice"):  # "0" and "0.0": the last one won, silently
        store_accuracy(tiny_aio, {"0": 0.9, "0.0": 0.8, 0.5: 0.8, 0.75: 0.7})
    assert store_accuracy(tiny_aio, {0.0: 0.9, 0.5: 0.8, 0.75: 0.7}) == {"0.0": 0.9, "0.5": 0.8, "0.75": 0.7}
    with open_variants(tiny_aio) as vm:  # the file still verifies
        assert accuracy_of(vm._file.meta, 0.5) == 0.8
    bad = tmp_path / "bad.json"
    bad.write_text("[0.9]")
    proc = run_cli("calibrate", str(tiny_aio), "--accuracy", str(bad))
    assert proc.returncode == 2 and "must hold an object" in proc.stderr


@pytest.mark.skipif(not sshd_available(), reason="needs OpenSSH's sshd (apt-get install openssh-server)")
def test_calibrate_on_a_device_over_ssh(tmp_path, sshd, tiny_aio):
    """The file goes into the agent's store, the agent times the levels on its (fixture) clocks
    with power, the host computes the table and writes it into the local file."""
    root = board(tmp_path, "jetson_orin")
    before = tree(root)
    store = tmp_path / "store"
    state = tmp_path / "state"
    sha = sha256_file(tiny_aio)
    agent = agent_command("--stdio", "--store", str(store), "--sysfs-root", str(root),  # the agent's own root
                          env={**current_xdg(), "XDG_STATE_HOME": str(state)})
    proc = run_cli("calibrate", str(tiny_aio), "--cpu-freqs", f"{CURRENT_KHZ},729600", "--cpu-policy", "policy0",
                   "--sysfs-root", str(root), "--idle", "0.05", "--max-time", "0.2",
                   "--device", sshd.url, "--ssh-key", str(sshd.client_key),
                   "--known-hosts", str(sshd.known_hosts), "--agent-cmd", agent)
    assert proc.returncode == 0, proc.stderr
    assert "left out policy0 729600 kHz" in proc.stderr
    assert (store / "objects" / sha).is_file()  # pushed content-addressed, as edgert push does
    with open_variants(tiny_aio) as vm:
        table = vm.calibration
    assert table["device"]["transport"] == "ssh" and table["frequencies"] == [CURRENT_KHZ]
    assert table["power"]["source"] == "VDD_IN (watts)" and table["power"]["status"] == "fixture"
    assert "energy_mj" not in table and len(table["power_reading"]["energy_mj"]) == 3
    assert all(v == pytest.approx(VDD_IN_W, rel=1e-12) for row in table["power_reading"]["power_w"] for v in row)
    assert tree(root) == before and not (state / "edgert/dvfs-journal.json").exists()


def test_calibrate_refuses_a_disk_too_small_for_the_rewrite_before_measuring(small_disk: Path) -> None:
    from edgert.errors import BundleError

    path = small_disk / "tiny.aio"
    prune(tiny_model(small_disk / "tiny.onnx"), [0, 0.5], path)
    (small_disk / "filler").write_bytes(b"\0" * (small_disk.stat().st_blksize * 2048))  # leaves < 16 MiB
    job = SweepJob(path, SweepRequest(settings=FAST, emulated_levels=(1.0,)))
    with pytest.raises(BundleError, match=r"needs about \d+ MiB free"):
        calibrate_device(job, progress=lambda *_: pytest.fail("measured on a disk that could not take the result"))

