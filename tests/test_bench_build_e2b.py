"""bench/build_e2b_gpu.py: the parts that run without a GPU, and its --smoke run (tiny Gemma 4 on the CPU).

The E2B run itself is on the H200 machine only (bench/results/build_e2b_gpu.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_script

BENCH = Path(__file__).resolve().parent.parent / "bench" / "build_e2b_gpu.py"


@pytest.fixture(scope="module")
def bench():
    return load_script(BENCH, "build_e2b_gpu_bench")


def test_turn_tokens_are_renamed_in_place(bench):
    """Gemma 3's turn tokens become Gemma 4's under the same ids, in the vocabulary and the added tokens;
    a tokenizer that has Gemma 4's already is left as it is."""
    data = {"model": {"vocab": {"<pad>": 0, "<start_of_turn>": 105, "<end_of_turn>": 106, "a": 200}},
            "added_tokens": [{"id": 105, "content": "<start_of_turn>"}, {"id": 106, "content": "<end_of_turn>"}]}
    done = bench.gemma4_turn_tokens(data)
    assert done == ["<start_of_turn> -> <|turn> (id 105)", "<end_of_turn> -> <turn|> (id 106)"]
    assert data["model"]["vocab"] == {"<pad>": 0, "<|turn>": 105, "<turn|>": 106, "a": 200}
    assert [t["content"] for t in data["added_tokens"]] == ["<|turn>", "<turn|>"]
    assert bench.gemma4_turn_tokens(data) == []


def test_lore_toml_is_the_whole_world_with_the_chosen_train_settings(bench, tmp_path):
    """The lorekit.toml written next to the copied lore: max_facts = 0 and none of the quick-start limits,
    the model folder, and the preset's and flags' [train] keys, read back by LoreKit's own config loader."""
    from lorekit.compile.config import CompileConfig
    from lorekit.config import load
    from lorekit.train.config import TrainConfig

    args = bench.parse_args(["--out", str(tmp_path), "--preset", "fast", "--epochs", "2", "--set", "lr=3e-4",
                             "--compile-set", "notes_budget=150"])
    lore = bench.make_lore(tmp_path, tmp_path / "model-e2b", args)
    train = load(TrainConfig, "train", lore)
    assert (train.model, train.backend, train.load_in_4bit, train.gradient_checkpointing) == \
        (str(tmp_path / "model-e2b"), "transformers", False, False)
    assert (train.batch_size, train.grad_accum, train.epochs, train.lr, train.log_every) == (16, 1, 2.0, 3e-4, 1)
    compile_cfg = load(CompileConfig, "compile", lore)
    assert compile_cfg.max_facts == 0 and compile_cfg.notes_budget == 150
    assert compile_cfg.phrasings_per_fact == CompileConfig().phrasings_per_fact  # the sample's limit is gone
    assert (lore / "characters").is_dir()


def test_breakdown_from_per_step_metrics(bench):
    """First step, steady rate without the step that carried an epoch's eval, and that eval's overhead."""
    recs = [{"step": 1, "total_steps": 6, "epoch": 1, "loss": 9.0, "tokens": 100, "elapsed_s": 5.0, "memory_mb": 2048},
            {"step": 2, "total_steps": 6, "epoch": 1, "loss": 8.0, "tokens": 200, "elapsed_s": 6.0, "memory_mb": 2048},
            {"step": 3, "total_steps": 6, "epoch": 1, "loss": 7.0, "tokens": 300, "elapsed_s": 7.0, "memory_mb": 2048},
            {"step": 3, "epoch": 1, "eval_loss": 7.5, "best_eval_loss": 7.5, "best_step": 3},
            {"step": 4, "total_steps": 6, "epoch": 2, "loss": 6.0, "tokens": 400, "elapsed_s": 11.0, "memory_mb": 3072},
            {"step": 5, "total_steps": 6, "epoch": 2, "loss": 5.0, "tokens": 500, "elapsed_s": 12.0, "memory_mb": 3072}]
    tr = bench.training_figures(recs)
    assert (tr["first_step_s"], tr["steps_done"], tr["total_steps"]) == (5.0, 5, 6)
    assert tr["steady_tokens_per_s"] == 100.0 and tr["steady_steps"] == 3
    assert tr["epoch_boundary_overhead_s"] == 3.0 and tr["peak_memory_gib"] == 3.0
    assert tr["eval_losses"] == [7.5]
    fig = {"to_adapter_s": None, "loop_start_s": 20.0, "training": tr}
    assert bench.projection(fig) == 20.0 + 12.0 + 1 * 1.0  # one step left at the steady step time
    assert bench.projection({**fig, "to_adapter_s": 40.0}) is None


@pytest.mark.torch
@pytest.mark.slow
def test_smoke_run_builds_and_reports_each_part(tmp_path):
    """The same code on the CPU: tiny random Gemma 4, the real `lorekit build` (compile of a cut-down sample
    world, 6 optimizer steps, export), the figures and the report section."""
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--out", str(out), "--work", str(tmp_path / "w"),
                           "--budget", "170"], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fig = json.loads((out / "build_e2b_gpu.json").read_text())
    assert fig["returncode"] == 0 and not fig["cut_by_budget"]
    assert 0 < fig["to_adapter_s"] < fig["to_model_gguf_s"] <= fig["to_export_done_s"] <= fig["command_s"]
    assert fig["dataset"]["train_rows"] > 50 and fig["config"]["log_every"] == 1
    assert fig["training"]["steps_done"] == 6 and fig["training"]["steady_tokens_per_s"] > 0
    assert fig["uncapped_steps"] > 6 and fig["uncapped_to_adapter_s"] > fig["to_adapter_s"] * 0.5
    parts = [fig["stage_start_s"]["train"], fig["train_setup_s"], fig["load_s"], fig["training"]["last_elapsed_s"],
             fig["final_eval_s"], fig["save_s"]]
    assert abs(sum(parts) - fig["to_adapter_s"]) < 0.5  # the table's rows add up to the adapter time
    assert fig["export"]["base_gguf_s"] > 0 and fig["export"]["files_gib"]["model.gguf"] >= 0
    text = (out / "build_e2b_gpu.md").read_text()
    assert "SMOKE" in text and "command start -> adapter" in text and "target 180" in text


def test_the_e2b_shape_has_a_layer_layout_that_export_accepts(bench):
    pytest.importorskip("transformers")
    import train_throughput as tt  # bench/ is on the path once the bench module is loaded

    from lorekit.export.from_hf import _check_kv_sharing

    default = tt.model_config("gemma4-e2b")
    kinds = [t == "sliding_attention" for t in default.layer_types]
    with pytest.raises(Exception, match="not a layout llama.cpp supports"):
        _check_kv_sharing(kinds, default.num_kv_shared_layers)
    config = bench.exportable(tt.model_config("gemma4-e2b"))
    _check_kv_sharing([t == "sliding_attention" for t in config.layer_types], config.num_kv_shared_layers)
    assert config.num_hidden_layers == default.num_hidden_layers and "full_attention" in config.layer_types


def test_the_exportable_e2b_shape_makes_a_model(bench):
    """Full-attention layers carry their own head size in the config, made from `layer_types`: a layout
    changed after the config was made left them disagreeing and the model refused to load (on the H200)."""
    torch = pytest.importorskip("torch")
    import train_throughput as tt
    from transformers import AutoModelForCausalLM

    config = bench.exportable(tt.model_config("gemma4-e2b"))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    full = [i for i, t in enumerate(config.layer_types) if t == "full_attention"]
    assert full and full[-1] == config.num_hidden_layers - 1
    assert sum(p.numel() for p in model.parameters()) > 4_000_000_000
