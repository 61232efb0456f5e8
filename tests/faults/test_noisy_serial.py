"""Pushes complete over a serial line that damages about one byte in a thousand (issue 16, case 5)."""
from __future__ import annotations

import re

import pytest

from edgert.device_agents.framing import MIN_PAYLOAD_BYTES
from edgert.hashing import sha256_file
from conftest import make_matmul_model, run_cli
from serial_line import Line
from fault_agents import agent_log, start_agent, stop


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_push_over_a_1e3_byte_error_line_completes_and_reports_the_rate(tmp_path, seed):
    line = Line(flip_rate=8e-4, drop_rate=2e-4, seed=seed)  # ~1e-3 of bytes damaged, both directions
    agent = start_agent(tmp_path, "--serial", line.end_a)
    model = make_matmul_model(tmp_path / "m.onnx", symbolic=False, size=125)  # about 63 KB
    try:
        proc = run_cli("push", str(model), "--device", f"serial://{line.end_b}", timeout=600)
        assert proc.returncode == 0, proc.stderr + agent_log(tmp_path)
        sha = sha256_file(model)
        assert (tmp_path / "store" / "objects" / sha).read_bytes() == model.read_bytes()
        report = re.search(r"serial link: (\d+) damaged frames .*byte error rate about ([0-9.e+-]+)\), "
                           r"(\d+) of (\d+) frames sent were resends, frames shrunk to (\d+) bytes", proc.stderr)
        assert report, proc.stderr
        damaged, rate, resent = int(report[1]), float(report[2]), int(report[3])
        assert damaged > 0 and 1e-4 < rate < 1e-2 and resent > 0
        assert MIN_PAYLOAD_BYTES <= int(report[5]) < 1024  # the frames did adapt
        assert line.proxy.flipped + line.proxy.dropped > 50  # the line really was that bad
    finally:
        stop(agent)
        line.close()
