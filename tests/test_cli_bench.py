"""``edgert bench`` end to end on a real ONNX Runtime session, and its bad-input errors."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli


def test_bench_writes_result_file(tmp_path, matmul_model):
    out = tmp_path / "r.json"
    csv = tmp_path / "r.csv"
    proc = run_cli("bench", str(matmul_model), "--shape", "N=4", "--runs", "40",
                   "--json", str(out), "--csv", str(csv), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["schema"] == "edgert.result/2"
    assert r["model"]["sha256"] == hashlib.sha256(matmul_model.read_bytes()).hexdigest()
    assert r["model"]["inputs"] == [{"name": "x", "shape": [4, 64], "dtype": "float32"}]
    assert r["backend"]["name"] == "ort" and r["backend"]["version"]
    assert r["device"]["transport"] == "local" and r["device"]["arch"]
    lat = r["latency_ms"]
    assert len(r["samples_ms"]) == 40 == lat["n"]
    assert lat["p50"] <= lat["p90"] <= lat["p99"]
    assert lat["ci95"][0] <= lat["p50"] <= lat["ci95"][1]
    assert lat["p50"] == np.median(r["samples_ms"])
    assert r["peak_rss_bytes"] > 0 and r["start_time"] <= r["end_time"]
    assert len(csv.read_text().splitlines()) == 41
    assert "p50" in proc.stdout
    # the standard metrics and what the machine was doing (edgert.result/2)
    assert r["compile_ms"] >= 0 and r["load_ms"] > 0 and r["first_inference_ms"] > 0
    assert r["scenario"] == {"name": "single-stream", "concurrency": 1, "throughput_ips": r["throughput_ips"],
                             "samples_per_query": 4, "samples_per_s": 4 * r["throughput_ips"]}
    window_s = (r["sample_starts_ns"][-1] - r["sample_starts_ns"][0]) / 1e9 + r["samples_ms"][-1] / 1e3
    assert r["throughput_ips"] == 40 / window_s
    assert len(r["run_metadata"]["before"]["loadavg"]) == 3 and "governors" in r["run_metadata"]["after"]
    assert lat["ci_method"] == "percentile bootstrap, 2000 resamples"
    for row in ("throughput", "compile (host)", "load", "first inference", "peak memory", "load avg before..after",
                "95% CI of p50 (bootstrap)"):
        assert row in proc.stdout


def test_offline_and_server_scenarios(tmp_path, matmul_model):
    out = tmp_path / "offline.json"
    proc = run_cli("bench", str(matmul_model), "--shape", "N=4", "--scenario", "offline", "--concurrency", "2",
                   "--runs", "60", "--warmup", "2", "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    s = r["scenario"]
    assert s["name"] == "offline" and s["concurrency"] == 2 and s["queries"] == 60 == len(r["samples_ms"])
    assert s["throughput_ips"] == r["throughput_ips"] == 60 / s["duration_s"]
    assert s["samples_per_query"] == 4 and s["samples_per_s"] == 4 * s["throughput_ips"]  # N=4: a batch
    assert "offline x2" in proc.stdout and "samples/s, batch 4" in proc.stdout
    out = tmp_path / "server.json"
    proc = run_cli("bench", str(matmul_model), "--shape", "N=4", "--scenario", "server", "--rate", "200",
                   "--runs", "50", "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    s = r["scenario"]
    assert s["name"] == "server" and s["rate_qps"] == 200 and s["queries"] == 50 == len(r["samples_ms"])
    assert s["service_ms"]["n"] == 50
    # latency counts from the scheduled arrival: never below the query's own service time
    assert r["latency_ms"]["min"] >= s["service_ms"]["min"] * (1 - 1e-9)
    assert r["sample_starts_ns"] == sorted(r["sample_starts_ns"])  # the Poisson arrival times
    assert "200 QPS offered" in proc.stdout
    bad = run_cli("bench", str(matmul_model), "--scenario", "server")
    assert bad.returncode == 2 and "--scenario server needs --rate QPS" in bad.stderr
    bad = run_cli("bench", str(matmul_model), "--concurrency", "2")
    assert bad.returncode == 2 and "only with --scenario offline or server" in bad.stderr


def test_a_result_1_file_reads_as_result_2(tmp_path):

    from edgert.result import read_json

    old_path = Path(__file__).parent / "fixtures" / "results" / "v1" / "resnet.ort.result1.json"
    old = json.loads(old_path.read_text())
    assert old["schema"] == "edgert.result/1" and "scenario" not in old
    r = read_json(old_path)
    assert r["schema"] == "edgert.result/2" and r["upgraded_from"] == "edgert.result/1"
    assert r["scenario"]["name"] == "single-stream" and r["load_ms"] is None and r["run_metadata"] is None
    assert r["throughput_ips"] > 0 and r["latency_ms"] == old["latency_ms"]
    (tmp_path / "future.json").write_text(json.dumps({**old, "schema": "edgert.result/9"}))
    proc = run_cli("compare", str(old_path), str(tmp_path / "future.json"))
    assert proc.returncode == 2 and "unknown result schema 'edgert.result/9'" in proc.stderr


def test_input_file_feeds_the_model(tmp_path, matmul_model):
    x = np.ones((3, 64), np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "r.json"
    proc = run_cli("bench", str(matmul_model), "--input", f"x={tmp_path / 'x.npy'}", "--runs", "5",
                   "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text())["model"]["inputs"][0]["shape"] == [3, 64]


def _fails(proc, *words):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgert: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_missing_file(tmp_path):
    _fails(run_cli("bench", str(tmp_path / "nope.onnx")), "no such model file")


def test_not_onnx(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    _fails(run_cli("bench", str(bad), "--runs", "1"), "cannot load")


def test_engine_not_installed(matmul_model):
    _fails(run_cli("bench", str(matmul_model), "--backend", "tvm", "--runs", "1", block=("tvm",)),
           "pip install 'edgert[tvm]'")


def test_unknown_backend(matmul_model):
    _fails(run_cli("bench", str(matmul_model), "--backend", "tensorrt"), "unknown backend", "ort")


def test_wrong_input_name_shape_dtype(tmp_path, matmul_model):
    np.save(tmp_path / "bad_shape.npy", np.ones((2, 3), np.float32))
    np.save(tmp_path / "bad_dtype.npy", np.ones((2, 64), np.float64))
    _fails(run_cli("bench", str(matmul_model), "--input", f"y={tmp_path / 'bad_shape.npy'}",
                   "--shape", "N=1", "--runs", "1"), "no input 'y'")
    _fails(run_cli("bench", str(matmul_model), "--input", f"x={tmp_path / 'bad_shape.npy'}",
                   "--runs", "1"), "shape", "[2, 3]")
    _fails(run_cli("bench", str(matmul_model), "--input", f"x={tmp_path / 'bad_dtype.npy'}",
                   "--runs", "1"), "float32", "float64")


def test_a_target_is_checked_before_compiling_and_only_taken_by_tvm(matmul_model):
    """--target with ORT alone was ignored without a word; a bad TVM target was refused only
    after 'compiling' was shown (an unknown CPU: after LLVM logged an error per function)."""
    _fails(run_cli("bench", str(matmul_model), "--backend", "ort", "--target", "aarch64", "--shape", "N=1"),
           "--target is TVM's")
    proc = run_cli("bench", str(matmul_model), "--backend", "tvm", "--shape", "N=1",
                   "--target", '{"kind": "llvm", "mcpu": "no-such-cpu"}')
    _fails(proc, "LLVM does not know CPU 'no-such-cpu'")
    assert "compiling" not in proc.stderr + proc.stdout


def test_a_size_given_twice_or_against_an_input_file_is_refused(tmp_path, matmul_model):
    """--shape N=2 beside an input file of N=4, or N given twice, silently kept one of them."""
    np.save(tmp_path / "x4.npy", np.ones((4, 64), np.float32))
    _fails(run_cli("bench", str(matmul_model), "--input", f"x={tmp_path / 'x4.npy'}", "--shape", "N=2",
                   "--runs", "1"), "input 'x' has N=4 but --shape says N=2")
    _fails(run_cli("bench", str(matmul_model), "--shape", "N=2", "--shape", "N=3", "--runs", "1"),
           "--shape N given twice")
    _fails(run_cli("bench", str(matmul_model), "--input", f"x={tmp_path / 'x4.npy'}",
                   "--input", f"x={tmp_path / 'other.npy'}", "--runs", "1"), "--input x given twice")


def test_symbolic_dim_needs_a_size(matmul_model):
    _fails(run_cli("bench", str(matmul_model), "--runs", "1"), "--shape N=")


def test_debug_shows_traceback(tmp_path):
    proc = run_cli("--debug", "bench", str(tmp_path / "nope.onnx"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_three_engines_side_by_side_on_a_zoo_model(tmp_path):
    """The README's main job with every engine: one result file each, outputs that agree."""
    out = tmp_path / "r.json"
    proc = run_cli("bench", "zoo:resnet", "--backend", "ort", "--backend", "tvm", "--backend", "tflite",
                   "--runs", "40", "--json", str(out), "--quiet",
                   env={"XDG_CACHE_HOME": str(tmp_path / "cache")})  # compiled artifacts stay in tmp
    assert proc.returncode == 0, proc.stderr
    results = {name: json.loads((tmp_path / f"r.{name}.json").read_text())
               for name in ("ort", "tvm", "tflite")}
    for name, r in results.items():
        assert r["backend"]["name"] == name and len(r["samples_ms"]) == 40
        assert r["model"]["sha256"] == results["ort"]["model"]["sha256"]
    for name in ("tvm", "tflite"):
        assert results[name]["agreement"]["against"] == "ort"
        assert results[name]["agreement"]["max_rel"] < 1e-2 and results[name]["agreement"]["max_abs"] < 1e-4
    for name in ("ort", "tvm", "tflite"):
        assert name in proc.stdout
    assert (tmp_path / "cache" / "edgert" / "tvm").is_dir()


def test_a_tflite_file_runs(tmp_path):
    out = tmp_path / "r.json"
    proc = run_cli("bench", "zoo:mobilenet_v2.tflite", "--backend", "tflite", "--runs", "10",
                   "--json", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["model"]["path"].endswith("mobilenet_v2.tflite") and r["backend"]["name"] == "tflite"
    assert "XNNPACK" not in proc.stderr  # LiteRT's delegate announcement goes to its engine log


def test_server_scenario_and_run_metadata_through_an_ssh_agent(tmp_path, sshd, matmul_model):
    from test_agent_ssh import device_args  # (the sshd fixture skips without OpenSSH)

    out = tmp_path / "r.json"
    proc = run_cli("bench", str(matmul_model), "--shape", "N=4", "--scenario", "server", "--rate", "100",
                   "--runs", "30", "--json", str(out), "--quiet", *device_args(sshd, tmp_path / "store"))
    assert proc.returncode == 0, proc.stderr
    r = json.loads(out.read_text())
    assert r["device"]["transport"] == "ssh" and r["scenario"]["name"] == "server"
    assert r["scenario"]["queries"] == 30 == len(r["samples_ms"]) and r["scenario"]["service_ms"]["n"] == 30
    assert set(r["run_metadata"]) == {"before", "after"} and r["load_ms"] > 0


def test_a_value_click_refuses_is_one_line_too(tmp_path):
    """click printed Usage:, a hint and a blank line before its Error:."""
    _fails(run_cli("bench", "zoo:resnet", "--runs", "abc"), "'abc' is not a valid integer", "edgert bench --help")
    _fails(run_cli("calibrate", str(tmp_path), "--emulated", "1.0"), "is a directory")
    assert "Usage:" in run_cli().stdout + run_cli().stderr  # a bare `edgert` still shows its help


def test_outputs_that_would_replace_a_result_are_refused(tmp_path, matmul_model):
    """--json and --csv on one path left the CSV alone; compare --json A overwrote result A."""
    out = tmp_path / "r.json"
    _fails(run_cli("bench", str(matmul_model), "--shape", "N=1", "--runs", "2", "--json", str(out), "--csv", str(out)),
           "--json and --csv are both")
    assert not out.exists()
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path, seed in ((a, "0"), (b, "1")):
        assert run_cli("bench", str(matmul_model), "--shape", "N=1", "--runs", "3", "--seed", seed,
                       "--json", str(path)).returncode == 0
    before = a.read_bytes()
    _fails(run_cli("compare", str(a), str(b), "--json", str(a)), "is also an input")
    assert a.read_bytes() == before


def test_engines_whose_outputs_differ_in_shape_say_so_in_the_table(tmp_path, matmul_model):
    """The null engine's (1,) output against ORT's: the row said 'nan'."""
    proc = run_cli("bench", "zoo:resnet", "--backend", "ort", "--backend", "null", "--runs", "3")
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "max abs diff" in line)
    assert "shapes differ" in row and "nan" not in row, row


def test_outputs_that_would_replace_an_input_are_refused(tmp_path, matmul_model):
    """run -o C.npz replaced the cases with outputs, bench --json M the model, validate --json
    its reference, prune -o its source: each exited 0."""
    import numpy as np

    cases = tmp_path / "cases.npz"
    np.savez(cases, **{"c0/x": np.ones((1, 4), np.float32)})
    x = tmp_path / "x.npy"
    np.save(x, np.ones((1, 4), np.float32))
    inputs = {p: p.read_bytes() for p in (matmul_model, cases, x)}
    for args in (("run", str(matmul_model), "--cases", str(cases), "-o", str(cases)),
                 ("run", str(matmul_model), "--input", f"x={x}", "-o", str(tmp_path / "o.npz"), "--json", str(x)),
                 ("bench", str(matmul_model), "--shape", "N=1", "--runs", "2", "--json", str(matmul_model)),
                 ("bench", str(matmul_model), "--input", f"x={x}", "--runs", "2", "--csv", str(x)),
                 ("sweep", str(matmul_model), "--emulated", "1.0", "--shape", "N=1", "--json", str(matmul_model)),
                 ("prune", str(matmul_model), "--ratios", "0,0.5", "-o", str(matmul_model))):
        _fails(run_cli(*args), "is also an input: it would be overwritten")
    assert {p: p.read_bytes() for p in inputs} == inputs


def test_a_device_node_or_a_pipe_is_written_through_not_replaced(tmp_path, matmul_model):
    """--json /dev/null (as root) replaced the device node with a regular file, breaking it for
    the whole machine; --json /dev/stdout into a pipe failed after measuring; a FIFO hung."""
    import os
    import stat
    import subprocess
    import sys

    node = tmp_path / "null"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        node = Path("/dev/null")  # not root: the real one cannot be replaced by us either
    proc = run_cli("bench", str(matmul_model), "--shape", "N=1", "--runs", "2", "--json", str(node))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_ISCHR(node.stat().st_mode)
    piped = subprocess.run(f"{sys.executable} -m edgert bench {matmul_model} --shape N=1 --runs 2 --quiet "
                           "--json /dev/stdout | cat", shell=True, capture_output=True, text=True, timeout=300)
    assert piped.returncode == 0, piped.stderr
    written, _ = json.JSONDecoder().raw_decode(piped.stdout[piped.stdout.index("{"):])  # the table follows
    assert written["schema"].startswith("edgert.result/")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    proc = run_cli("bench", str(matmul_model), "--shape", "N=1", "--runs", "2", "--json", str(fifo), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(reader.communicate(timeout=60)[0])["schema"].startswith("edgert.result/")
    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_a_failed_command_leaves_no_new_directories_and_dash_is_not_a_file_name(tmp_path, matmul_model):
    out = tmp_path / "new" / "a" / "b" / "r.json"
    _fails(run_cli("bench", str(tmp_path / "missing.onnx"), "--json", str(out)), "missing.onnx")
    assert not (tmp_path / "new").exists()
    for args in (("bench", str(matmul_model), "--shape", "N=1", "--runs", "2", "--csv", "-"),
                 ("report", str(tmp_path / "r.json"), "-o", "-")):
        _fails(run_cli(*args, cwd=tmp_path), "this option writes a file, not stdout")
    assert not (tmp_path / "-").exists()
    proc = run_cli("bench", str(matmul_model), "--shape", "N=1", "--runs", "2", "--json", str(out))
    assert proc.returncode == 0 and json.loads(out.read_text())["samples_ms"]  # made when written


def test_a_models_peak_memory_is_its_own(tmp_path, matmul_model):
    """Benching ORT after TVM showed the TVM compiler's 450 MiB as ORT's peak: the process's
    high-water mark from before the model was loaded."""
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("the peak is reset through /proc (Linux)")
    code = ("import numpy as np\n"
            "from edgert.runner import run_benchmark\n"
            "from edgert.settings import BenchSettings\n"
            "big = np.ones(400 << 17); big += 1; del big  # 400 MiB resident, then freed\n"
            "raw = run_benchmark(sys.argv[1], 'ort', BenchSettings(warmup_runs=1, runs=3), dims={'N': 1})\n"
            "print(raw['peak_rss_bytes'])\n")
    from conftest import run_python

    held = np.ones(400 << 17)  # 400 MiB in the process that starts it: ru_maxrss carried it over exec
    held += 1
    proc = run_python(code, str(matmul_model))
    del held
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) < 300 << 20
