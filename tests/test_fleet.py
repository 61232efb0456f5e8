"""Fleet runs: boards in parallel through a real sshd, one of them down; per-board files and errors."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from agent_env import stdio_agent_command
from conftest import make_matmul_model, run_cli
from ports import closed_port
from sshd import sshd_available

from edgert.bench import BenchJob
from edgert.devices.address import parse_url
from edgert.errors import DeviceError, UsageError
from edgert.fleet import bench_fleet, file_part, result_path, summary_path, write_results
from edgert.settings import BenchSettings

needs_sshd = pytest.mark.skipif(not sshd_available(), reason="needs OpenSSH's sshd")


def job(tmp_path: Path, settings: BenchSettings = BenchSettings(warmup_runs=1, runs=10),
        size: int = 64) -> BenchJob:
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False, size=size)
    return BenchJob(model=model, backends=("ort",), settings=settings)


def board(sshd, store: Path, name: str, port: int | None = None):
    """An ssh:// board; ``port`` other than sshd's makes it a board that is down."""
    return parse_url(f"ssh://{sshd.user}@127.0.0.1:{port or sshd.port}", name).replace(
        ssh_key=sshd.client_key, known_hosts=sshd.known_hosts,
        agent_cmd=stdio_agent_command(store))


@needs_sshd
def test_one_board_down_gives_one_result_and_one_recorded_error(tmp_path, sshd):
    seen: list[str] = []
    lock = threading.Lock()

    def progress(task: str):
        with lock:
            seen.append(task)
        return lambda runs, elapsed_ms: None

    with closed_port() as down:
        boards = [board(sshd, tmp_path / "store", "pi5"), board(sshd, tmp_path / "s2", "orin", down)]
        entries = bench_fleet(job(tmp_path), boards, progress)
    assert [e.device for e in entries] == ["pi5", "orin"]
    good, down = entries
    assert good.ok and len(good.results) == 1
    assert good.results[0]["device"]["transport"] == "ssh"
    assert len(good.results[0]["samples_ms"]) == 10
    assert not down.ok and down.results == []
    assert isinstance(down.error, DeviceError) and "cannot connect" in down.error.message
    assert seen == ["pi5 ort"]  # the down board never started a task

    summary = write_results(entries, tmp_path / "out" / "r.json")
    written = json.loads((tmp_path / "out" / "r.pi5.json").read_text())
    assert written["schema"] == "edgert.result/2" and written["latency_ms"]["n"] == 10
    assert not (tmp_path / "out" / "r.orin.json").exists()
    on_disk = json.loads((tmp_path / "out" / "r.fleet.json").read_text())
    assert on_disk == summary
    assert [b["status"] for b in summary["boards"]] == ["ok", "error"]
    assert summary["errors"] == [{"device": "orin", "code": "device",
                                  "message": down.error.message, "fields": down.error.fields}]


@needs_sshd
def test_boards_run_at_the_same_time(tmp_path, sshd):
    """Both agents measure at once: each board's 2 s measurement overlaps the other's."""
    boards = [board(sshd, tmp_path / f"s{i}", f"b{i}") for i in range(2)]
    two_seconds = BenchSettings(warmup_runs=1, min_duration_ms=2000, max_duration_ms=2000)
    spans = {}
    for entry in bench_fleet(job(tmp_path, two_seconds, size=384), boards):
        assert entry.ok, entry.error
        starts = entry.results[0]["sample_starts_ns"]
        spans[entry.device] = (starts[0], starts[-1])
    (a0, a1), (b0, b1) = spans["b0"], spans["b1"]
    # the agents run on this machine, so their monotonic clocks are the same clock
    assert a0 < b1 and b0 < a1


def test_the_same_board_twice_is_refused(tmp_path):
    local = parse_url("local")
    with pytest.raises(UsageError, match="more than once: local"):
        bench_fleet(job(tmp_path), [local, local])


def test_file_names_per_board_and_backend():
    assert file_part("ssh://pi@10.0.0.5:22") == "pi_10.0.0.5_22"
    assert file_part("labgrid://rack-1/pi") == "rack-1_pi"
    assert file_part("pi5") == "pi5"
    assert result_path(Path("o/r.json"), "pi5", "ort", 1) == Path("o/r.pi5.json")
    assert result_path(Path("o/r.json"), "pi5", "tvm", 2) == Path("o/r.pi5.tvm.json")
    assert summary_path(Path("o/r.json")) == Path("o/r.fleet.json")


def test_boards_that_share_a_file_name_are_refused(tmp_path):
    from edgert.fleet import FleetEntry

    entries = [FleetEntry("ssh://a@h:1"), FleetEntry("ssh://a/h/1")]
    with pytest.raises(UsageError, match="same file name part: a_h_1"):
        write_results(entries, tmp_path / "r.json")
    assert not (tmp_path / "r.fleet.json").exists()


@needs_sshd
def test_cli_fleet_writes_one_file_per_board_and_exits_1(tmp_path, sshd):
    with closed_port() as down:
        cli_fleet_with_one_board_down(tmp_path, sshd, down)


def cli_fleet_with_one_board_down(tmp_path: Path, sshd, down: int) -> None:
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    agent = stdio_agent_command(tmp_path / "store").replace('"', '\\"')  # a TOML string
    (tmp_path / "edgert.toml").write_text("".join(
        f'[devices.{name}]\nurl = "ssh://{sshd.user}@127.0.0.1:{port}"\n'
        f'ssh_key = "{sshd.client_key}"\nknown_hosts = "{sshd.known_hosts}"\nagent_cmd = "{agent}"\n'
        for name, port in (("pi5", sshd.port), ("orin", down))))
    proc = run_cli("bench", str(model), "--runs", "10", "--quiet", "--all-devices",
                   "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert json.loads((tmp_path / "r.pi5.json").read_text())["latency_ms"]["n"] == 10
    assert not (tmp_path / "r.orin.json").exists()
    summary = json.loads((tmp_path / "r.fleet.json").read_text())
    assert [(b["device"], b["status"]) for b in summary["boards"]] == [("pi5", "ok"), ("orin", "error")]
    assert proc.stderr.strip().splitlines()[-1].startswith("edgert: error: orin: cannot connect")
