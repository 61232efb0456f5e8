"""labgrid:// through a real coordinator and exporter on 127.0.0.1, reaching the test's own sshd."""
from __future__ import annotations

import dataclasses
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent_env import private_env, start_agent, stdio_agent_command
from conftest import REPO, make_matmul_model
from labgrid_env import labgrid_available, start_lab
from ports import closed_port, listening_port
from sshd import sshd_available

from edgert.bench import BenchJob, bench
from edgert.devices.labgrid import LabgridAddress, acquired, expand, parse_url
from edgert.errors import DeviceError, UsageError
from edgert.settings import BenchSettings


def test_urls_name_a_place_or_select_by_tags():
    assert parse_url("labgrid://Rack-1_pi") == LabgridAddress("labgrid", "labgrid://Rack-1_pi",
                                                              place="Rack-1_pi")
    by_tag = parse_url("labgrid://?board=pi5&rack=a", "pis")
    assert (by_tag.name, by_tag.place, by_tag.tags) == ("pis", "", (("board", "pi5"), ("rack", "a")))
    for bad in ("labgrid://", "labgrid://pi?board=pi5", "labgrid://pi/x", "labgrid://?board="):
        with pytest.raises(UsageError, match="labgrid://PLACE"):
            parse_url(bad)


needs_lab = pytest.mark.skipif(not (labgrid_available() and sshd_available()),
                                    reason="needs labgrid (pip install labgrid) and OpenSSH's sshd")
ME = f"{socket.gethostname()}/{getpass.getuser()}"


@pytest.fixture(scope="module")
def closed():
    """Ports nothing serves, held for the module: pi-b's sshd (a board that is down) and uart's."""
    with closed_port() as down, closed_port() as uart:
        yield {"down": down, "uart": uart}


@pytest.fixture(scope="module")
def lab(tmp_path_factory, sshd, lab_serial, closed):
    """Places: pi-a (board up), pi-b (its sshd port is closed), both tagged board=pi5; uart (a
    serial port nobody serves); wire (a raw TCP serial port with an agent on its far end); iso
    (behind an isolated exporter); bare (matches nothing)."""
    lab = start_lab(tmp_path_factory.mktemp("lab"))
    try:
        lab.export({
            "exp": (f"""
up:
  NetworkService: {{address: 127.0.0.1, port: {sshd.port}, username: {sshd.user}}}
down:
  NetworkService: {{address: 127.0.0.1, port: {closed['down']}, username: {sshd.user}}}
uart:
  NetworkSerialPort: {{host: 127.0.0.1, port: {closed['uart']}, speed: 921600, protocol: rfc2217}}
wire:
  NetworkSerialPort: {{host: 127.0.0.1, port: {lab_serial.port}, speed: 115200, protocol: raw}}
""",),
            "iso": (f"up:\n  NetworkService: {{address: 127.0.0.1, port: {sshd.port}, "
                    f"username: {sshd.user}}}\n", "--isolated"),
        })
        lab.add_places({
            "pi-a": ("exp/up/NetworkService", {"board": "pi5"}),
            "pi-b": ("exp/down/NetworkService", {"board": "pi5"}),
            "uart": ("exp/uart/NetworkSerialPort", {"board": "uart"}),
            "wire": ("exp/wire/NetworkSerialPort", {}),
            "iso": ("iso/up/NetworkService", {}),
            "bare": ("nobody/none/NetworkService", {}),
        })
        yield lab
    finally:
        lab.stop()


@dataclasses.dataclass
class SerialBoard:
    port: int  # TCP port of the ser2net-style bridge
    store: Path


@pytest.fixture(scope="module")
def lab_serial(tmp_path_factory):
    """A board on a serial line, exported the way ser2net does it: socat joins a TCP port (raw
    protocol) to a pty whose other end an ``edgert agent --serial`` serves."""
    if shutil.which("socat") is None:
        pytest.skip("needs socat (apt-get install socat)")
    work = tmp_path_factory.mktemp("uart")
    tty = work / "tty"
    bridge = subprocess.Popen(["socat", f"PTY,link={tty},raw,echo=0",  # one connection, one test
                               "TCP-LISTEN:0,bind=127.0.0.1"],
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not tty.exists():  # socat creates the pty before it listens
        if time.monotonic() > deadline or bridge.poll() is not None:
            bridge.kill()
            raise RuntimeError("socat did not create its pty")
        time.sleep(0.05)
    agent = start_agent("--serial", str(tty), "--store", str(work / "store"),
                        env=private_env(work / "home"), cwd=REPO, stderr=subprocess.DEVNULL)
    try:
        yield SerialBoard(listening_port(bridge), work / "store")
    finally:
        for proc in (agent, bridge):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def address(lab, sshd, store: Path, url: str) -> LabgridAddress:
    return parse_url(url).replace(
        coordinator=lab.address, ssh_key=sshd.client_key, known_hosts=sshd.known_hosts,
        agent_cmd=stdio_agent_command(store))


def job(tmp_path: Path, settings: BenchSettings = BenchSettings(warmup_runs=1, runs=20)) -> BenchJob:
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    return BenchJob(model=model, backends=("ort",), settings=settings)


@needs_lab
def test_bench_through_a_place_then_it_is_released(tmp_path, lab, sshd, monkeypatch):
    monkeypatch.setenv("LG_COORDINATOR", lab.address)  # the coordinator labgrid users already set
    addr = dataclasses.replace(address(lab, sshd, tmp_path / "store", "labgrid://pi-a"),
                               coordinator=None)
    with acquired(addr) as reached:
        assert lab.acquired_by("pi-a") == ME
        assert (reached.scheme, reached.host, reached.port, reached.user) == \
            ("ssh", "127.0.0.1", sshd.port, sshd.user)
        assert reached.name == "labgrid://pi-a" and reached.ssh_key == sshd.client_key
        results = bench(job(tmp_path), reached)
    assert lab.acquired_by("pi-a") is None
    assert results[0]["device"]["transport"] == "ssh" and results[0]["latency_ms"]["n"] == 20


@needs_lab
def test_released_when_the_benchmark_fails(tmp_path, lab, sshd):
    with pytest.raises(DeviceError, match="cannot connect"):
        with acquired(address(lab, sshd, tmp_path / "store", "labgrid://pi-b")) as reached:
            assert lab.acquired_by("pi-b") == ME
            bench(job(tmp_path), reached)
    assert lab.acquired_by("pi-b") is None


@needs_lab
def test_released_on_ctrl_c(tmp_path, lab, sshd):
    with pytest.raises(KeyboardInterrupt):
        with acquired(address(lab, sshd, tmp_path / "store", "labgrid://pi-a")):
            assert lab.acquired_by("pi-a") == ME
            raise KeyboardInterrupt
    assert lab.acquired_by("pi-a") is None


@needs_lab
def test_a_place_held_by_someone_else_is_refused_and_a_tag_takes_the_idle_one(tmp_path, lab, sshd):
    lab.client("-p", "pi-a", "acquire", user="alice")
    try:
        with pytest.raises(DeviceError, match="pi-a is already acquired .*/alice"):
            with acquired(address(lab, sshd, tmp_path, "labgrid://pi-a")):
                pass
        with acquired(address(lab, sshd, tmp_path, "labgrid://?board=pi5")) as reached:
            assert reached.name == "labgrid://pi-b" and lab.acquired_by("pi-b") == ME
        assert lab.acquired_by("pi-a").endswith("/alice")  # not ours to release
    finally:
        lab.client("-p", "pi-a", "release", user="alice")
    assert lab.acquired_by("pi-b") is None


@needs_lab
def test_tags_expand_to_every_matching_place(tmp_path, lab, sshd):
    places = expand(address(lab, sshd, tmp_path, "labgrid://?board=pi5"))
    assert [(p.place, p.name) for p in places] == [("pi-a", "labgrid://pi-a"), ("pi-b", "labgrid://pi-b")]
    assert all(p.ssh_key == sshd.client_key and p.coordinator == lab.address for p in places)
    with pytest.raises(DeviceError, match="no labgrid place has the tags board=orin"):
        expand(address(lab, sshd, tmp_path, "labgrid://?board=orin"))


@needs_lab
def test_a_serial_port_is_reached_as_a_serial_address(tmp_path, lab, sshd, closed):
    with acquired(address(lab, sshd, tmp_path, "labgrid://uart")) as reached:
        assert (reached.scheme, reached.path, reached.baud) == \
            ("serial", f"rfc2217://127.0.0.1:{closed['uart']}", 921600)
    assert lab.acquired_by("uart") is None


@needs_lab
def test_bench_through_a_serial_place(tmp_path, lab, sshd, lab_serial):
    with acquired(address(lab, sshd, tmp_path, "labgrid://wire")) as reached:
        assert (reached.scheme, reached.path) == ("serial", f"socket://127.0.0.1:{lab_serial.port}")
        results = bench(job(tmp_path), reached)
    assert lab.acquired_by("wire") is None
    assert results[0]["device"]["transport"] == "serial" and results[0]["latency_ms"]["n"] == 20
    assert any(lab_serial.store.rglob("*")), "the model went into the serial agent's store"


@needs_lab
@pytest.mark.parametrize("place, why", [
    ("iso", "reachable only through the exporter host"),
    ("bare", "neither a NetworkService nor a NetworkSerialPort"),
    ("nowhere", "has no place 'nowhere'; places: bare, iso, pi-a, pi-b, uart, wire"),
])
def test_unreachable_places_are_refused_and_left_free(tmp_path, lab, sshd, place, why):
    with pytest.raises(DeviceError, match=why):
        with acquired(address(lab, sshd, tmp_path, f"labgrid://{place}")):
            pass
    if place != "nowhere":
        assert lab.acquired_by(place) is None


@pytest.mark.skipif(not labgrid_available(), reason="needs labgrid (pip install labgrid)")
def test_coordinator_down_names_it(tmp_path):
    with closed_port() as port, pytest.raises(DeviceError,
                                              match=f"labgrid coordinator at 127.0.0.1:{port}"):
        with acquired(parse_url("labgrid://pi").replace(coordinator=f"127.0.0.1:{port}")):
            pass


@needs_lab
def test_fleet_over_tagged_places_one_down(tmp_path, lab, sshd):
    from edgert.fleet import bench_fleet

    entries = bench_fleet(job(tmp_path), [address(lab, sshd, tmp_path / "s", "labgrid://?board=pi5")])
    assert [(e.device, e.ok) for e in entries] == [("labgrid://pi-a", True), ("labgrid://pi-b", False)]
    up, down = entries
    assert up.reached == f"ssh://{sshd.user}@127.0.0.1:{sshd.port}"
    assert up.results[0]["latency_ms"]["n"] == 20
    assert isinstance(down.error, DeviceError) and "cannot connect" in down.error.message
    assert lab.acquired_by("pi-a") is None and lab.acquired_by("pi-b") is None


FLEET_SCRIPT = """
import faulthandler, signal, sys
faulthandler.register(signal.SIGUSR1, all_threads=True)  # the test's stack dump if it hangs
# Ctrl-C as in a terminal: a suite started in the background (`tools/test.sh &` from a script)
# hands its children SIGINT ignored, and Python then raises no KeyboardInterrupt
signal.signal(signal.SIGINT, signal.default_int_handler)
from pathlib import Path
from edgert.bench import BenchJob
from edgert.devices.labgrid import parse_url
from edgert.fleet import bench_fleet
from edgert.settings import BenchSettings

model, coordinator, key, known_hosts, agent_cmd = sys.argv[1:]
addr = parse_url("labgrid://pi-a").replace(
    coordinator=coordinator, ssh_key=Path(key), known_hosts=Path(known_hosts),
    agent_cmd=agent_cmd)
settings = BenchSettings(warmup_runs=1, runs=10_000_000)  # ends only by the interrupt
bench_fleet(BenchJob(model=Path(model), backends=("ort",), settings=settings), [addr])
"""


@needs_lab
def test_ctrl_c_during_a_fleet_run_releases_the_places(tmp_path, lab, sshd):
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False)
    proc = subprocess.Popen(
        [sys.executable, "-c", FLEET_SCRIPT, str(model), lab.address, str(sshd.client_key),
         str(sshd.known_hosts), stdio_agent_command(tmp_path / "store")],
        cwd=REPO, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        while lab.acquired_by("pi-a") is None:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.2)
        time.sleep(2)  # the agent is measuring now
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)
            time.sleep(2)
            proc.kill()
            pytest.fail("the fleet run did not end within 60 s of Ctrl-C; its threads:\n"
                        + proc.communicate()[1][-8000:])
    finally:
        proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in err
    assert lab.acquired_by("pi-a") is None
