"""bench/step_probe_gpu.py on the CPU (--smoke: tiny random Gemma 4): every variant times its steps, and the plain
and fused forwards (lorekit/train/fused.py) give the same loss on one fixed batch.

The E2B probe itself runs on the H200 machine only (bench/results/build_e2b_gpu.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "step_probe_gpu.py"


@pytest.mark.torch
@pytest.mark.slow
def test_smoke_probe_times_every_variant_and_the_losses_agree(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--steps", "3", "--batch-size", "3", "--batch-sizes", "6", "--out", str(out),
                           "--work", str(tmp_path / "w")], capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((out / "step_probe.json").read_text())
    names = [v["variant"] for v in result["variants"]]
    assert names == ["plain", "fused", "fused+adamw", "fused@6"]
    assert all(v["steps"] == 3 and v["step_s"] > 0 and v["tokens_per_s"] > 0 for v in result["variants"])
    assert [v["batch_size"] for v in result["variants"]] == [3, 3, 3, 6]
    assert len(result["batch_tokens"]) == 3 and min(result["batch_tokens"]) > 0
    plain, fused = result["fixed_loss"]["plain"], result["fixed_loss"]["fused"]
    assert plain > 0 and abs(plain - fused) <= 1e-4 * plain
    assert "| fused@6 | 6 |" in result["table"]
