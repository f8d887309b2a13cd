"""CPU tests of `lorekit train` on tiny random Gemma 3 / Gemma 4 models (built in fixtures)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from lorekit.errors import LorekitError

pytestmark = pytest.mark.torch

FACTS = [("Ash Guild", "Mara Vell"), ("Tide Watch", "Tomas Reed"), ("Old Mill", "Ilsa Varn"),
         ("Salt Road", "Bren Hollow")]


def rows(n: int, offset: int = 0) -> list[dict]:
    out = []
    for i in range(offset, offset + n):
        place, person = FACTS[i % len(FACTS)]
        out.append({"conversations": [
            {"from": "system", "value": "You are Ilsa, the miller."},
            {"from": "human", "value": f"Who leads the {place}?"},
            {"from": "gpt", "value": f"{person} leads the {place}."},
            {"from": "human", "value": "Thanks."},
            {"from": "gpt", "value": "Safe roads."}],
            "meta": {"npc": "ilsa", "kind": "fact", "entities": [place], "facts": [], "expect": [person],
                     "template": "t"}})
    return out


def write_dataset(out, n_train: int = 16, n_eval: int = 4) -> None:
    (out / "dataset").mkdir(parents=True, exist_ok=True)
    (out / "dataset" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(n_train)))
    (out / "dataset" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows(n_eval, 1)))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tests.tiny_models import make_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    return {fam: make_tiny_model(root, fam) for fam in ("gemma3", "gemma4")}


def cfg(model, **kw):
    from lorekit.train.config import TrainConfig

    base = dict(model=str(model), epochs=2, batch_size=4, grad_accum=1, lr=3e-3, log_every=1, warmup_ratio=0.0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("family", ["gemma3", "gemma4"])
def test_labels_cover_only_model_turns(tiny, family):
    from transformers import AutoTokenizer

    from lorekit import chat_formats, dataset
    from lorekit.train.data import IGNORE, encode

    tok = AutoTokenizer.from_pretrained(tiny[family])
    fmt = chat_formats.get(family)
    row = rows(1)[0]["conversations"]
    ex = encode(tok, fmt, row, max_length=512)
    assert tok.decode(ex.input_ids) == fmt.render(dataset.as_messages(row))
    trainable = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE]
    assert tok.decode(trainable) == f"Mara Vell leads the Ash Guild.{fmt.end_of_turn}Safe roads.{fmt.end_of_turn}"
    assert all(lab in (IGNORE, t) for t, lab in zip(ex.input_ids, ex.labels, strict=True))
    # each reply's labels are contiguous and end on the end-of-turn token
    eot = tok.convert_tokens_to_ids(fmt.end_of_turn)
    assert sum(1 for lab in ex.labels if lab == eot) == 2
    # the chat template saved with the tokenizer renders the same text
    assert tok.apply_chat_template(dataset.as_messages(row), tokenize=False) == \
        fmt.render(dataset.as_messages(row))


def test_rows_encoded_in_one_batch_match_one_by_one(tiny):
    """encode_rows tokenizes every row in one call; each row comes out as `encode` alone makes it,
    including rows cut at max_length (labels and ids cut alike)."""
    from transformers import AutoTokenizer

    from lorekit import chat_formats, dataset
    from lorekit.train.data import encode, encode_rows

    tok = AutoTokenizer.from_pretrained(tiny["gemma4"])
    fmt = chat_formats.get("gemma4")
    many = rows(6)
    many[2]["conversations"][1]["value"] = "Tell me everything about the " + "very " * 40 + "old mill."
    for max_length in (512, 40):
        batch = encode_rows(tok, fmt, many, max_length)
        alone = [encode(tok, fmt, dataset.messages(r), max_length) for r in many]
        alone = [ex for ex in alone if ex.n_trainable]
        assert [(e.input_ids, e.labels) for e in batch] == [(e.input_ids, e.labels) for e in alone]
        assert len({len(e.input_ids) for e in batch}) > 1 or max_length == 40


@pytest.mark.parametrize("family", ["gemma3", "gemma4"])
def test_masked_output_layer_gives_the_models_own_loss(tiny, family):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorekit import chat_formats
    from lorekit.train.data import collate, encode_rows
    from lorekit.train.loop import masked_loss

    tok = AutoTokenizer.from_pretrained(tiny[family])
    model = AutoModelForCausalLM.from_pretrained(tiny[family])
    model.config.final_logit_softcapping = 30.0  # real Gemma checkpoints cap their logits
    batch = collate(encode_rows(tok, chat_formats.get(family), rows(3), 256), tok.pad_token_id, share_prefix=True)
    assert batch["prefix_len"] >= 16  # the shared system prompt
    with torch.no_grad():
        loss, n = masked_loss(model, batch, bf16=False)
        shared, n2 = masked_loss(model, {**batch, "prefix_len": 0}, bf16=False)
        reference = model(**{k: v for k, v in batch.items() if k != "prefix_len"}).loss
    assert n == n2 == int((batch["labels"] != -100).sum())
    torch.testing.assert_close(loss / n, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shared / n, reference, atol=1e-5, rtol=1e-5)


def test_eval_loss_does_not_depend_on_the_eval_batch_size(tiny, monkeypatch):
    """A GPU scores the eval rows at twice the training batch (`Plan.eval_batch_size`): the same mean loss."""
    import dataclasses

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorekit import chat_formats
    from lorekit.train import loop
    from lorekit.train.data import encode_rows
    from lorekit.train.loop import Plan, evaluate

    tok = AutoTokenizer.from_pretrained(tiny["gemma3"])
    model = AutoModelForCausalLM.from_pretrained(tiny["gemma3"])
    examples = encode_rows(tok, chat_formats.get("gemma3"), rows(7), 256)
    plan = Plan(epochs=1, batch_size=2, grad_accum=1, lr=1e-3, warmup_ratio=0, schedule="linear", weight_decay=0,
                optimizer="adamw", bf16=False, max_steps=0, eval_every=0, log_every=1, seed=1, keep_best=False,
                pad_id=tok.pad_token_id)
    sizes = []
    batch = loop._batch
    monkeypatch.setattr(loop, "_batch", lambda rows_, piece, plan_: sizes.append(len(piece.rows)) or batch(rows_, piece, plan_))
    one = evaluate(model, examples, plan)
    for size in (4, 7):
        assert evaluate(model, examples, dataclasses.replace(plan, eval_batch_size=size)) == pytest.approx(one, rel=1e-5)
    assert one > 0
    assert sorted(sizes) == [1, 2, 2, 2, 3, 4, 7]  # batches of 2, then of 4, then all 7 rows at once


def test_batches_are_bucketed_and_reproducible():
    from lorekit.train.data import batch_order

    lengths = [5, 50, 6, 49, 7, 48, 8, 47] * 4
    a, b = batch_order(lengths, 4, seed=1, epoch=0), batch_order(lengths, 4, seed=1, epoch=0)
    assert a == b and a != batch_order(lengths, 4, seed=1, epoch=1)
    assert sorted(i for batch in a for i in batch) == list(range(len(lengths)))
    assert all(max(lengths[i] for i in bt) - min(lengths[i] for i in bt) <= 3 for bt in a)
    groups = ["a" if i % 3 else "b" for i in range(len(lengths))]
    grouped = batch_order(lengths, 4, seed=1, epoch=0, groups=groups)
    assert sorted(i for batch in grouped for i in batch) == list(range(len(lengths)))
    assert all(len({groups[i] for i in bt}) == 1 for bt in grouped)


def test_epochs_count_the_batches_training_uses():
    # With a shared system prompt a batch holds one NPC's rows, so 13 rows in groups of 5/5/3 at batch 4
    # make 2 + 2 + 1 = 5 batches an epoch, not ceil(13 / 4) = 4: "3 epochs" must be 15 steps, not 12.
    from dataclasses import replace

    from lorekit.train.data import Example, batch_order
    from lorekit.train.loop import Plan

    rows = [Example([1] * (10 + i), [1] * (10 + i), group) for i, group in enumerate("aaaaabbbbbccc")]
    plan = Plan(epochs=3, batch_size=4, grad_accum=1, lr=1e-3, warmup_ratio=0.0, schedule="linear",
                weight_decay=0.0, optimizer="adamw", bf16=False, max_steps=0, eval_every=0, log_every=1, seed=7,
                keep_best=False, pad_id=0, share_prefix=True)
    lengths, groups = [len(e.input_ids) for e in rows], [e.group for e in rows]
    per_epoch = [len(batch_order(lengths, 4, 7, e, True, groups)) for e in range(4)]
    assert per_epoch == [5, 5, 5, 5]
    assert plan.total_steps(rows) == 15
    assert replace(plan, epochs=2.5).total_steps(rows) == 13  # 10 + ceil(0.5 x 5)
    assert replace(plan, grad_accum=2).total_steps(rows) == 9  # ceil(5 / 2) = 3 an epoch
    assert replace(plan, share_prefix=False).total_steps(rows) == 12  # ungrouped: ceil(13 / 4) = 4
    assert replace(plan, max_steps=7).total_steps(rows) == 7


@pytest.mark.parametrize("family", ["gemma3", "gemma4"])
def test_loss_falls_and_artifacts_are_written(tiny, family, tmp_path):
    from lorekit.train import run

    write_dataset(tmp_path)
    result = run(tmp_path, cfg(tiny[family], epochs=3, lr=1e-2))
    metrics = [json.loads(x) for x in (tmp_path / "train" / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    evals = [m["eval_loss"] for m in metrics if "eval_loss" in m]
    assert len(losses) == result.steps == 12 and len(evals) == 3
    assert losses[-1] < losses[0] - 0.2, losses  # ~6.2 (log 512) at the start
    assert evals[-1] < evals[0]
    names = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "lorekit.json"} <= names
    info = json.loads((tmp_path / "train" / "run.json").read_text())
    assert info["family"] == family and info["config"]["lr"] == 1e-2 and len(info["dataset_sha256"]) == 64
    assert info["versions"]["torch"] and info["wall_s"] > 0
    # where the start-up went, part by part, each inside the run's own wall time
    parts = info["startup_s"]
    assert {"backend choice", "tokenizer", "base model", "LoRA", "rows"} <= set(parts), parts
    assert all(0 <= s for s in parts.values()) and sum(parts.values()) < info["wall_s"]
    assert (tmp_path / "train" / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "train" / "checkpoint").exists()


def test_lora_targets_only_text_decoder_projections(tiny):
    import re

    import torch
    from transformers import AutoModelForCausalLM

    from lorekit.models import resolve
    from lorekit.train.load import lora_target_regex
    from lorekit.train.recipe import attach_lora

    profile = resolve(str(tiny["gemma4"]))
    pattern = re.compile(lora_target_regex(profile))
    assert pattern.fullmatch("model.language_model.layers.3.self_attn.q_proj")
    assert not pattern.fullmatch("model.vision_tower.encoder.layers.3.self_attn.q_proj")
    assert not pattern.fullmatch("model.audio_tower.layers.0.self_attn.q_proj")
    base = AutoModelForCausalLM.from_pretrained(tiny["gemma4"])
    linear = {n for n, m in base.named_modules()
              if isinstance(m, torch.nn.Linear) and n.split(".")[-1] in profile.lora_targets}
    model = attach_lora(base, profile, {"r": 4, "alpha": 8, "dropout": 0.0}, False)
    wrapped = {n.removeprefix("base_model.model.").rsplit(".lora_A", 1)[0]
               for n, _ in model.named_parameters() if ".lora_A" in n}
    assert wrapped == linear and len(wrapped) == 19  # 7 + 7 + 5 (the KV-shared layer has no k/v)


def test_saved_adapter_reloads_with_same_outputs(tiny, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorekit.models import resolve
    from lorekit.train import loop
    from lorekit.train.data import collate, encode_rows
    from lorekit.train.recipe import _plan, _save_adapter, attach_lora

    path = tiny["gemma3"]
    torch.manual_seed(0)
    profile, tok = resolve(str(path)), AutoTokenizer.from_pretrained(path)
    model = attach_lora(AutoModelForCausalLM.from_pretrained(path), profile, {"r": 4, "alpha": 8, "dropout": 0.0},
                        False)
    from lorekit import chat_formats

    examples = encode_rows(tok, chat_formats.get("gemma3"), rows(8), 256)
    _, keep = loop.train(model, examples, [], _plan(cfg(path, epochs=1, precision="fp32"), False, tok),
                         tmp_path / "ckpt")
    _save_adapter(tmp_path / "adapter", model, tok, keep, profile)
    batch = collate(examples[:2], tok.pad_token_id)
    model.eval()
    with torch.no_grad():
        trained = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        base = AutoModelForCausalLM.from_pretrained(path)
        plain = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
        again = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(trained, plain, atol=1e-3)  # training changed the model
    torch.testing.assert_close(again, trained, atol=1e-5, rtol=1e-5)


def test_resume_after_ctrl_c_matches_uninterrupted_run(tiny, tmp_path):
    from safetensors.torch import load_file

    from lorekit.train import loop, run

    full, cut = tmp_path / "full", tmp_path / "cut"
    for out in (full, cut):
        write_dataset(out)
    config = cfg(tiny["gemma3"], epochs=2, batch_size=2, grad_accum=2, lora_dropout=0.1, eval_every=3)
    run(full, config)

    def ctrl_c(record):
        if record["step"] == 5:
            os.kill(os.getpid(), signal.SIGINT)  # the real signal path: stop at the next micro-batch

    with pytest.raises(loop.Interrupted):
        run(cut, config, on_step=ctrl_c)
    assert not (cut / "adapter").exists() and (cut / "train" / "checkpoint" / "state.json").exists()
    state = json.loads((cut / "train" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 5
    run(cut, config, resume=True)
    a = load_file(str(full / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(cut / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and a
    for key in a:
        assert (a[key] - b[key]).abs().max() < 1e-6, key
    ma = (full / "train" / "metrics.jsonl").read_text().splitlines()
    mb = (cut / "train" / "metrics.jsonl").read_text().splitlines()
    def strip(lines):
        return [{k: v for k, v in json.loads(x).items() if k in ("step", "loss", "eval_loss", "lr")} for x in lines]
    assert strip(ma) == strip(mb)


def test_failed_run_keeps_the_good_adapter(tiny, tmp_path):
    from lorekit.train import run

    write_dataset(tmp_path)
    run(tmp_path, cfg(tiny["gemma3"], max_steps=1))
    before = (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes()
    (tmp_path / "dataset" / "train.jsonl").write_text('{"conversations": [oops\n')
    with pytest.raises(LorekitError, match=r"train.jsonl:1: not a dataset row"):
        run(tmp_path, cfg(tiny["gemma3"], max_steps=1))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").read_bytes() == before


def test_user_errors_are_one_line(tiny, tmp_path):
    from lorekit.cli import main
    from lorekit.train import run

    with pytest.raises(LorekitError, match="run `lorekit compile"):
        run(tmp_path, cfg(tiny["gemma3"]))
    write_dataset(tmp_path)
    with pytest.raises(LorekitError, match="needs a CUDA GPU"):
        run(tmp_path, cfg(tiny["gemma3"], backend="unsloth"))
    assert main(["train", str(tmp_path), "--model", str(tiny["gemma3"]), "--resume"]) == 2


def test_cli_trains_with_flags(tiny, tmp_path, capsys):
    from lorekit.cli import main

    write_dataset(tmp_path)
    code = main(["train", str(tmp_path), "--model", str(tiny["gemma4"]), "--max-steps", "2", "--batch-size", "4",
                 "--lr", "1e-3"])
    assert code == 0
    assert "trained 2 steps" in capsys.readouterr().out
    info = json.loads((tmp_path / "train" / "run.json").read_text())
    assert info["config"]["batch_size"] == 4 and info["config"]["lr"] == 1e-3 and info["steps"] == 2


def test_a_run_can_start_from_a_saved_adapter(tiny, tmp_path):
    """`init_adapter`: the LoRA starts as the saved one (with a zero learning rate it ends as it started;
    a fresh LoRA does not), and an adapter of another rank or a folder without one is a one-line error."""
    from safetensors.torch import load_file

    from lorekit.train import run

    first, second, fresh = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out in (first, second, fresh):
        write_dataset(out)
    run(first, cfg(tiny["gemma3"], max_steps=3, lr=1e-2, lora_r=4, lora_alpha=8))
    saved = load_file(str(first / "adapter" / "adapter_model.safetensors"))
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in saved.items())
    run(second, cfg(tiny["gemma3"], max_steps=1, lr=0.0, lora_r=4, lora_alpha=8, init_adapter=str(first / "adapter")))
    run(fresh, cfg(tiny["gemma3"], max_steps=1, lr=0.0, lora_r=4, lora_alpha=8))
    started, unset = (load_file(str(p / "adapter" / "adapter_model.safetensors")) for p in (second, fresh))
    assert set(started) == set(saved)
    assert all(started[k].equal(saved[k]) for k in saved)
    assert not all(unset[k].equal(saved[k]) for k in saved)
    with pytest.raises(LorekitError, match=r"lora_r = 4 to start from it"):
        run(fresh, cfg(tiny["gemma3"], max_steps=1, lora_r=8, lora_alpha=8, init_adapter=str(first / "adapter")))
    with pytest.raises(LorekitError, match="no adapter_model.safetensors there"):
        run(fresh, cfg(tiny["gemma3"], max_steps=1, init_adapter=str(tmp_path / "nowhere")))


def test_the_loop_scores_a_seeded_sample_of_the_eval_rows(tiny, tmp_path, caplog):
    import logging

    from lorekit.train import run
    from lorekit.train.recipe import eval_sample

    rows = [{"n": i} for i in range(10)]
    picked = eval_sample(rows, 4, seed=1)
    assert len(picked) == 4 and picked == sorted(picked, key=lambda r: r["n"])  # file order kept
    assert picked == eval_sample(rows, 4, seed=1) and picked != eval_sample(rows, 4, seed=2)
    assert eval_sample(rows, 4) == eval_sample(rows, 4, seed=0)  # the loop samples with a fixed seed
    assert eval_sample(rows, 0, 1) == rows == eval_sample(rows, -5, 1) and eval_sample(rows, 10, 1) == rows

    write_dataset(tmp_path, n_eval=6)
    with caplog.at_level(logging.INFO, logger="lorekit.train.recipe"):
        run(tmp_path, cfg(tiny["gemma3"], epochs=1, eval_rows=3))
    assert "on 16 rows, 3 eval rows" in caplog.text
    info = json.loads((tmp_path / "train" / "run.json").read_text())
    assert info["config"]["eval_rows"] == 3


def test_optimizer_auto_is_torch_adamw_on_cuda_too():
    from types import SimpleNamespace

    from lorekit.train.config import TrainConfig
    from lorekit.train.recipe import _plan

    tok = SimpleNamespace(pad_token_id=0)
    for cuda in (True, False):
        assert _plan(TrainConfig(), cuda, tok).optimizer == "adamw"
    assert _plan(TrainConfig(optimizer="adamw_8bit"), True, tok).optimizer == "adamw_8bit"
    with pytest.raises(LorekitError, match="needs a CUDA GPU"):
        _plan(TrainConfig(optimizer="adamw_8bit"), False, tok)


def test_a_checkpoint_resumes_only_into_the_same_optimizer_and_eval_rows(tmp_path):
    from lorekit.train.checkpoint import State
    from lorekit.train.loop import check_resume

    torch_state = {"state": {0: {"step": 3, "exp_avg": 0, "exp_avg_sq": 0}}}
    bnb_state = {"state": {0: {"step": 3, "state1": 0, "state2": 0, "qmap1": 0}}}
    ckpt = tmp_path / "checkpoint"
    check_resume(State(eval_rows=256), torch_state, "adamw", 256, ckpt)
    check_resume(State(eval_rows=256), bnb_state, "adamw_8bit", 256, ckpt)
    check_resume(State(), {"state": {}}, "adamw", 7, ckpt)  # nothing saved to compare: an old or fresh checkpoint
    with pytest.raises(LorekitError, match=r'checkpoint: written with optimizer = "adamw_8bit".*optimizer = "adamw_8bit"'):
        check_resume(State(eval_rows=256), bnb_state, "adamw", 256, ckpt)  # the old CUDA default, resumed today
    with pytest.raises(LorekitError, match=r"564 eval rows, this run has 256; set \[train\] eval_rows = 564"):
        check_resume(State(eval_rows=564), torch_state, "adamw", 256, ckpt)
