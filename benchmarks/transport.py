"""Transport benchmarks, each against a peer measured in the same run.

    .venv/bin/python benchmarks/transport.py [--out benchmarks/results/transport.json]

1. Upload throughput over SSH on loopback (edgert's resumable chunked upload into the agent's
   store) vs `scp` of the same file to the same sshd. Target: >= 0.8x scp.
2. Serial effective payload rate vs the line rate at 115200 and 921600 baud. A pty ignores the
   baud rate, so the line is EMULATED by a proxy that paces bytes at 10 bit times per byte;
   the numbers say how much of a real line edgert's link layer would use. Target: >= 85%.
3. Round-trip latency of an empty request (`ping`) over SSH and over the serial line.
Needs sshd and scp (openssh-server, openssh-client).
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serial_line import Line  # noqa: E402  (test helpers: real pty pairs, pacing proxy)
from sshd import start_sshd  # noqa: E402

from edgert import device_facts  # noqa: E402
from edgert.devices.address import parse_url  # noqa: E402
from edgert.devices.connect import open_client  # noqa: E402

AGENT = [sys.executable, "-m", "edgert", "agent"]


def ssh_upload(work: Path, size_mb: int, repeats: int) -> dict:
    server = start_sshd(work / "sshd")
    blob = work / "blob.bin"
    blob.write_bytes(np.random.default_rng(0).bytes(size_mb << 20))
    try:
        edgert_s, scp_s, rtt_us = [], [], []
        for i in range(repeats):
            store = work / f"store{i}"
            addr = parse_url(server.url).replace(
                ssh_key=server.client_key, known_hosts=server.known_hosts,
                agent_cmd=" ".join(AGENT + ["--stdio", "--store", str(store)]))
            with open_client(addr) as client:
                t0 = time.perf_counter()
                client.upload(blob)
                edgert_s.append(time.perf_counter() - t0)
                if i == 0:
                    for _ in range(500):
                        t0 = time.perf_counter()
                        client.call("ping")
                        rtt_us.append((time.perf_counter() - t0) * 1e6)
            shutil.rmtree(store)
            dest = work / f"scp{i}.bin"
            t0 = time.perf_counter()
            subprocess.run(["scp", "-q", "-i", str(server.client_key), "-P", str(server.port),
                            "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "BatchMode=yes",
                            str(blob), f"{server.user}@127.0.0.1:{dest}"], check=True)
            scp_s.append(time.perf_counter() - t0)
            dest.unlink()
    finally:
        server.stop()
    mb = size_mb
    edgert_mbs, scp_mbs = mb / statistics.median(edgert_s), mb / statistics.median(scp_s)
    return {"file_mib": size_mb, "repeats": repeats,
            "edgert_mib_s": edgert_mbs, "scp_mib_s": scp_mbs, "ratio_vs_scp": edgert_mbs / scp_mbs,
            "target": ">= 0.8", "ping_rtt_us_p50": statistics.median(rtt_us)}


def serial_rate(work: Path, baud: int, payload_bytes: int) -> dict:
    line = Line(baud=baud)
    agent = subprocess.Popen(AGENT + ["--serial", line.end_a, "--baud", str(baud), "--store",
                                      str(work / f"serial-store-{baud}")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    blob = work / f"serial-{baud}.bin"
    blob.write_bytes(np.random.default_rng(baud).bytes(payload_bytes))
    try:
        addr = parse_url(f"serial://{line.end_b}?baud={baud}")
        with open_client(addr) as client:
            rtt = []
            for _ in range(20):
                t0 = time.perf_counter()
                client.call("ping")
                rtt.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            client.upload(blob)
            seconds = time.perf_counter() - t0
    finally:
        agent.terminate()
        agent.wait(10)
        line.close()
    line_bytes_s = baud / 10
    return {"baud": baud, "payload_bytes": payload_bytes, "seconds": seconds,
            "payload_bytes_s": payload_bytes / seconds, "line_bytes_s": line_bytes_s,
            "fraction_of_line_rate": payload_bytes / seconds / line_bytes_s, "target": ">= 0.85",
            "ping_rtt_ms_p50": statistics.median(rtt), "emulated_line": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "transport.json")
    parser.add_argument("--ssh-mib", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        report = {
            "benchmark": "transport", "device": device_facts.collect("local"),
            "ssh_upload": ssh_upload(work, args.ssh_mib, repeats=3),
            "serial": [serial_rate(work, 115200, 96 << 10), serial_rate(work, 921600, 768 << 10)],
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    s = report["ssh_upload"]
    print(f"SSH upload {s['file_mib']} MiB: edgert {s['edgert_mib_s']:.0f} MiB/s, scp "
          f"{s['scp_mib_s']:.0f} MiB/s -> {s['ratio_vs_scp']:.2f}x scp (target >= 0.8); "
          f"ping RTT p50 {s['ping_rtt_us_p50']:.0f} us")
    for r in report["serial"]:
        print(f"serial {r['baud']} baud (EMULATED line): {r['payload_bytes_s'] / 1024:.1f} KiB/s payload = "
              f"{100 * r['fraction_of_line_rate']:.0f}% of line rate (target >= 85%); "
              f"ping RTT p50 {r['ping_rtt_ms_p50']:.1f} ms")


if __name__ == "__main__":
    main()
