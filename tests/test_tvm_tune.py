"""MetaSchedule tuning into a database, measured here and through a real TCP agent."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import needs

pytestmark = needs("tvm", "xgboost", "onnx")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgert.backends import BackendOptions, get_backend  # noqa: E402
from edgert.compilers import compile_for  # noqa: E402
from edgert.compilers.tvm import _apply_database, cache_path, import_onnx, legalize, onnx_signature  # noqa: E402
from edgert.compilers.tvm_db import (RECORDS, database_digest, database_dir, open_database,  # noqa: E402
                                     records_emulated)
from edgert.compilers.tvm_target import resolve_target  # noqa: E402
from edgert.compilers.tvm_tune import agent_timer, tune_model  # noqa: E402
from edgert.errors import BackendError, UsageError  # noqa: E402
from edgert.tensors import random_feeds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _matmul_model(path: Path) -> Path:
    """x[32,64] @ w[64,64] -> relu: one fused task, quick to build and time."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [32, 64])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [32, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(model, database) after 8 trials measured in this process."""
    work = tmp_path_factory.mktemp("tune")
    model = _matmul_model(work / "mm.onnx")
    seen = []
    summary = tune_model(model, work / "db", resolve_target("host"), trials=8, trials_per_iter=8,
                         seed=0, on_progress=seen.append)
    assert summary.trials == 8 and summary.stopped_by == "trials"
    assert [t.name for t in summary.tasks] == ["fused_matmul_relu"]
    assert summary.tasks[0].best_us is not None and summary.tasks[0].best_us > 0
    assert seen and seen[-1].tasks_measured == 1 and seen[-1].best_ms == pytest.approx(
        summary.tasks[0].best_us / 1e3)
    return model, work / "db"


def _records(db: Path) -> list[list]:
    path = database_dir(db, resolve_target("host")) / RECORDS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_every_measured_candidate_is_a_record(tuned: tuple[Path, Path]) -> None:
    _, db = tuned
    records = _records(db)
    assert len(records) == 8
    run_secs = [r[1][1] for r in records]  # [workload index, [trace, run_secs, target, args]]
    assert sum(secs is not None for secs in run_secs) >= 1


@pytest.mark.slow
def test_compile_applies_the_database_and_reuses_the_cache(tuned: tuple[Path, Path], tmp_path: Path) -> None:
    import tvm

    model, db = tuned
    target = resolve_target("host")
    mod = _apply_database(legalize(import_onnx(onnx.load(model), onnx_signature(onnx.load(model))[0]), target),
                          target, db)
    prims = [f for _, f in mod.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    assert prims and all(f.attrs.get("tirx.is_scheduled", False) for f in prims)

    assert cache_path(model, target, tmp_path, db) != cache_path(model, target, tmp_path)
    first = compile_for("tvm", model, BackendOptions(cache_dir=tmp_path, tuning_db=db))
    session = get_backend("tvm").load(first.path)
    options = first.notes
    assert options["cache"] == "miss" and options["tuning_db_sha256"] == database_digest(db, target)
    assert options["functions"] == 1 and options["tuned_functions"] == ["fused_matmul_relu"]
    feeds = random_feeds(session.inputs, {}, seed=3)
    np.testing.assert_allclose(session.run(feeds)[0], get_backend("ort").load(model).run(feeds)[0],
                               rtol=1e-4, atol=1e-4)
    again = compile_for("tvm", model, BackendOptions(cache_dir=tmp_path, tuning_db=db)).notes
    assert again["cache"] == "hit"
    assert again["artifact"] == options["artifact"]
    assert again["tuned_functions"] == ["fused_matmul_relu"]  # from the sidecar


def test_a_database_without_records_for_the_target_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        open_database(tmp_path / "db", resolve_target("host"))
    assert "edgert tune" in info.value.message
    assert database_dir(tmp_path, resolve_target("host")) != database_dir(tmp_path, resolve_target("aarch64"))


def test_cross_target_without_a_device_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        tune_model(_matmul_model(tmp_path / "mm.onnx"), tmp_path / "db", resolve_target("aarch64"), trials=4)
    assert "--device" in info.value.message


def test_neither_budget_nor_trials_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        tune_model(tmp_path / "missing.onnx", tmp_path / "db", resolve_target("host"))


_TUNE_SCRIPT = """
import sys
from pathlib import Path
from edgert.compilers.tvm_target import resolve_target
from edgert.compilers.tvm_tune import tune_model
tune_model(Path(sys.argv[1]), Path(sys.argv[2]), resolve_target("host"), time_budget_s=600,
           trials_per_iter=4)
"""


@pytest.mark.slow
def test_a_killed_tune_keeps_the_records_measured_so_far(tmp_path: Path) -> None:
    model = _matmul_model(tmp_path / "mm.onnx")
    db = tmp_path / "db"
    records = database_dir(db, resolve_target("host")) / RECORDS
    proc = subprocess.Popen([sys.executable, "-c", _TUNE_SCRIPT, str(model), str(db)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if records.exists() and len(records.read_text().splitlines()) >= 4:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    kept = [json.loads(line) for line in records.read_text().splitlines()]
    assert len(kept) >= 4
    library = compile_for("tvm", model, BackendOptions(cache_dir=tmp_path / "cache", tuning_db=db)).path
    session = get_backend("tvm").load(library)
    assert session.run(random_feeds(session.inputs, {}, seed=0))[0].shape == (32, 64)


@pytest.mark.slow
def test_candidates_timed_by_a_tcp_agent_within_a_time_budget(tmp_path: Path) -> None:
    from edgert.device_agents import serve
    from edgert.device_agents.agent import Agent
    from edgert.device_agents.store import ArtifactStore
    from edgert.devices.address import parse_url
    from edgert.devices.connect import open_client

    token = tmp_path / "token"
    token.write_text("correct-horse-battery-staple\n")
    agent = Agent(ArtifactStore(tmp_path / "store"))
    assert "tvm.time" in agent.handlers
    ready = threading.Event()
    server = threading.Thread(target=serve.serve_tcp, daemon=True,
                              args=(agent, "127.0.0.1", 0, serve.read_token(token), ready, 1))
    server.start()
    assert ready.wait(10)
    addr = parse_url(f"tcp://127.0.0.1:{ready.port}").replace(token_file=token)
    model = _matmul_model(tmp_path / "mm.onnx")
    with open_client(addr) as client:
        assert client.capabilities.emulated is False  # `edgert agent` without --emulated
        with pytest.raises(BackendError):  # the device's own errors come back as EdgertErrors
            agent_timer(client)(model, [{"shape": [1], "dtype": "float32"}])
        summary = tune_model(model, tmp_path / "db", resolve_target("host"), time_budget_s=1.0,
                             trials_per_iter=4, timer=agent_timer(client))
    server.join(10)
    assert summary.stopped_by == "budget" and summary.trials == 4  # one batch, then the budget ends it
    assert summary.tasks[0].best_us is not None
    assert not records_emulated(tmp_path / "db", resolve_target("host"))  # a real device's timings
    uploaded = [p for p in (tmp_path / "store").rglob("*") if p.is_file() and p.stat().st_size > 1000]
    assert len(uploaded) >= 4  # every candidate went to the device
    assert len(_records(tmp_path / "db")) == 4


@pytest.mark.slow
def test_tune_and_bench_with_the_database_through_the_cli(tmp_path: Path) -> None:
    import json

    from conftest import run_cli

    model = _matmul_model(tmp_path / "mm.onnx")
    db = tmp_path / "db"
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = run_cli("tune", str(model), "--db", str(db), "--trials", "8", "--trials-per-iter", "4",
                   "--json", str(tmp_path / "tune.json"), "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "tune.json").read_text())["trials"] >= 4
    out = tmp_path / "r.json"
    proc = run_cli("bench", str(model), "--backend", "tvm", "--tuning-db", str(db), "--runs", "5",
                   "--json", str(out), "--quiet", env=env)
    assert proc.returncode == 0, proc.stderr
    options = json.loads(out.read_text())["backend"]["options"]
    assert options["tuning_db_sha256"] and str(db) in str(options["tuning_db"])
