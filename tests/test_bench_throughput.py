"""bench/train_throughput.py and bench/train_e2b_gpu.py: the parts that run without a GPU.

The GPU cases run on the H200 machine only. Here: ratios within a run and both orders, `--set`
overrides, the speed table written from a report (and `auto` following it), the E2B script's
arguments, memory breakdown and summary; and the `tiny-trl` case runs the whole trl code path on the
CPU when trl and datasets are importable (`PYTHONPATH=/tmp/trlsite`), otherwise that test is skipped.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.conftest import load_script

BENCH = Path(__file__).resolve().parent.parent / "bench" / "train_throughput.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCH, "train_throughput_bench")


def result(bench, case, tps, first=20.0, ok=True):
    """A case record as `run_case` returns it (the fields the report, the table and the summary read)."""
    shape, asked, cfg, (count, _), _ = bench.CASES[case]
    record = {"case": case, "shape": shape, "backend_asked": asked, "backend": asked, "config": cfg, "rows": count,
              "mean_row_tokens": 1000.0, "ok": ok, "steady_tokens_per_s": tps, "first_step_at_s": first,
              "first_step_tokens": 8000, "wall_s": first + 30, "peak_memory_gib": 3.2}
    if tps:
        record["startup_s"] = round(first - 8000 / tps, 1)
    return record


def test_ratios_are_taken_within_each_pair_and_order(bench, tmp_path):
    """Both orders in one run (plain, Unsloth, Unsloth, plain): one ratio per occurrence, each dividing
    figures of the same pair, never the mean of one backend by the other's best."""
    runs = [result(bench, "e2b-4bit-transformers", 3000.0), result(bench, "e2b-4bit-unsloth", 2700.0),
            result(bench, "e2b-4bit-unsloth", 2400.0), result(bench, "e2b-4bit-transformers", 3200.0)]
    report = bench.write_report(tmp_path / "r.json", runs)
    assert report["ratio_e2b-4bit-unsloth_vs_e2b-4bit-transformers"] == [0.9, 0.75]
    assert json.loads((tmp_path / "r.json").read_text())["results"] == runs
    single = bench.write_report(tmp_path / "s.json", runs[:2])
    assert single["ratio_e2b-4bit-unsloth_vs_e2b-4bit-transformers"] == 0.9
    failed = bench.write_report(tmp_path / "f.json", [runs[0], {**runs[1], "steady_tokens_per_s": None}])
    assert not any(k.startswith("ratio_") for k in failed)


def test_set_overrides_reach_the_config_every_worker_trains_with(bench, tmp_path, monkeypatch):
    """`--set offload_ple=false` changes what the plain worker and the trl worker build, not the case table."""
    monkeypatch.setenv(bench.SET_ENV, json.dumps(bench.parse_set(["offload_ple=false", "batch_size=4"])))
    plain = bench.train_config("e2b-4bit-transformers", tmp_path)
    naive = bench.train_config("g3-1b-trl", tmp_path)
    assert plain.offload_ple is False and naive.offload_ple is False
    assert plain.batch_size == naive.batch_size == 4
    assert plain.backend == "transformers" and plain.model == str(tmp_path / "model-gemma4-e2b")
    assert bench.CASES["e2b-4bit-transformers"][2]["batch_size"] == 2  # the table itself is untouched
    monkeypatch.delenv(bench.SET_ENV)
    assert bench.train_config("e2b-4bit-transformers", tmp_path).offload_ple is True
    with pytest.raises(SystemExit, match="KEY one of the \\[train\\] settings"):
        bench.parse_set(["offload=false"])
    assert bench.parse_set(["model=gemma3-270m"]) == {"model": "gemma3-270m"}  # not JSON: kept as text


def test_a_report_becomes_speed_table_rows(bench, tmp_path):
    runs = [result(bench, "e2b-4bit-transformers", 3000.0, first=22.0), result(bench, "e2b-4bit-unsloth", 2500.0, first=60.0),
            result(bench, "e2b-4bit-unsloth", 2300.0, first=58.0), result(bench, "e2b-4bit-transformers", 3400.0, first=20.0),
            result(bench, "e2b-4bit-unsloth-compiled", 4800.0, first=270.0), result(bench, "g3-1b-trl", 3000.0),
            result(bench, "tiny-transformers", 100.0), result(bench, "g3-1b-transformers", None, ok=False)]
    report = {"date": "2026-12-01T00:00:00+00:00", "machine": {"gpu": "NVIDIA H200"},
              "command": "python bench/train_throughput.py --cases ...", "results": runs}
    table = json.loads((Path(__file__).resolve().parent.parent / "lorekit/train/speed_table.json").read_text())
    rows, skipped = bench.table_rows(report, table["shapes"])
    by = {r["candidate"]: r for r in rows}
    assert set(by) == {"transformers", "unsloth", "unsloth-compiled"}
    plain = by["transformers"]
    assert (plain["device"], plain["shape"], plain["precision"], plain["batch_size"], plain["grad_accum"]) == \
        ("cuda", "gemma4-e2b", "4bit", 2, 4)
    assert plain["tokens_per_s"] == 3200.0  # the mean of both orders
    assert plain["startup_s"] == round(((22.0 - 8000 / 3000) + (20.0 - 8000 / 3400)) / 2, 1)
    assert [r["position"] for r in plain["runs"]] == [1, 4] and "mean of 2 cases" in plain["source"]
    assert by["unsloth-compiled"]["tokens_per_s"] == 4800.0
    assert any("g3-1b-trl: not a LoreKit backend" in s for s in skipped)
    assert any("tiny-transformers: shape 'tiny'" in s for s in skipped)
    assert any("g3-1b-transformers: no steady tokens/s" in s for s in skipped)


def test_updating_the_table_replaces_same_key_rows_and_auto_follows(bench, tmp_path):
    """The table starts as the shipped one; a new run's rows replace the rows of the same device, shape,
    precision, candidate and batch, keep every other row, and `auto` then follows the new figures."""
    from lorekit.train import speed

    path = tmp_path / "speed_table.json"
    shipped = speed.load_table()
    report = {"date": "d", "machine": {"gpu": "H200"}, "command": "c",
              "results": [result(bench, "e2b-4bit-transformers", 1000.0, first=20.0),
                          result(bench, "e2b-4bit-unsloth", 9000.0, first=25.0)]}
    added, _ = bench.update_table(path, [report])
    table = speed.load_table(path)
    assert len(added) == 2
    e2b = [r for r in table["measurements"] if r["shape"] == "gemma4-e2b" and r["batch_size"] == 2]
    assert sorted(r["tokens_per_s"] for r in e2b if r["candidate"] != "unsloth-compiled") == [1000.0, 9000.0]
    others = [r for r in shipped["measurements"] if r["shape"] != "gemma4-e2b"]
    assert [r for r in table["measurements"] if r["shape"] != "gemma4-e2b"] == others
    choice = speed.choose(backend="auto", compile=None, model="gemma-4-e2b", family="gemma4", device="cuda",
                          precision="4bit", batch_size=2, tokens=1_000_000, unsloth_installed=True, table=table)
    assert choice.candidate == "unsloth"
    again, _ = bench.update_table(path, [{**report, "results": [result(bench, "e2b-4bit-unsloth", 500.0, first=25.0)]}])
    table = speed.load_table(path)
    assert [r["tokens_per_s"] for r in table["measurements"]
            if r["shape"] == "gemma4-e2b" and r["candidate"] == "unsloth"] == [500.0]


@pytest.fixture(scope="module")
def e2b():
    path = BENCH.parent / "train_e2b_gpu.py"
    return load_script(path, "train_e2b_gpu_bench")


def test_e2b_script_arguments(e2b, tmp_path):
    args = e2b.parse_args(["--out", str(tmp_path)])
    assert args.memory_first == ["plain"] and args.memory_last == ["unsloth"]
    assert args.rows == (100, 1000) and args.profile == ["plain", "unsloth"]
    smoke = e2b.parse_args(["--out", str(tmp_path), "--smoke"])
    assert (smoke.shape, smoke.cases, smoke.memory_last, smoke.rows) == ("tiny-gemma4", ["tiny4-transformers"], [],
                                                                       (64, 80))
    for bad in (["--out", str(tmp_path), "--memory-first", "plain,fast"], ["--out", str(tmp_path), "--cases", "x"],
                []):
        with pytest.raises(SystemExit):
            e2b.parse_args(bad)


def test_e2b_default_cases_run_each_backend_first_once(e2b, bench, tmp_path):
    """The default case order gives one pair with the plain loop first and one with Unsloth first."""
    args = e2b.parse_args(["--out", str(tmp_path)])
    speeds = {"e2b-4bit-transformers": [3000.0, 3200.0], "e2b-4bit-unsloth": [2700.0, 2400.0]}
    runs = [result(bench, case, speeds[case].pop(0)) for case in args.cases]
    assert e2b.order_ratios(runs) == ["transformers first, then unsloth: Unsloth / plain = 0.90x",
                                      "unsloth first, then transformers: Unsloth / plain = 0.75x"]
    table = e2b.throughput_table(runs + [{**result(bench, "e2b-4bit-unsloth", None, ok=False), "error": "failed"}])
    assert "| 1 | e2b-4bit-transformers | 3000.0 | 17.3 | 20.0 | 50.0 | 3.2 |" in table
    assert "| 5 | e2b-4bit-unsloth | failed |" in table


def test_e2b_budget_starts_only_parts_that_fit(e2b):
    import time

    budget = e2b.Budget(time.time() - e2b.START + 65)  # ~65 s left
    assert budget.allows("plain") and budget.allows("e2b-4bit-transformers")
    assert not budget.allows("unsloth") and not budget.allows("e2b-4bit-unsloth")


@pytest.mark.torch
def test_e2b_memory_breakdown_finds_each_kind(e2b, tmp_path):
    """On the tiny Gemma 4 (CPU): the per-layer table, the input embedding (tied output layer counted once)
    and LoRA are found by name and size; after the offload the table is counted in CPU memory instead."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorekit.models import resolve
    from lorekit.train import ple_offload
    from lorekit.train.recipe import attach_lora
    from tests.tiny_models import make_tiny_model

    path = make_tiny_model(tmp_path, "gemma4")
    base = AutoModelForCausalLM.from_pretrained(path)
    ple = base.model.embed_tokens_per_layer.weight
    embed = base.model.embed_tokens.weight
    model = attach_lora(base, resolve(str(path)), {"r": 4, "alpha": 8, "dropout": 0.0, "turn_tokens": True}, False,
                        AutoTokenizer.from_pretrained(path))
    lora = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if p.requires_grad)
    lora += sum(b.numel() * b.element_size() for n, b in model.named_buffers() if "trainable_tokens" in n)  # originals
    parts = e2b.breakdown(model, "cpu")
    scale = 4  # the float32 scale buffer beside the per-layer table
    assert parts["ple"] == ple.numel() * ple.element_size() + scale
    assert parts["embeddings"] == embed.numel() * embed.element_size() + scale
    assert parts["lora"] == lora > 0 and parts["ple_in_cpu_memory"] == 0
    assert parts["linear_4bit"] == 0 and parts["linear_other"] > 0
    assert e2b.breakdown(model, "cuda") == dict.fromkeys([*e2b.KINDS, "ple_in_cpu_memory"], 0)  # nothing there
    ple_offload.offload(model, "cpu")
    after = e2b.breakdown(model, "cpu")
    assert after["ple"] == scale and after["ple_in_cpu_memory"] == parts["ple"] - scale
    assert after["lora"] == parts["lora"] and torch.is_tensor(ple)


def test_e2b_summary_reads_the_records(e2b, tmp_path):
    gib = 2**30

    def phase(ple_gpu, ple_cpu, peak, tps, profile):
        return {"parts": {"linear_4bit": 1.5 * gib, "ple": ple_gpu, "ple_in_cpu_memory": ple_cpu,
                          "embeddings": 1.125 * gib, "lora": 0.05 * gib, "linear_other": 0, "other": 0.01 * gib,
                          "unattributed": 0.02 * gib},
                "optimizer_state_bytes": 0.02 * gib, "step_over_resident_bytes": 0.8 * gib, "tokens_per_s": tps,
                "train_peak_bytes": peak, "steps": [{"loss": 12.5}, {"loss": 12.4}], "profile": profile}

    record = {"variant": "plain", "load_peak_bytes": 6 * gib,
              "offload_check": {"loss_before": 12.25, "loss_after": 12.25, "same": True},
              "phases": {"resident": phase(3.75 * gib, 0, 7.1 * gib, 3200.0, None),
                         "offload": phase(0, 3.75 * gib, 3.5 * gib, 3100.4,
                                          {"step_s": 2.5, "by_cpu_time": "CPU TABLE", "by_device_time": "GPU TABLE",
                                           "device_busy_s": 1.2, "kernel_launches": 4000})}}
    failed = {"variant": "unsloth", "error": "failed after 95 s (limit 90 s)",
              "phases": {"resident": {**phase(3.75 * gib, 0, 7.2 * gib, 2500.0, {"error": "boom"})}},
              "load_peak_bytes": 6.1 * gib}
    table = e2b.memory_table([record, failed])
    assert "| plain | offload | 6.00 | 3.50 | 1.50 | 0.00 | 3.75 | 1.12 | 0.05 | 0.02 | 0.80 | 0.03 | 3,100 |" in table
    assert "| plain | resident | 6.00 | 7.10 | 1.50 | 3.75 | 0.00 |" in table
    assert "| unsloth | resident | 6.10 | 7.20 |" in table and "| unsloth | failed after 95 s (limit 90 s) |" in table
    assert "plain: loss of one fixed batch before / after the offload 12.250000 / 12.250000 (same)" in table
    assert "plain: tokens/s with the offload / without = 0.97x (same process)" in table
    text = e2b.profile_text([record, failed])
    assert "plain (offload): one optimizer step (batch 2 x 4 micro-batches): 2.5 s wall, GPU busy 1.2 s, 4000 " \
        "kernel launches" in text and "GPU TABLE" in text and "CPU TABLE" in text
    assert "unsloth (resident): one optimizer step (batch 2 x 4 micro-batches)\nprofiler failed: boom" in text


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
