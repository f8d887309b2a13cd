"""`backend = "auto"` follows the speed table: CPU, CUDA with Gemma 3, CUDA with Gemma 4 (no GPU needed:
the table and the device kind are injected)."""

from __future__ import annotations

import json

import pytest

from lorekit.errors import LorekitError
from lorekit.train import speed


def row(device, shape, precision, candidate, startup, tps, batch=2):
    return {"device": device, "shape": shape, "precision": precision, "candidate": candidate, "batch_size": batch,
            "grad_accum": 4, "gradient_checkpointing": True, "startup_s": startup, "tokens_per_s": tps,
            "source": f"test row {candidate}"}


# Gemma 3 on CUDA: the plain loop starts fast, compiled Unsloth trains 4x faster after 100 s more start-up,
# so the answer depends on the dataset: 20 + T/1000 = 120 + T/4000 at T = 133,333 tokens.
# Gemma 4 on CUDA: Unsloth uncompiled beats the plain loop on any size. CPU: only the plain loop runs.
TABLE = {
    "shapes": {"gemma3-270m": {"family": "gemma3", "fingerprints": [[640, 18]], "hints": ["270m"]},
               "gemma3-1b": {"family": "gemma3", "fingerprints": [[1152, 26]], "hints": ["gemma-3-1b"]},
               "gemma4-e2b": {"family": "gemma4", "fingerprints": [[2304, 30]], "hints": ["e2b"]}},
    "profiles": {"gemma3-270m": "gemma3-270m", "gemma-4-e2b": "gemma4-e2b"},
    "measurements": [
        row("cpu", "gemma3-270m", "fp32", "transformers", 40, 200, batch=8),
        row("cpu", "gemma3-270m", "fp32", "unsloth", 1, 10**6, batch=8),  # cannot run on a CPU whatever it says
        row("cuda", "gemma3-1b", "bf16", "transformers", 20, 1000),
        row("cuda", "gemma3-1b", "bf16", "unsloth", 60, 900),
        row("cuda", "gemma3-1b", "bf16", "unsloth-compiled", 120, 4000),
        row("cuda", "gemma4-e2b", "4bit", "transformers", 20, 1000),
        row("cuda", "gemma4-e2b", "4bit", "unsloth", 30, 5000),
        row("cuda", "gemma4-e2b", "4bit", "unsloth-compiled", 300, 6000),
    ],
}


def pick(model, family, device, precision, tokens, **kw):
    args = dict(backend="auto", compile=None, model=model, family=family, device=device, precision=precision,
                batch_size=2, tokens=tokens, unsloth_installed=True, table=TABLE)
    args.update(kw)
    return speed.choose(**args)


def by_name(choice):
    return {e.candidate: e for e in choice.estimates}


def test_cpu_machine_runs_the_plain_loop_with_the_tables_estimate():
    choice = pick("gemma3-270m", "gemma3", "cpu", "fp32", 60_000, batch_size=8)
    assert (choice.candidate, choice.backend, choice.compile) == ("transformers", "transformers", False)
    est = by_name(choice)
    assert est["transformers"].wall_s == 40 + 60_000 / 200
    assert not est["unsloth"].available and "CUDA" in est["unsloth"].why_not
    assert choice.key == "cpu/gemma3-270m/fp32"


@pytest.mark.parametrize(("tokens", "expected"), [(100_000, "transformers"), (200_000, "unsloth-compiled")])
def test_cuda_gemma3_picks_by_the_estimated_wall_time(tokens, expected):
    choice = pick("google/gemma-3-1b-it", "gemma3", "cuda", "bf16", tokens)
    est = by_name(choice)
    assert choice.candidate == expected
    assert est["transformers"].wall_s == pytest.approx(20 + tokens / 1000)
    assert est["unsloth-compiled"].wall_s == pytest.approx(120 + tokens / 4000)
    assert choice.compile is (expected == "unsloth-compiled")
    assert choice.backend == ("unsloth" if expected != "transformers" else "transformers")


def test_cuda_gemma4_picks_unsloth_when_the_table_says_it_is_faster():
    choice = pick("gemma-4-e2b", "gemma4", "cuda", "4bit", 500_000)
    assert (choice.candidate, choice.backend, choice.compile) == ("unsloth", "unsloth", False)
    assert by_name(choice)["unsloth"].wall_s == pytest.approx(30 + 500_000 / 5000)
    assert "gemma4-e2b" in by_name(choice)["unsloth"].measured


def test_a_table_that_favours_the_plain_loop_is_followed_on_gemma4():
    table = json.loads(json.dumps(TABLE))
    for r in table["measurements"]:
        if r["shape"] == "gemma4-e2b" and r["candidate"] == "unsloth":
            r["tokens_per_s"] = 800  # as issue 18 measured: Unsloth slower and later
    choice = pick("gemma-4-e2b", "gemma4", "cuda", "4bit", 100_000, table=table)
    assert choice.candidate == "transformers"  # 120 s against Unsloth's 155 s and compiled's 317 s


def test_unsloth_missing_or_compile_off_narrows_the_candidates():
    choice = pick("gemma-4-e2b", "gemma4", "cuda", "4bit", 500_000, unsloth_installed=False)
    assert choice.candidate == "transformers"
    assert "not installed" in by_name(choice)["unsloth"].why_not
    assert pick("google/gemma-3-1b-it", "gemma3", "cuda", "bf16", 10**7).candidate == "unsloth-compiled"
    big = pick("google/gemma-3-1b-it", "gemma3", "cuda", "bf16", 10**7, compile=False)
    assert big.candidate == "transformers"  # compiled would win, but compile = false rules it out
    assert "compile = false" in by_name(big)["unsloth-compiled"].why_not


def test_an_asked_for_backend_is_obeyed_and_still_estimated():
    choice = pick("gemma-4-e2b", "gemma4", "cuda", "4bit", 500_000, backend="transformers")
    assert choice.candidate == "transformers" and choice.reason == "asked for"
    assert all(e.wall_s is not None for e in choice.estimates)
    assert pick("gemma-4-e2b", "gemma4", "cuda", "4bit", 10, backend="unsloth", compile=True).candidate == \
        "unsloth-compiled"


def test_lookup_falls_back_to_the_family_then_to_the_plain_loop(tmp_path):
    # a Gemma 3 4B-sized folder: no row for its shape, so the family's (1B) rows answer
    folder = tmp_path / "g3-4b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma3_text", "hidden_size": 2560,
                                                    "num_hidden_layers": 34}))
    choice = pick(str(folder), "gemma3", "cuda", "4bit", 100_000)
    assert "gemma3 (nearest shape)" in choice.key and choice.candidate == "transformers"
    # the same folder with the 1B fingerprint is that shape exactly
    (folder / "config.json").write_text(json.dumps({"model_type": "gemma3_text", "hidden_size": 1152,
                                                    "num_hidden_layers": 26}))
    assert pick(str(folder), "gemma3", "cuda", "bf16", 100_000).key == "cuda/gemma3-1b/bf16"
    empty = {**TABLE, "measurements": []}
    none = pick("gemma-4-e2b", "gemma4", "cuda", "4bit", 100_000, table=empty)
    assert none.candidate == "transformers" and "no measurement" in none.reason


def test_nearest_batch_size_row_is_used():
    table = json.loads(json.dumps(TABLE))
    table["measurements"].append(row("cuda", "gemma4-e2b", "4bit", "transformers", 20, 9000, batch=16))
    est = by_name(pick("gemma-4-e2b", "gemma4", "cuda", "4bit", 90_000, table=table, batch_size=12))
    assert est["transformers"].tokens_per_s == 9000 and "batch 16" in est["transformers"].measured
    est = by_name(pick("gemma-4-e2b", "gemma4", "cuda", "4bit", 90_000, table=table, batch_size=2))
    assert est["transformers"].tokens_per_s == 1000


def test_shipped_table_loads_and_names_its_sources():
    table = speed.load_table()
    assert table["measurements"]
    for r in table["measurements"]:
        assert r["candidate"] in speed.CANDIDATES and r["tokens_per_s"] > 0 and r["source"]
        assert r["shape"] in table["shapes"]


def test_a_broken_table_is_a_one_line_error(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text('{"measurements": [\n  {"device": "cpu",,}\n]}')
    with pytest.raises(LorekitError, match=r"t.json:2: not valid JSON"):
        speed.load_table(bad)
    with pytest.raises(LorekitError, match="missing"):
        speed.load_table(tmp_path / "none.json")


def test_run_tokens_counts_epochs_and_the_step_cap():
    assert speed.run_tokens([100, 300], 3, 0, 8) == 1200
    assert speed.run_tokens([100, 300], 3, 1, 1) == 200  # one step of one mean-length row
    assert speed.precision_key("cuda", True, True) == "4bit"
    assert speed.precision_key("cuda", False, True) == "bf16"
    assert speed.precision_key("cpu", True, False) == "fp32"


# ---- through the recipe: tokens counted from the dataset, the choice in run.json, `lorekit train -v` ----

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.tiny_models import make_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    return {fam: make_tiny_model(root, fam) for fam in ("gemma3", "gemma4")}


@pytest.mark.torch
def test_recipe_counts_the_dataset_tokens_the_trainer_sees(tiny):
    from transformers import AutoTokenizer

    from lorekit import chat_formats
    from lorekit.train.config import TrainConfig
    from lorekit.train.data import encode_rows
    from lorekit.train.recipe import choose_backend
    from tests.test_train_tiny import rows

    data = rows(12)
    cfg = TrainConfig(model=str(tiny["gemma4"]), epochs=40, batch_size=2, grad_accum=4)
    choice = choose_backend(cfg, "cuda", data, table=TABLE, unsloth_installed=True)
    tok = AutoTokenizer.from_pretrained(tiny["gemma4"])
    encoded = encode_rows(tok, chat_formats.get("gemma4"), data, cfg.max_length)
    assert choice.tokens == 40 * sum(len(e.input_ids) for e in encoded)
    # the tiny model's shape is unknown: the Gemma 4 family's rows decide, and they favour Unsloth
    assert choice.candidate == "unsloth" and "gemma4 (nearest shape)" in choice.key
    assert "counted with tokenizer.json" in choice.reason


@pytest.mark.torch
def test_run_json_records_the_choice_and_train_v_prints_it(tiny, tmp_path, capsys):
    from lorekit.cli import main
    from tests.test_train_tiny import write_dataset

    table = {**TABLE, "measurements": [row("cpu", "gemma3-270m", "fp32", "transformers", 7, 1234, batch=4)]}
    (tmp_path / "table.json").write_text(json.dumps(table))
    (tmp_path / "lorekit.toml").write_text(f'[train]\nspeed_table = "{tmp_path / "table.json"}"\n')
    out = tmp_path / "build"
    write_dataset(out)
    code = main(["train", str(out), "-v", "--lore", str(tmp_path), "--model", str(tiny["gemma3"]),
                 "--max-steps", "1", "--batch-size", "4"])
    assert code == 0
    printed = capsys.readouterr().out
    info = json.loads((out / "train" / "run.json").read_text())
    choice = info["backend_choice"]
    assert info["backend"] == choice["ran"] == choice["candidate"] == "transformers"
    plain = next(e for e in choice["estimates"] if e["candidate"] == "transformers")
    assert plain["startup_s"] == 7 and plain["tokens_per_s"] == 1234
    assert plain["wall_s"] == pytest.approx(7 + choice["tokens"] / 1234, abs=0.1)
    assert [e["candidate"] for e in choice["estimates"]] == list(speed.CANDIDATES)
    assert "backend: transformers" in printed
    assert f"~{plain['wall_s']:.0f} s = 7 s start-up + 1,234 tokens/s" in printed
    assert "cannot run: Unsloth needs a CUDA GPU" in printed


def test_a_precision_measured_for_the_plain_loop_only_says_so():
    """bf16 E2B has a plain-loop row and no Unsloth row: auto runs the measured plain loop, and its reason
    names the unmeasured candidates instead of claiming they cannot run."""
    table = {**TABLE, "measurements": TABLE["measurements"] + [
        row("cuda", "gemma4-e2b", "bf16", "transformers", 23, 16000, batch=32)]}
    choice = pick("gemma-4-e2b", "gemma4", "cuda", "bf16", 2_000_000, table=table)
    assert choice.key == "cuda/gemma4-e2b/bf16" and choice.candidate == "transformers"
    assert choice.reason == "the only candidate measured for cuda/gemma4-e2b/bf16 (unsloth, unsloth-compiled: no row)"
    alone = pick("gemma-4-e2b", "gemma4", "cuda", "bf16", 2_000_000, table=table, unsloth_installed=False)
    assert alone.reason == "the only candidate that can run here"
