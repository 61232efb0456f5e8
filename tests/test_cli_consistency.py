"""The same conventions on every command: --json PATH|-, --debug anywhere, EDGERT_CACHE, units."""
from __future__ import annotations

import json

import numpy as np

from conftest import run_cli
from edgert.units import duration_ms, size_bytes, unit_for


def test_units_fit_the_value():
    assert duration_ms(0.000412) == "412 ns" and duration_ms(0.0123) == "12.3 µs"
    assert duration_ms(12.34567) == "12.35 ms" and duration_ms(1520.0) == "1.52 s"
    assert duration_ms(0.0) == "0 ms" and duration_ms(None) == "—"
    assert unit_for([0.0004, 3.0]) == ("ns", 1e6) and unit_for([5.0, 300.0]) == ("ms", 1.0)


def test_json_dash_prints_the_result_alone_and_null_claims_no_engine_version(matmul_model):
    proc = run_cli("bench", str(matmul_model), "--backend", "null", "--runs", "20",
                   "--json", "-", "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)  # nothing else on stdout: the table went to stderr
    assert r["schema"] == "edgert.result/2" and r["backend"]["name"] == "null"
    assert r["backend"]["version"] == "none (harness overhead only)" != np.__version__
    assert "p50" in proc.stderr and (" ns" in proc.stderr or " µs" in proc.stderr)  # never 0.000 ms
    assert "0.000" not in proc.stderr
    info = run_cli("device", "info", "--json", "-")
    assert info.returncode == 0 and json.loads(info.stdout)["device"]["transport"] == "local"


def test_debug_is_accepted_anywhere(tmp_path):
    missing = str(tmp_path / "none.onnx")
    plain = run_cli("bench", missing)
    assert plain.returncode != 0 and "Traceback" not in plain.stderr
    for args in (("--debug", "bench", missing), ("bench", missing, "--debug"), ("bench", "--debug", missing)):
        proc = run_cli(*args)
        assert proc.returncode == plain.returncode and "Traceback" in proc.stderr, args
        assert proc.stderr.strip().splitlines()[-1] == plain.stderr.strip()


def test_edgert_cache_is_the_root_of_every_cache(tmp_path, monkeypatch):
    from edgert import chatter
    from edgert.cache import cache_root
    from edgert.compilers import litert, tvm

    monkeypatch.setenv("EDGERT_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    assert tvm.default_cache_dir() == tmp_path / "c" / "tvm"
    assert litert.default_cache_dir() == tmp_path / "c" / "tflite"
    assert chatter.log_path("tvm") == tmp_path / "c" / "logs" / "tvm.log"  # engine logs too
    monkeypatch.delenv("EDGERT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert tvm.default_cache_dir() == tmp_path / "xdg" / "edgert" / "tvm"


def test_a_tflite_conversion_lands_under_edgert_cache(tmp_path):
    proc = run_cli("bench", "zoo:resnet", "--backend", "tflite", "--runs", "3", "--warmup", "0", "--quiet",
                   env={"EDGERT_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    assert [p.suffix for p in (tmp_path / "cache" / "tflite").iterdir()] == [".tflite"]


def test_sizes_stay_short_however_large() -> None:
    """A hand-edited peak_rss_bytes of 1.5e300 printed 300 digits of GiB."""
    assert [size_bytes(v) for v in (0, 2048, 3 << 30, 5 << 40)] == ["0 B", "2.0 KiB", "3.0 GiB", "5.0 TiB"]
    assert size_bytes(1.5e300) == "1.36e+288 TiB"
