"""Loading and running a bundle (``edgert.load``) and an All-in-One file (``edgert.variants.open``)
imports the runtime only: no host module of edgert, no onnx, no TVM compiler."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, run_python

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

# edgert's host modules: partitioner, specialiser, compiler, validator, pruner, calibrator,
# converters and compilers, tuner, sweeps.
HOST_MODULES = (
    "edgert.dynamic.partition", "edgert.dynamic.specialize", "edgert.dynamic.compiler",
    "edgert.dynamic.validate", "edgert.dynamic.normalize", "edgert.dynamic.engines",
    "edgert.dynamic.guard", "edgert.dynamic.whole", "edgert.dynamic.candidates",
    "edgert.dynamic.carry", "edgert.dynamic.tune",
    "edgert.variants.prune", "edgert.variants.groups", "edgert.variants.calibrate",
    "edgert.sweep", "edgert.device_agents.sweep",
)
HOST_PREFIXES = ("edgert.compilers", "onnx", "tvm.relax", "tvm.s_tir", "edgert.commands")

_SCRIPT = """
import json, sys
import edgert
from edgert.tensors import random_feeds

with edgert.load(sys.argv[1]) as bundle:
    bundle_out = bundle.run(random_feeds(bundle.inputs, {"N": 2}, seed=0))
import edgert.variants
with edgert.variants.open(sys.argv[2]) as aio:
    aio.select_index(len(aio.levels) - 1)
    aio_out = aio.run(random_feeds(aio.inputs, {}, seed=0))
print(json.dumps({"modules": sorted(sys.modules),
                  "shapes": [list(o.shape) for o in bundle_out + aio_out]}))
"""


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from edgert.dynamic import compile as compile_bundle
    from edgert.variants.prune import prune
    from test_variants_prune import tiny_model

    work = tmp_path_factory.mktemp("runtime-imports")
    bundle = compile_bundle(REPO / "edgert" / "zoo" / "dynamic" / "symbolic_batch.onnx", backend="ort",
                            out=work / "symbolic_batch.edgert")
    aio = work / "tiny.aio"
    prune(tiny_model(work / "tiny.onnx"), [0, 0.5], aio)
    return Path(bundle), aio


def test_loading_a_bundle_and_an_aio_file_imports_no_host_module(artifacts: tuple[Path, Path]) -> None:
    bundle, aio = artifacts
    proc = run_python(_SCRIPT, str(bundle), str(aio))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["shapes"][0][0] == 2 and report["shapes"][-1][0] == 1  # both really ran
    modules = set(report["modules"])
    assert "edgert.dynamic.runtime" in modules and "edgert.variants.runtime" in modules
    host = sorted(m for m in modules
                  if m in HOST_MODULES or any(m == p or m.startswith(p + ".") for p in HOST_PREFIXES))
    assert host == []


def test_the_host_entry_points_still_resolve_lazily() -> None:
    proc = run_python("import sys, edgert, edgert.dynamic as d\n"
                      "before = 'edgert.dynamic.compiler' in sys.modules\n"
                      "print(before, d.compile.__module__, d.validate.__module__, edgert.compile is d.compile)\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "edgert.dynamic.compiler", "edgert.dynamic.validate", "True"]


def test_running_a_model_writes_nothing_outside_edgerts_own_directories(tmp_path: Path) -> None:
    """ONNX Runtime 1.32 started Microsoft's telemetry at import: a device id and an event
    database under $XDG_CACHE_HOME/Microsoft (an agent wrote them outside its store, on the
    board). Only edgert's own cache may appear."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / "cache"), XDG_DATA_HOME=str(home / "data"),
               XDG_CONFIG_HOME=str(home / "config"), XDG_STATE_HOME=str(home / "state"))
    proc = subprocess.run([sys.executable, "-m", "edgert", "bench", "zoo:resnet", "--runs", "3", "--warmup", "1",
                           "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file())
    assert all(path.startswith("cache/edgert/") for path in written), written
