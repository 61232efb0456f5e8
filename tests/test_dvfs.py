"""DVFS pin, verify and restore on copied fixture trees, including real SIGTERM/SIGKILL."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from edgert.device_agents import sysfs
from edgert.device_agents.dvfs import DvfsControl, replay_journal, run_command
from edgert.errors import SysfsError

from test_discovery import board, tree

REPO = Path(__file__).resolve().parent.parent
CPU = "sys/devices/system/cpu/cpufreq/policy0"
GPU = "sys/class/devfreq/57000000.gpu"


def read(root: Path, rel: str) -> str:
    return sysfs.read_text(str(root), rel)


def test_pin_then_restore_leaves_the_tree_byte_identical(tmp_path):
    root = board(tmp_path, "jetson_nano")
    journal = tmp_path / "journal.json"
    before = tree(root)
    with DvfsControl(str(root), journal_path=journal) as dvfs:
        # The fixture's cur_freq is static, so only the current clock can verify.
        assert dvfs.pin_cpu("policy0", 1479000) == 1479000
        assert dvfs.pin_devfreq("57000000.gpu", 76800000) == 76800000
        assert (read(root, f"{CPU}/scaling_min_freq"), read(root, f"{GPU}/max_freq")) == ("1479000", "76800000")
        saved = json.loads(journal.read_text())
        originals = {e["path"]: e["original"] for e in saved["entries"]}
        assert originals == {f"{CPU}/scaling_max_freq": "1479000", f"{CPU}/scaling_min_freq": "102000",
                             f"{GPU}/min_freq": "76800000", f"{GPU}/max_freq": "921600000"}
    assert tree(root) == before
    assert not journal.exists()


def test_a_clock_that_does_not_take_refuses_and_is_restored(tmp_path):
    root = board(tmp_path, "jetson_nano")
    before = tree(root)
    with pytest.raises(SysfsError, match="did not take") as info:
        with DvfsControl(str(root)) as dvfs:
            dvfs.pin_devfreq("57000000.gpu", 921600000)  # cur_freq stays at 76.8 MHz
    assert info.value.fields["actual"] == 76800000
    assert tree(root) == before


def test_userspace_governor_is_switched_back(tmp_path):
    root = board(tmp_path, "raspberry_pi4")
    with DvfsControl(str(root)) as dvfs:
        dvfs.pin_cpu("policy0", 600000, method="userspace")
        assert (read(root, f"{CPU}/scaling_governor"), read(root, f"{CPU}/scaling_setspeed")) == ("userspace", "600000")
    # scaling_setspeed is the kernel's to reset when the governor changes back.
    assert read(root, f"{CPU}/scaling_governor") == "ondemand"


def test_unknown_frequency_is_refused_before_any_write(tmp_path):
    root = board(tmp_path, "raspberry_pi4")
    before = tree(root)
    journal = tmp_path / "j.json"
    with DvfsControl(str(root), journal_path=journal) as dvfs:
        with pytest.raises(SysfsError, match="not a frequency"):
            dvfs.pin_cpu("policy0", 650000)
        assert not journal.exists()
    assert tree(root) == before


def test_writes_outside_the_allow_list_are_refused_untouched(tmp_path):
    root = board(tmp_path, "raspberry_pi4")
    temp = root / "sys/class/thermal/thermal_zone0/temp"
    with pytest.raises(SysfsError, match="allow-list"):
        sysfs.write_text(str(root), "sys/class/thermal/thermal_zone0/temp", 0)
    with pytest.raises(SysfsError):
        sysfs.write_text(str(root), f"{CPU}/../../../../class/thermal/thermal_zone0/temp", 0)
    with pytest.raises(SysfsError, match="allow-list"):
        sysfs.write_text(str(root), "sys/devices/system/cpu/cpufreq/policy0/cpuinfo_max_freq", 1)
    assert temp.read_text() == "48686\n"
    assert read(root, f"{CPU}/cpuinfo_max_freq") == "1500000"
    assert sysfs.allowed("sys/class/devfreq/17000000.ga10b/userspace/set_freq")
    assert sysfs.allowed("sys/fs/cgroup/cpu/a/b/edgert-x/cpu.cfs_quota_us")
    assert not sysfs.allowed("sys/fs/cgroup/cpu/other/cpu.cfs_quota_us")


CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
from edgert.device_agents.dvfs import DvfsControl
with DvfsControl({root!r}, journal_path={journal!r}) as dvfs:
    dvfs.pin_cpu("policy0", 1479000)
    dvfs.pin_devfreq("57000000.gpu", 76800000)
    print("pinned", flush=True)
    time.sleep(60)
"""


def start_pinned_child(root: Path, journal: Path, sighup: Any = signal.SIG_DFL) -> subprocess.Popen:
    """A process pinning clocks, SIGHUP as a terminal gives it (a suite run under nohup would
    hand it SIGHUP ignored) unless ``sighup`` says otherwise."""
    code = textwrap.dedent(CHILD).format(repo=str(REPO), root=str(root), journal=str(journal))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGHUP, sighup))
    assert child.stdout.readline().strip() == "pinned"
    assert read(root, f"{GPU}/max_freq") == "76800000"
    return child


def test_sigkill_leaves_a_journal_that_replay_restores(tmp_path):
    root = board(tmp_path, "jetson_nano")
    journal = tmp_path / "journal.json"
    before = tree(root)
    child = start_pinned_child(root, journal)
    child.kill()
    assert child.wait(10) == -signal.SIGKILL
    assert tree(root) != before and journal.exists()
    with pytest.raises(SysfsError, match="replay_journal"):
        DvfsControl(str(root), journal_path=journal)
    assert replay_journal(journal, str(root)) == 4
    assert tree(root) == before
    assert not journal.exists()
    assert replay_journal(journal, str(root)) == 0


def test_a_journal_whose_fixture_tree_is_gone_no_longer_blocks_sweeps(tmp_path):
    """A sweep killed on a copied tree, the copy deleted since: every later sweep, on any root,
    failed with 'could not restore: cannot read .../scaling_min_freq' and no way out named."""
    import shutil

    root = board(tmp_path, "jetson_nano")
    journal = tmp_path / "journal.json"
    child = start_pinned_child(root, journal)
    child.kill()
    child.wait(10)
    (root / GPU / "max_freq").unlink()  # the tree still there, one pinned file gone: say what to do
    with pytest.raises(SysfsError, match=rf"could not restore: .*max_freq.* \(journal {journal}: .*delete it\)"):
        replay_journal(journal)
    shutil.rmtree(root)
    assert replay_journal(journal) == 0 and not journal.exists()


def test_under_nohup_a_sighup_leaves_the_running_measurement_pinned(tmp_path):
    """SIGHUP ignored (nohup): the run goes on, so restoring its clocks then would have it
    measure at the wrong ones."""
    root = board(tmp_path, "jetson_nano")
    journal = tmp_path / "journal.json"
    child = start_pinned_child(root, journal, sighup=signal.SIG_IGN)
    child.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert child.poll() is None and read(root, f"{GPU}/max_freq") == "76800000"
    child.terminate()
    assert child.wait(10) == -signal.SIGTERM and not journal.exists()


def test_a_lut_clock_setting_restores_what_a_killed_run_left_pinned(tmp_path, monkeypatch):
    """`edgert lut --cpu-freqs` after a SIGKILLed run: its setting replays the journal (as a sweep
    does) instead of refusing every later run with "call replay_journal() first"."""
    from edgert.device_agents.sweep import default_journal_path
    from edgert.variants.lut_run import cpufreq_settings

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    root = board(tmp_path, "jetson_nano")
    journal = default_journal_path()
    before = tree(root)
    child = start_pinned_child(root, journal)
    child.kill()
    assert child.wait(10) == -signal.SIGKILL and journal.exists()
    setting = cpufreq_settings("policy0", [1479000], str(root))[0]
    with setting.apply() as khz:
        assert khz == 1479000 and read(root, f"{GPU}/max_freq") != "76800000"  # the GPU pin was undone
    assert tree(root) == before and not journal.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])  # SIGHUP: the terminal or SSH session went
def test_a_termination_signal_restores_then_terminates(tmp_path, sig):
    root = board(tmp_path, "jetson_nano")
    journal = tmp_path / "journal.json"
    before = tree(root)
    child = start_pinned_child(root, journal)
    child.send_signal(sig)
    assert child.wait(10) == -sig
    assert tree(root) == before
    assert not journal.exists()


def test_nvpmodel_is_set_verified_and_restored(tmp_path):
    # A stand-in nvpmodel executable keeping its mode in a file, run as a real process.
    state = tmp_path / "mode"
    state.write_text("0")
    tool = tmp_path / "nvpmodel"
    tool.write_text(f"""#!/bin/sh
if [ "$1" = "-q" ]; then echo "NV Power Mode: MODE_$(cat {state})"; cat {state}; echo; fi
if [ "$1" = "-m" ]; then printf %s "$2" > {state}; fi
""")
    tool.chmod(0o755)
    root = board(tmp_path, "jetson_orin")

    def run(argv):
        return run_command([str(tmp_path / argv[0]), *argv[1:]])

    with DvfsControl(str(root), run=run) as dvfs:
        dvfs.set_nvpmodel(2)
        assert dvfs.nvpmodel_mode() == 2
    assert state.read_text() == "0"
