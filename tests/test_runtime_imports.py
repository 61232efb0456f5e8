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
