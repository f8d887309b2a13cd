"""Training throughput on a CUDA GPU: Unsloth vs plain transformers + peft, same model, same data.

    python bench/train_throughput.py                 # on the GPU machine; writes bench/results/train_throughput.{json,md}
    python bench/train_throughput.py --cases tiny-transformers --out /tmp/t.json   # CPU smoke run of the harness
    python bench/train_throughput.py --cases e2b-4bit-transformers,e2b-4bit-unsloth --table /tmp/speed_table.json
        # also fold the run's figures into a speed table (start-up s, steady tokens/s per device, shape,
        # precision, candidate and batch): copy it to lorekit/train/speed_table.json to ship it

Each case is `lorekit.train.run` in a fresh process (so that Unsloth's patches never leak into the
plain path): wall time counts from that process's start to the saved adapter. Models have random
weights in the real shapes (speed and memory do not depend on the values). Steady tokens/s is taken
after the first `--warm` optimizer steps; GPU utilisation is nvidia-smi's mean over the same window.

Cases of backend "trl" are not LoreKit's loop but the naive baseline, what a user following the guide
without Unsloth writes: transformers + peft + trl's SFTTrainer, one row per sequence, right-padded,
no packing, no padding-free batches (see `worker_trl`). The naive-vs-Unsloth comparison at equal batch:

    python bench/train_throughput.py --cases g3-1b-trl,g3-1b-unsloth-b8,g3-1b-transformers-b8,g3-1b-transformers,g3-1b-unsloth-compiled
    PYTHONPATH=/tmp/trlsite python3 bench/train_throughput.py --cases tiny-transformers,tiny-trl --out /tmp/t.json  # CPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

START = time.time()
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> (shape, backend, train-config overrides, rows: (count, target tokens), timeout s)
# The E2B 4-bit cases are the 8 GB card's run (4-bit, checkpointing, the per-layer tables in CPU memory, as
# `offload_ple` unset picks on such a card); on the H200 they pin the offload so they measure that run.
CASES = {
    "g3-1b-transformers": ("gemma3-1b", "transformers",
                           dict(batch_size=64, grad_accum=1, load_in_4bit=False, gradient_checkpointing=False,
                                max_steps=30), (1920, 150), 200),
    "g3-1b-unsloth": ("gemma3-1b", "unsloth",
                      dict(batch_size=64, grad_accum=1, load_in_4bit=False, gradient_checkpointing=False,
                           max_steps=30), (1920, 150), 200),
    "g3-1b-transformers-b2": ("gemma3-1b", "transformers",
                              dict(batch_size=2, grad_accum=4, load_in_4bit=False, gradient_checkpointing=False,
                                   max_steps=20), (400, 150), 200),
    "e2b-4bit-transformers": ("gemma4-e2b", "transformers",
                              dict(batch_size=2, grad_accum=4, load_in_4bit=True, gradient_checkpointing=True,
                                   max_steps=10, max_length=1024, offload_ple=True), (100, 1000), 200),
    "e2b-4bit-unsloth": ("gemma4-e2b", "unsloth",
                         dict(batch_size=2, grad_accum=4, load_in_4bit=True, gradient_checkpointing=True,
                              max_steps=10, max_length=1024, offload_ple=True), (100, 1000), 200),
    "g3-1b-unsloth-compiled": ("gemma3-1b", "unsloth",
                               dict(batch_size=64, grad_accum=1, load_in_4bit=False, gradient_checkpointing=False,
                                    max_steps=30, compile=True), (1920, 150), 330),
    "e2b-4bit-unsloth-compiled": ("gemma4-e2b", "unsloth",
                                  dict(batch_size=2, grad_accum=4, load_in_4bit=True, gradient_checkpointing=True,
                                       max_steps=10, max_length=1024, offload_ple=True, compile=True), (100, 1000), 300),
    "tiny-transformers": ("tiny", "transformers", dict(batch_size=4, grad_accum=1, max_steps=8), (64, 80), 300),
    # The naive baseline (shared GPU README: ~1,070 tokens/s), and Unsloth at the same batch 8 and gradient
    # checkpointing; Unsloth compiled as it does by default (the README's 3.0x run), and with compilation off
    # (what `lorekit train` uses unless compile = true).
    "g3-1b-trl": ("gemma3-1b", "trl",
                  dict(batch_size=8, grad_accum=1, gradient_checkpointing=True, max_steps=30), (1920, 150), 240),
    "g3-1b-transformers-b8": ("gemma3-1b", "transformers",  # LoreKit's loop at trl's settings: loop vs Unsloth
                              dict(batch_size=8, grad_accum=1, load_in_4bit=False, gradient_checkpointing=True,
                                   max_steps=30), (1920, 150), 200),
    "g3-1b-unsloth-b8": ("gemma3-1b", "unsloth",
                         dict(batch_size=8, grad_accum=1, load_in_4bit=False, gradient_checkpointing=True,
                              max_steps=30, compile=True), (1920, 150), 330),
    "g3-1b-unsloth-b8-nocompile": ("gemma3-1b", "unsloth",
                                   dict(batch_size=8, grad_accum=1, load_in_4bit=False, gradient_checkpointing=True,
                                        max_steps=30), (1920, 150), 200),
    # Each backend at a batch sized to the card (H200: the plain loop's batch 64 used 48 GiB): does Unsloth pull
    # further ahead when both fill the GPU?
    "g3-1b-transformers-b128": ("gemma3-1b", "transformers",
                                dict(batch_size=128, grad_accum=1, load_in_4bit=False, gradient_checkpointing=False,
                                     max_steps=30), (3840, 150), 240),
    "g3-1b-unsloth-compiled-b128": ("gemma3-1b", "unsloth",
                                    dict(batch_size=128, grad_accum=1, load_in_4bit=False,
                                         gradient_checkpointing=False, max_steps=30, compile=True), (3840, 150), 400),
    "g3-1b-unsloth-compiled-b192": ("gemma3-1b", "unsloth",
                                    dict(batch_size=192, grad_accum=1, load_in_4bit=False,
                                         gradient_checkpointing=False, max_steps=30, compile=True), (5760, 150), 400),
    "tiny4-transformers": ("tiny-gemma4", "transformers", dict(batch_size=4, grad_accum=1, max_steps=8), (64, 80), 300),
    "tiny-trl": ("tiny", "trl", dict(batch_size=4, grad_accum=1, gradient_checkpointing=True, max_steps=8),
                 (64, 80), 300),
}
RATIOS = (("g3-1b-unsloth", "g3-1b-transformers"), ("e2b-4bit-unsloth", "e2b-4bit-transformers"),
          ("g3-1b-unsloth-compiled", "g3-1b-transformers"), ("e2b-4bit-unsloth-compiled", "e2b-4bit-transformers"),
          ("g3-1b-unsloth-b8", "g3-1b-trl"), ("g3-1b-unsloth-b8-nocompile", "g3-1b-trl"),
          ("g3-1b-unsloth-compiled", "g3-1b-trl"), ("g3-1b-transformers", "g3-1b-trl"),
          ("g3-1b-transformers-b8", "g3-1b-trl"), ("g3-1b-unsloth-b8", "g3-1b-transformers-b8"),
          ("g3-1b-unsloth-b8-nocompile", "g3-1b-transformers-b8"),
          ("g3-1b-unsloth-compiled-b128", "g3-1b-transformers-b128"),
          ("g3-1b-unsloth-compiled-b192", "g3-1b-transformers"), ("g3-1b-unsloth-compiled-b192", "g3-1b-trl"),
          ("g3-1b-unsloth-compiled-b192", "g3-1b-transformers-b128"), ("g3-1b-transformers-b128", "g3-1b-trl"), ("g3-1b-unsloth-compiled-b128", "g3-1b-transformers"), ("tiny-transformers", "tiny-trl"))
# What a case ran with, recorded with its figures (and, for the speed table, which row they belong to).
RAN_FIELDS = ("batch_size", "grad_accum", "load_in_4bit", "gradient_checkpointing", "compile", "offload_ple",
              "max_length", "max_steps")
SET_ENV = "LOREKIT_BENCH_SET"  # `--set KEY=VALUE` overrides, handed to the worker processes


def case_config(case: str) -> dict:
    """The case's train-config overrides, with any `--set KEY=VALUE` of this run on top."""
    return {**CASES[case][2], **json.loads(os.environ.get(SET_ENV) or "{}")}


def parse_set(items: list[str]) -> dict:
    """`["offload_ple=false", "batch_size=4"]` -> {"offload_ple": False, "batch_size": 4} (JSON values,
    else text); a key that is not a TrainConfig field is an error naming it."""
    from lorekit.train.config import TrainConfig

    fields = set(TrainConfig.__dataclass_fields__)
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY one of the [train] settings "
                             f"({', '.join(sorted(fields))})")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def model_config(shape: str):
    from transformers import Gemma3TextConfig, Gemma4TextConfig

    if shape == "gemma3-1b":  # Gemma 3 1B's text shape
        return Gemma3TextConfig(vocab_size=262144, hidden_size=1152, intermediate_size=6912, num_hidden_layers=26,
                                num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
                                query_pre_attn_scalar=256, max_position_embeddings=32768)
    if shape == "gemma4-e2b":  # transformers' defaults are the E2B text shape; KV sharing on as in E2B
        return Gemma4TextConfig(num_kv_shared_layers=10)
    raise ValueError(shape)


def prepare_model(shape: str, folder: Path) -> Path:
    """Save a random-weight model of `shape` with a tokenizer (not timed: the user has one on disk)."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoModelForCausalLM

    from lorekit import chat_formats
    from lorekit.train.template import chat_template
    from tests.tiny_models import make_tiny_model, make_tokenizer

    if shape in ("tiny", "tiny-gemma4"):  # CPU smoke runs of the harness
        return make_tiny_model(folder.parent, "gemma4" if shape == "tiny-gemma4" else "gemma3", name=folder.name)
    config = model_config(shape)
    tok = make_tokenizer()
    tok.chat_template = chat_template(chat_formats.get("gemma4" if "4" in shape else "gemma3"))
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_rows(out: Path, tok_dir: Path, count: int, target: int) -> float:
    """NPC-style chat rows of about `target` tokens (a persona, a question, an answer)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tok_dir)
    persona = ("You are Ilsa Varn, the miller of Brindle. You speak plainly and briefly, you know the river "
               "trade, the Ash Guild and its leader Mara Vell, and you never invent facts. ")
    rows, lengths = [], []
    for i in range(count):
        question = f"Who keeps the keys of tower {i}?"
        answer = f"The keys of tower {i} are kept by the miller's brother Tomas, who sails with the fleet."
        reps = 1
        while True:
            system = persona * reps
            n = len(tok(system + question + answer).input_ids) + 12
            spread = 0.4 if target < 512 else 0.04  # long rows: keep them under max_length 1024
            if n >= target * (1 - spread / 2 + spread * ((i * 37) % 11) / 10) or reps > 400:
                break
            reps += 1
        rows.append({"conversations": [{"from": "system", "value": system}, {"from": "human", "value": question},
                                       {"from": "gpt", "value": answer}], "meta": {}})
        lengths.append(n)
    (out / "dataset").mkdir(parents=True, exist_ok=True)
    (out / "dataset" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return sum(lengths) / len(lengths)


def train_config(case: str, work: Path):
    """The TrainConfig a case's worker trains with (trl's worker reads its LoRA and schedule from it too)."""
    from lorekit.train.config import TrainConfig

    shape, backend = CASES[case][:2]
    return TrainConfig(model=str(work / f"model-{shape}"), backend="auto" if backend == "trl" else backend,
                       epochs=1, log_every=1, **case_config(case))


def worker(case: str, work: Path, result_file: Path) -> None:
    """One `lorekit train` run (or, for backend "trl", the naive SFTTrainer run); called in a fresh process."""
    if CASES[case][1] == "trl":
        return worker_trl(case, work, result_file)
    from lorekit.train import run

    steps: list[tuple[int, float, int]] = []
    cfg = train_config(case, work)
    out = work / f"out-{case}"
    progress = result_file.with_suffix(".steps")

    def on_step(r: dict) -> None:  # also on disk, so that a run cut by its timeout still shows progress
        steps.append((r["step"], time.time(), r["tokens"]))
        with progress.open("a") as f:
            f.write(json.dumps([r["step"], round(time.time() - START, 1), r["tokens"]]) + "\n")

    result = run(out, cfg, on_step=on_step)
    wall = time.time() - START
    metrics = [json.loads(x) for x in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    mem = max((m.get("memory_mb", 0) for m in metrics), default=0)
    record = {"case": case, "backend": result.backend, "steps": result.steps, "wall_s": round(wall, 1),
              "first_step_at_s": round(steps[0][1] - START, 1) if steps else None,
              "first_step_tokens": steps[0][2] if steps else None,
              "steps_t": steps, "peak_memory_gib": round(mem / 1024, 2), "final_loss": result.train_loss,
              "ran": {k: v for k, v in asdict(cfg).items() if k in RAN_FIELDS}}
    result_file.write_text(json.dumps(record))


def sharegpt_to_prompt_completion(conversations: list[dict]) -> dict:
    """A ShareGPT row as trl's conversational prompt-completion row: the last model turn is the completion,
    everything before it the prompt. trl then computes the loss on the completion only (its default for
    prompt-completion data). A row with several model turns would train only its last one."""
    roles = {"system": "system", "human": "user", "gpt": "assistant"}
    msgs = [{"role": roles[t["from"]], "content": t["value"]} for t in conversations]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    return {"prompt": msgs[:last], "completion": [msgs[last]]}


def worker_trl(case: str, work: Path, result_file: Path) -> None:
    """The naive baseline: transformers + peft + trl's SFTTrainer on the same rows file, the way a user
    following the guide without Unsloth would train. bf16, gradient checkpointing, adamw_8bit on CUDA (fp32
    and torch AdamW on the CPU); LoRA and schedule from the same `TrainConfig` defaults as LoreKit's loop;
    no packing, no padding-free batches, no length grouping (trl's defaults). Loss on the model's turn
    only, through trl's prompt-completion format (`assistant_only_loss` would need `{% generation %}`
    markers that LoreKit's chat template does not have: trl refuses templates it cannot patch)."""
    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from lorekit.models import resolve

    cfg = train_config(case, work)
    cuda = torch.cuda.is_available()
    out = work / f"out-{case}"
    progress = result_file.with_suffix(".steps")
    rows = [json.loads(x) for x in (out / "dataset" / "train.jsonl").read_text().splitlines() if x.strip()]
    dataset = Dataset.from_list([sharegpt_to_prompt_completion(r["conversations"]) for r in rows])
    tok = AutoTokenizer.from_pretrained(cfg.model)
    model = AutoModelForCausalLM.from_pretrained(cfg.model, dtype=torch.bfloat16 if cuda else torch.float32)
    if cuda:
        model = model.to("cuda")
    args = SFTConfig(
        output_dir=str(out / "trl"), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, max_steps=cfg.max_steps, num_train_epochs=1,
        learning_rate=cfg.lr, lr_scheduler_type=cfg.schedule,
        warmup_steps=max(1, round(cfg.warmup_ratio * cfg.max_steps)) if cfg.warmup_ratio > 0 else 0,  # as loop.py
        weight_decay=cfg.weight_decay, max_grad_norm=1.0, seed=cfg.seed,
        optim="adamw_8bit" if cuda else "adamw_torch", bf16=cuda, fp16=False,
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        max_length=cfg.max_length, packing=False, padding_free=False, completion_only_loss=None,
        assistant_only_loss=False, logging_steps=1, save_strategy="no", report_to="none",
        disable_tqdm=True, dataloader_num_workers=0)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias="none",
                      target_modules=list(resolve(cfg.model).lora_targets),
                      task_type="CAUSAL_LM")
    steps: list[tuple[int, float, int]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if cuda:
                torch.cuda.synchronize()
            tokens = int(trainer._total_train_tokens)  # attention-mask sum: row tokens without padding
            steps.append((state.global_step, time.time(), tokens))
            with progress.open("a") as f:
                f.write(json.dumps([state.global_step, round(time.time() - START, 1), tokens]) + "\n")

    lm_head = cpu_lm_head_stand_in() if not cuda else "trl's fused LM head (Triton), logits at labelled tokens only"
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok, peft_config=lora,
                         callbacks=[Clock()])
    trainer.train()
    trainer.save_model(str(out / "adapter"))
    tok.save_pretrained(str(out / "adapter"))
    wall = time.time() - START
    # checks of what was trained, after the clock stopped
    trained = trainer.train_dataset
    labels = [sum(x != -100 for x in r) for r in trained["labels"]]
    lengths = [len(r) for r in trained["input_ids"]]
    same = same_tokens_and_labels(tok, cfg, rows, trained)
    if cuda:
        mem_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        import resource

        mem_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    sample = next(r for r in trained.select(range(1)))
    record = {"case": case, "backend": "trl", "steps": trainer.state.global_step, "wall_s": round(wall, 1),
              "first_step_at_s": round(steps[0][1] - START, 1) if steps else None, "steps_t": steps,
              "peak_memory_gib": round(mem_mb / 1024, 2), "final_loss": losses[-1] if losses else None,
              "trl": {"version": trl.__version__, "packing": args.packing, "padding_free": args.padding_free,
                      "loss_on": "completion (the model turn, end-of-turn included)"
                      if trainer.completion_only_loss else "whole sequence",
                      "mean_row_tokens": round(sum(lengths) / len(lengths), 1),
                      "trained_token_share": round(sum(labels) / sum(lengths), 3),
                      "same_tokens_and_labels_as_lorekit": same,
                      "first_row_trained_text": tok.decode([x for x in sample["labels"] if x != -100]),
                      "optim": args.optim, "bf16": args.bf16, "lm_head": lm_head,
                      "gradient_checkpointing": args.gradient_checkpointing}}
    result_file.write_text(json.dumps(record))


def same_tokens_and_labels(tok, cfg, rows: list[dict], trained) -> dict:
    """How many of trl's rows hold exactly the token ids, and the trained positions, of LoreKit's own
    encoding (so that both count and learn the same tokens), e.g. {"ids": "1920/1920", ...}."""
    from lorekit import chat_formats
    from lorekit.models import resolve
    from lorekit.train.data import encode_rows

    ours = encode_rows(tok, chat_formats.get(resolve(cfg.model).family), rows, cfg.max_length)
    theirs = list(zip(trained["input_ids"], trained["labels"], strict=True))
    pairs = list(zip(ours, theirs, strict=False))
    same_ids = sum(list(a.input_ids) == list(ids) for a, (ids, _) in pairs)
    same_labels = sum(list(a.labels) == list(lab) for a, (_, lab) in pairs)
    extra = sum(sum(x != -100 for x in lab) - a.n_trainable for a, (_, lab) in pairs)
    return {"ids": f"{same_ids}/{len(theirs)}", "labels": f"{same_labels}/{len(theirs)}",
            "trl_extra_trained_tokens_per_row": round(extra / max(len(pairs), 1), 2)}


def cpu_lm_head_stand_in() -> str:
    """trl 1.15 computes its loss through a Triton kernel (log-probs at the labelled tokens only, no full
    logits), and Triton has no CPU backend: on a CPU-only torch, `SFTTrainer.train()` fails with
    "'NoneType' object has no attribute 'apply'". For the CPU smoke case only, put in a plain-torch
    function of the same signature (full logits of the labelled tokens; exact, slow for a big vocabulary).
    The GPU cases run trl's own kernel."""
    import torch
    from trl.trainer import utils

    if getattr(utils, "_ChunkedLogProbFunction", None) is not None:
        return "trl's fused LM head (Triton), logits at labelled tokens only"

    class PlainLogProbs:
        @staticmethod
        def apply(hidden, weight, bias, targets, temperature, chunk_size, softcap=None, logit_scale=1.0,
                  outputs=("log_probs",)):
            z = torch.nn.functional.linear(hidden, weight, bias).float() * logit_scale
            if softcap is not None:
                z = softcap * torch.tanh(z / softcap)
            z = z / temperature
            logp = torch.log_softmax(z, dim=-1)
            picked = logp.gather(-1, targets[:, None]).squeeze(-1)
            entropy = -(logp.exp() * logp).sum(-1) if "entropy" in outputs else None
            sq = torch.logsumexp(2 * logp, dim=-1).detach() if "log_sum_sq_probs" in outputs else None
            mean = z.mean(-1).detach() if "mean_logits" in outputs else None
            top1 = (z.argmax(-1) == targets) if "is_top1" in outputs else None
            return picked, entropy, sq, mean, top1

    utils._ChunkedLogProbFunction = PlainLogProbs
    return "plain-torch stand-in for trl's Triton LM head (CPU smoke run only)"


def gpu_sampler(samples: list, stop: threading.Event) -> None:
    try:
        proc = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                                 "-lms", "250"], stdout=subprocess.PIPE, text=True)
    except FileNotFoundError:
        return
    while not stop.is_set():
        line = proc.stdout.readline()
        if not line:
            break
        util, used = (float(x) for x in line.split(","))
        samples.append((time.time(), util, used))
    proc.terminate()


def run_case(case: str, work: Path, warm: int, limit: float | None = None) -> dict:
    """Prepare the model and rows of `case`, then train it in a fresh process (cut after the case's timeout,
    or `limit` seconds if that is shorter)."""
    shape, backend, _, (count, target), timeout = CASES[case]
    timeout = min(timeout, limit) if limit else timeout
    overrides = case_config(case)
    model_dir = work / f"model-{shape}"
    out = work / f"out-{case}"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t = time.time()
    subprocess.run([sys.executable, __file__, "--prepare", shape, "--work", str(work)], check=True, env=env)
    mean_tokens = write_rows(out, model_dir, count, target)
    prep_s = time.time() - t
    samples, stop = [], threading.Event()
    sampler = threading.Thread(target=gpu_sampler, args=(samples, stop), daemon=True)
    sampler.start()
    result_file = work / f"{case}.json"
    result_file.unlink(missing_ok=True)
    result_file.with_suffix(".steps").unlink(missing_ok=True)
    t = time.time()
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", case, "--work", str(work), "--result",
                               str(result_file)], env=env, timeout=timeout, capture_output=True, text=True)
        tail = (proc.stdout + proc.stderr)[-3000:]
        ok = proc.returncode == 0 and result_file.exists()
    except subprocess.TimeoutExpired as e:
        tail = (_text(e.stdout) + _text(e.stderr))[-3000:]
        ok = False
    stop.set()
    record = {"case": case, "shape": shape, "backend_asked": backend, "config": overrides, "rows": count,
              "mean_row_tokens": round(mean_tokens, 1), "prepare_s": round(prep_s, 1), "ok": ok}
    if not ok:
        record.update(error=f"no result within {timeout} s" if time.time() - t >= timeout else "failed",
                      log_tail=tail)
        progress = result_file.with_suffix(".steps")
        if progress.exists():  # [step, seconds since process start, tokens] of the steps it did finish
            record["steps_done"] = [json.loads(x) for x in progress.read_text().splitlines()]
        print(f"{case}: FAILED\n{tail}", flush=True)
        return record
    record.update(json.loads(result_file.read_text()))
    steps = record.pop("steps_t")
    if len(steps) > warm + 1:
        (_, t0, k0), (_, t1, k1) = steps[warm - 1], steps[-1]
        record["steady_tokens_per_s"] = round((k1 - k0) / (t1 - t0), 1)
        # start-up: process start to step 1, less step 1's own tokens at the steady rate
        record["startup_s"] = round(record["first_step_at_s"] - steps[0][2] / record["steady_tokens_per_s"], 1)
        window = [u for ts, u, _ in samples if t0 <= ts <= t1]
        record["gpu_util_pct"] = round(sum(window) / len(window), 1) if window else None
    record["log_tail"] = tail[-800:]
    print(json.dumps({k: v for k, v in record.items() if k != "log_tail"}), flush=True)
    return record


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="g3-1b-transformers,g3-1b-unsloth,e2b-4bit-transformers,e2b-4bit-unsloth",
                    help="comma-separated case names, run in this order (a name may repeat: both orders)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lorekit-bench"))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_throughput.json")
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--table", type=Path, help="also fold the figures into this speed table (made from the "
                    "shipped lorekit/train/speed_table.json if missing)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a [train] setting for every case, e.g. --set offload_ple=false")
    ap.add_argument("--prepare")
    ap.add_argument("--worker")
    ap.add_argument("--result", type=Path)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.prepare:
        prepare_model(args.prepare, args.work / f"model-{args.prepare}")
        return 0
    if args.worker:
        worker(args.worker, args.work, args.result)
        return 0
    unknown = [c for c in args.cases.split(",") if c not in CASES]
    if unknown:
        raise SystemExit(f"--cases: unknown {', '.join(unknown)}; known: {', '.join(CASES)}")
    if args.set:
        os.environ[SET_ENV] = json.dumps(parse_set(args.set))
    results = []
    for case in args.cases.split(","):
        results.append(run_case(case, args.work, args.warm))
        report = write_report(args.out, results)
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=1))
    if args.table:
        added, skipped = update_table(args.table, [report])
        print(f"speed table {args.table}: {len(added)} rows written" + "".join(f"\n  skipped {s}" for s in skipped))
    return 0


def write_report(path: Path, results: list[dict]) -> dict:
    """Written after every case, so that a run cut short still leaves its figures. A pair of cases that
    ran more than once (both orders) gets one ratio per occurrence, each within its own pair."""
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "command": " ".join(["python"] + sys.argv), "results": results}
    if os.environ.get(SET_ENV):
        report["set"] = json.loads(os.environ[SET_ENV])
    for a, b in RATIOS:
        ra = [r["steady_tokens_per_s"] for r in results if r["case"] == a and r.get("steady_tokens_per_s")]
        rb = [r["steady_tokens_per_s"] for r in results if r["case"] == b and r.get("steady_tokens_per_s")]
        ratios = [round(x / y, 2) for x, y in zip(ra, rb, strict=False)]
        if ratios:
            report[f"ratio_{a}_vs_{b}"] = ratios[0] if len(ratios) == 1 else ratios
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))
    return report


TABLE_KEY = ("device", "shape", "precision", "candidate", "batch_size", "grad_accum", "gradient_checkpointing")


def table_rows(report: dict, shapes: dict) -> tuple[list[dict], list[str]]:
    """Speed-table rows from a report: one per (device, shape, precision, candidate, batch), the mean of
    the report's cases that ran it; and what was left out, with why."""
    from lorekit.train import speed
    from lorekit.train.config import TrainConfig

    defaults = asdict(TrainConfig())
    device = "cuda" if report.get("machine", {}).get("gpu") else "cpu"
    groups: dict[tuple, list[dict]] = {}
    skipped = []
    for position, r in enumerate(report["results"], 1):
        if r.get("backend_asked") == "trl" or not r.get("ok") or not r.get("steady_tokens_per_s"):
            skipped.append(f"{r['case']}: " + ("not a LoreKit backend" if r.get("backend_asked") == "trl"
                                               else "no steady tokens/s"))
            continue
        if r["shape"] not in shapes:
            skipped.append(f"{r['case']}: shape {r['shape']!r} is not in the table's shapes")
            continue
        cfg = {**defaults, **r.get("config", {}), **r.get("ran", {})}
        bf16 = device == "cuda" or cfg["precision"] == "bf16"
        candidate = r["backend"] if r["backend"] == "transformers" else \
            ("unsloth-compiled" if cfg["compile"] else "unsloth")
        startup = r.get("startup_s")
        if startup is None:  # older reports: step 1's tokens from the batch and the mean row
            step1 = cfg["batch_size"] * cfg["grad_accum"] * r["mean_row_tokens"]
            startup = r["first_step_at_s"] - step1 / r["steady_tokens_per_s"]
        row = {"device": device, "shape": r["shape"], "precision": speed.precision_key(device, cfg["load_in_4bit"], bf16),
               "candidate": candidate, "batch_size": cfg["batch_size"], "grad_accum": cfg["grad_accum"],
               "gradient_checkpointing": cfg["gradient_checkpointing"], "startup_s": startup,
               "tokens_per_s": r["steady_tokens_per_s"], "mean_row_tokens": r["mean_row_tokens"],
               "position": position, "case": r["case"]}
        groups.setdefault(tuple(row[k] for k in TABLE_KEY), []).append(row)
    where = f"{report.get('command', '?')} ({report.get('date', '?')}, {report.get('machine', {}).get('gpu', 'CPU')})"
    rows = []
    for runs in groups.values():
        row = {k: runs[0][k] for k in TABLE_KEY}
        row["startup_s"] = round(sum(r["startup_s"] for r in runs) / len(runs), 1)
        row["tokens_per_s"] = round(sum(r["tokens_per_s"] for r in runs) / len(runs), 1)
        row["mean_row_tokens"] = runs[0]["mean_row_tokens"]
        row["runs"] = [{k: r[k] if k != "startup_s" else round(r[k], 1)
                        for k in ("case", "position", "tokens_per_s", "startup_s")} for r in runs]
        row["source"] = where + (f", mean of {len(runs)} cases" if len(runs) > 1 else "")
        rows.append(row)
    return rows, skipped


def update_table(path: Path, reports: list[dict]) -> tuple[list[dict], list[str]]:
    """Fold the reports' figures into the speed table at `path` (started from the shipped table if the file
    is missing): a new row replaces the row of the same device, shape, precision, candidate and batch."""
    from lorekit.atomic import write_text
    from lorekit.train import speed

    table = speed.load_table(path if path.exists() else None)
    added, skipped = [], []
    for report in reports:  # in order: a later report's row replaces an earlier one's
        rows, left = table_rows(report, table.get("shapes", {}))
        keys = {tuple(r[k] for k in TABLE_KEY) for r in rows}
        table["measurements"] = [r for r in table["measurements"] if tuple(r.get(k) for k in TABLE_KEY) not in keys]
        table["measurements"] += rows
        added = [r for r in added if tuple(r[k] for k in TABLE_KEY) not in keys] + rows
        skipped += left
    table["measurements"].sort(key=lambda r: (r["device"], r["shape"], r["precision"], r["batch_size"],
                                              r["candidate"]))
    write_text(path, json.dumps(table, indent=1) + "\n")
    return added, skipped


def machine() -> dict:
    info = {"host": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


if __name__ == "__main__":
    sys.exit(main())
