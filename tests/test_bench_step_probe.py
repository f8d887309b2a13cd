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


def _probe_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("step_probe_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _variant(name, batch, tokens_per_s, largest, oom=False):
    v = {"variant": name, "batch_size": batch, "tokens_per_s": tokens_per_s, "largest_peak_gib": largest}
    return {**v, "oom": True} if oom else v


def test_pick_batch_takes_the_fastest_fused_batch_whose_largest_step_fits():
    pick = _probe_module().pick_batch
    variants = [_variant("plain", 32, 15000, 100.0), _variant("fused", 32, 17000, 90.0),
                _variant("fused+adamw", 32, 19000, None), _variant("fused@48", 48, 18500, 126.0)]
    assert pick(variants, 139.8)[0] == 48  # H200: 126 GiB < 0.92 x 139.8
    batch, why = pick(variants, 79.6)  # H100: neither fused step fits, so the fallback
    assert batch == 16 and "none" in why
    assert pick(variants, 100.0)[0] == 32  # only fused@32's 90 GiB fits
    variants[3] = _variant("fused@48", 48, 18500, "oom")
    assert pick(variants, 139.8)[0] == 32  # a largest step that ran out of memory never counts
    variants[3] = _variant("fused@48", 48, 0, 50.0, oom=True)
    assert pick(variants, 139.8)[0] == 32


def test_pick_without_a_probe_result_prints_the_safe_batch(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH), "--pick", str(tmp_path / "missing.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "16"
    assert "no probe result" in proc.stderr
