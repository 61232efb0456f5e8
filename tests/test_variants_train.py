"""The digits accuracy experiment end to end, on a small slice of the data (needs the torch extra)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import needs

pytestmark = needs("torch", "sklearn")

REPO = Path(__file__).resolve().parents[1]


def test_one_epoch_run_writes_a_consistent_table(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "tools"))
    import train_digits_aio

    out = tmp_path / "out"
    assert train_digits_aio.main(["--epochs", "2", "--finetune-epochs", "1", "--train-limit", "256", "--out", str(out),
                                  "--work", str(tmp_path / "work")]) == 0
    result = json.loads((out / "variants_accuracy.json").read_text())
    rows = result["accuracy"]
    assert all(len(v) == 4 for v in rows.values())
    # level 0 of the pruned file is the exported model: same accuracy as torch
    assert rows["pruned only"][0] == pytest.approx(result["model"]["torch_test_accuracy"], abs=1 / 450)
    assert result["model"]["aio_file_bytes"] <= 1.3 * result["model"]["onnx_weight_bytes"] + 64 * 1024
    assert "| 0.5 |" in (out / "variants_accuracy.md").read_text()
    # the fine-tuned file carries the accuracy it was measured at, for the report's fronts
    from edgert.variants import aiofile

    stored = aiofile.read(tmp_path / "work" / "digits-aio.aio").meta["accuracy"]
    assert stored == {str(r): a for r, a in zip(result["ratios"], rows["All-in-One fine-tuned (shared weights)"])}
