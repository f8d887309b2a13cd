"""CPU training speed of the embedded 270M model: which settings `lorekit train` uses on a CPU.

    python bench/train_cpu.py [--dataset OUT/dataset/train.jsonl] [--steps 3] [--batch 8]

Measures optimizer steps of LoRA (r 16, all decoder projections) on real dataset rows with:
  baseline  fp32, the full 262,144-word output layer at every position (what a plain HF loss does)
  masked    fp32, output layer only where labels != -100
  bf16      masked + bf16 autocast
  prompt    bf16 + the system prompt a batch shares run once without gradient (share_prompt)
  prompt-fp32  the same in fp32
and writes tokens/s (all tokens of the rows, padding excluded) with ratios to the baseline to
bench/results/train_cpu.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def full_logits_loss(model, batch, bf16):
    """The plain way: the model computes logits at every position, then the loss."""
    import contextlib

    import torch

    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                    use_cache=False)
    n = int((batch["labels"][:, 1:] != -100).sum())
    return out.loss * n, n


def measure(model, examples, plan, variant: str, steps: int) -> dict:
    import torch

    from lorekit.train import loop
    from lorekit.train.data import batch_order, collate

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    share = variant.startswith("prompt")
    groups = [e.group for e in examples] if share else None
    batches = batch_order([len(e.input_ids) for e in examples], plan.batch_size, 0, 0, True, groups)
    times, tokens = [], []
    for i, idx in enumerate(batches[: steps + 1]):
        batch = collate([examples[j] for j in idx], plan.pad_id, share_prefix=share)
        t = time.perf_counter()
        if variant == "baseline":
            loss, n = full_logits_loss(model, batch, False)
        else:
            loss, n = loop.masked_loss(model, batch, variant in ("bf16", "prompt"))
        (loss / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step warms caches and allocators
            times.append(time.perf_counter() - t)
            tokens.append(int(batch["attention_mask"].sum()))
    return {"variant": variant, "tokens_per_s": round(sum(tokens) / sum(times), 1),
            "s_per_step": round(sum(times) / len(times), 2), "tokens_per_step": round(sum(tokens) / len(tokens))}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", type=Path, default=Path("build/dataset/train.jsonl"))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--variants", default="baseline,masked,bf16,prompt,prompt-fp32")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_cpu.json")
    args = ap.parse_args()
    import torch

    from lorekit import chat_formats
    from lorekit.train.config import TrainConfig
    from lorekit.train.data import encode_rows, read_rows
    from lorekit.train.load import load_model
    from lorekit.train.recipe import _plan, attach_lora

    t = time.perf_counter()
    model, tok, profile = load_model("gemma3-270m")
    load_s = time.perf_counter() - t
    torch.manual_seed(0)
    model = attach_lora(model, profile, {"r": 16, "alpha": 32, "dropout": 0.0}, False)
    rows = read_rows(args.dataset)
    examples = encode_rows(tok, chat_formats.get(profile.family), rows, 1024)
    lengths = [len(e.input_ids) for e in examples]
    trainable = sum(e.n_trainable for e in examples)
    plan = _plan(TrainConfig(batch_size=args.batch, grad_accum=1, epochs=1), False, tok)
    results = [measure(model, examples, plan, v, args.steps) for v in args.variants.split(",")]
    base = next((r["tokens_per_s"] for r in results if r["variant"] == "baseline"), None)
    for r in results:
        r["ratio_vs_baseline"] = round(r["tokens_per_s"] / base, 2) if base else None
        print(json.dumps(r), flush=True)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "processor": platform.processor() or platform.machine()},
        "command": " ".join(["python"] + sys.argv), "model": "gemma3-270m", "load_s": round(load_s, 1),
        "dataset": {"rows": len(examples), "tokens": sum(lengths), "mean_tokens": round(sum(lengths) / len(lengths), 1),
                    "trainable_tokens": trainable, "trainable_share": round(trainable / sum(lengths), 3)},
        "batch": args.batch, "steps_timed": args.steps, "results": results,
        "load_average_at_end": os.getloadavg(),
        "note": "the machine's 2 cores were shared with other work; figures are lower bounds",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["dataset"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
