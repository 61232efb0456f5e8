"""Progress of long steps: shown as soon as a step starts (never only at its end), bytes/rate/ETA
for uploads, silent with --quiet; the untuned-TVM hint."""
from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_cli
from edgert import progress
from edgert.commands.bench import untuned_tvm_hint
from sshd import sshd_available



def _until(condition) -> None:
    """Wait for ``condition`` (no time bound worth asserting on a loaded machine)."""
    for _ in range(3000):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("never happened")


def test_a_long_step_is_shown_while_it_runs_and_transfers_say_bytes_rate_and_eta():
    out = io.StringIO()
    with progress.Progress(stream=out):
        with progress.step("compiling m.onnx for host"):
            _until(lambda: out.getvalue() == "compiling m.onnx for host ...\n")  # before the step ends
        with progress.step("quick"):
            pass  # a step shorter than PLAIN_AFTER_S leaves no line: a quick error stays one line
        update, close = progress.transfer("upload m.onnx", 3_000_000)
        _until(lambda: out.getvalue().endswith("upload m.onnx: 0.0 kB/3.0 MB ...\n"))
        time.sleep(progress.PLAIN_INTERVAL_S)
        update(1_000_000)
        assert "upload m.onnx: 1.0 MB/3.0 MB" in out.getvalue() and "MB/s ETA" in out.getvalue()
        update(3_000_000)
        close()
    assert "upload m.onnx: 3.0 MB in " in out.getvalue() and "MB/s)" in out.getvalue()
    assert "quick" not in out.getvalue()


def test_a_resumed_transfer_counts_only_what_it_sent():
    """Resumed at 2 of 3 MB: the rate was computed over all 3 MB (347 MB/s after a kill)."""
    out = io.StringIO()
    with progress.Progress(stream=out):
        update, close = progress.transfer("upload m.onnx", 3_000_000, start=2_000_000)
        time.sleep(0.2)
        update(3_000_000)
        close()
    line = next(li for li in out.getvalue().splitlines() if " in " in li)
    assert line.startswith("upload m.onnx: 1.0 MB in ") and "resumed at 2.0 MB of 3.0 MB" in line
    rate = float(line.split("(")[1].split(" MB/s")[0])
    assert rate <= 1.0 / 0.2 + 0.01  # 1 MB in at least 0.2 s


def test_quiet_and_no_progress_print_nothing():
    out = io.StringIO()
    with progress.Progress(stream=out, quiet=True) as p:
        with progress.step("compiling"):
            pass
        p.task("ort")(5, 100.0)
        p.step("a command's own step").update("still quiet")
        time.sleep(progress.PLAIN_AFTER_S * 1.5)  # a timer would have fired by now
    with progress.step("outside any command") as handle:  # library code run by a program
        assert handle is None
    assert out.getvalue() == ""


def test_bench_says_it_is_loading_before_the_first_run():
    out = io.StringIO()
    with progress.Progress(stream=out) as p:
        tick = p.task("tvm")
        _until(lambda: out.getvalue() == "tvm: loading the model ...\n")
        tick(1, 10.0)


def test_a_cold_tvm_compile_shows_its_step_while_it_runs(tmp_path):
    """The line is on stderr while the compiler is still working (read before the process ends)."""
    proc = subprocess.Popen([sys.executable, "-m", "edgert", "compile", "zoo:resnet", "--backend", "tvm",
                             "--cache-dir", str(tmp_path / "cache"), "-o", str(tmp_path / "r.edgert")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        first = proc.stderr.readline()
        running = proc.poll() is None
        rest_err = proc.stderr.read()
        out = proc.stdout.read()
        assert proc.wait(600) == 0, rest_err
    finally:
        proc.kill()
    assert first == "compiling resnet.onnx for host (segments on tvm) ...\n"
    assert running or "r.edgert" in out  # seen before the end, unless the compile beat the read
    assert (tmp_path / "r.edgert").is_file()


@pytest.mark.skipif(not sshd_available(), reason="needs OpenSSH's sshd")
def test_push_over_ssh_shows_the_upload_and_quiet_hides_it(tmp_path, sshd):
    from test_agent_ssh import device_args

    from edgert.zoo import resolve

    model = resolve("zoo:resnet")
    size_mb = model.stat().st_size / 1e6
    proc = run_cli("push", str(model), *device_args(sshd, tmp_path / "store"))
    assert proc.returncode == 0, proc.stderr
    assert f"upload resnet.onnx: {size_mb:.1f} MB in " in proc.stderr and " MB/s)" in proc.stderr
    again = run_cli("push", str(model), "--quiet", *device_args(sshd, tmp_path / "store2"))
    assert again.returncode == 0 and again.stderr == ""


def _result(name: str, p50: float) -> dict:
    return {"backend": {"name": name}, "latency_ms": {"p50": p50}}


def test_untuned_tvm_much_slower_than_ort_gets_a_one_line_hint():
    hint = untuned_tvm_hint([_result("ort", 2.0), _result("tvm", 40.0)], "zoo:resnet", None)
    assert hint == ("hint: untuned TVM is 20x slower than ORT here; tune it (edgert tune zoo:resnet "
                    "--db tune.db --time-budget 600) and bench with --tuning-db tune.db")
    assert untuned_tvm_hint([_result("ort", 2.0), _result("tvm", 40.0)], "m", Path("db")) is None
    assert untuned_tvm_hint([_result("ort", 2.0), _result("tvm", 3.0)], "m", None) is None
    assert untuned_tvm_hint([_result("tvm", 40.0)], "m", None) is None
