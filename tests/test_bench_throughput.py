"""bench/train_throughput.py: the naive trl baseline case and its like-for-like Unsloth pair.

The GPU cases run on the H200 machine only; here the case table is checked, and the `tiny-trl`
case runs the whole trl code path on the CPU when trl and datasets are importable
(`PYTHONPATH=/tmp/trlsite`, see the bench's docstring); otherwise that test is skipped.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("train_throughput_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ratio_pairs_name_known_cases(bench):
    for a, b in bench.RATIOS:
        assert a in bench.CASES and b in bench.CASES, (a, b)
    assert ("g3-1b-unsloth-b8", "g3-1b-trl") in bench.RATIOS
    assert ("g3-1b-unsloth-compiled", "g3-1b-trl") in bench.RATIOS


@pytest.mark.parametrize("other", ["g3-1b-unsloth-b8", "g3-1b-unsloth-b8-nocompile", "g3-1b-transformers-b8"])
def test_batch8_cases_match_the_naive_baseline(bench, other):
    """Like for like: same model shape, same rows file, same batch, checkpointing and step count."""
    shape, backend, cfg, rows, _ = bench.CASES["g3-1b-trl"]
    o_shape, _, o_cfg, o_rows, _ = bench.CASES[other]
    assert backend == "trl"
    assert (o_shape, o_rows) == (shape, rows)
    assert (shape, rows) == (bench.CASES["g3-1b-transformers"][0], bench.CASES["g3-1b-transformers"][3])
    for key in ("batch_size", "grad_accum", "gradient_checkpointing", "max_steps"):
        assert o_cfg[key] == cfg[key], key
    assert cfg["batch_size"] == 8 and cfg["gradient_checkpointing"] is True


def test_sharegpt_rows_become_prompt_completion(bench):
    row = [{"from": "system", "value": "You are Ilsa."}, {"from": "human", "value": "Who?"},
           {"from": "gpt", "value": "Mara."}, {"from": "human", "value": "Where?"},
           {"from": "gpt", "value": "Brindle."}]
    pc = bench.sharegpt_to_prompt_completion(row)
    assert [m["role"] for m in pc["prompt"]] == ["system", "user", "assistant", "user"]
    assert pc["completion"] == [{"role": "assistant", "content": "Brindle."}]
    single = bench.sharegpt_to_prompt_completion(row[:3])
    assert single["prompt"][-1] == {"role": "user", "content": "Who?"}
    assert single["completion"][0]["content"] == "Mara."


@pytest.mark.torch
@pytest.mark.slow
def test_tiny_trl_case_trains_on_the_cpu(bench, tmp_path):
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    record = bench.run_case("tiny-trl", tmp_path, warm=3)
    assert record["ok"], record.get("log_tail")
    assert record["backend"] == "trl" and record["steps"] == 8
    assert record["steady_tokens_per_s"] > 0 and math.isfinite(record["final_loss"])
    trl = record["trl"]
    assert trl["packing"] is False and trl["padding_free"] is False
    assert trl["loss_on"].startswith("completion")
    assert 0 < trl["trained_token_share"] < 0.5  # the persona and question are not trained
    assert trl["first_row_trained_text"].startswith("The keys of tower 0")
    assert "<end_of_turn>" in trl["first_row_trained_text"]
    assert trl["same_tokens_and_labels_as_lorekit"]["ids"] == f"{record['rows']}/{record['rows']}"
    assert (tmp_path / "out-tiny-trl" / "adapter" / "adapter_model.safetensors").is_file()
