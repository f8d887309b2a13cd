"""Where an optimizer step of the E2B build goes on a GPU: the same steps, timed under variants, in one process.

    python bench/step_probe_gpu.py --out $OUT            # on the GPU machine (after bench/build_e2b_gpu.py's model)
    python bench/step_probe_gpu.py --out /tmp/p --smoke  # CPU check of this script: tiny random Gemma 4

Issue 18's build spends most of its time in optimizer steps that are bound by the host launching kernels
(bench/results/build_e2b_gpu.md: 0.596 s a step at batch 32, ~0.27 s of it fixed per step). This loads the
model of `bench/build_e2b_gpu.py` (its --work folder; made there if missing) with LoreKit's own loader and the
`--preset fast` settings, tokenizes the whole sample world's rows as `lorekit train` does, and times `--steps`
optimizer steps of the same batches (the largest of the epoch's batch order, a fixed pick) under each variant:

  before      the loop as it was: the labelled positions picked with a mask on the device (the host waits
              for the whole forward pass there), each micro-batch's loss read at once
  after       the loop as it is (positions from the batch's CPU tensors, pinned copies, one read per step)
  adamw       `after` with torch's AdamW instead of bitsandbytes' 8-bit AdamW
  resident    per-layer embedding tables left on the GPU (`offload_ple = false`), with 8-bit AdamW and with
              AdamW; these run first, since the offload cannot be undone in a process

and lists where a step of `after` still makes the host wait for the device (torch's sync debug mode). The loss
of one fixed batch under `before` and `after` is printed: the two must agree. Writes OUT/step_probe.json and
prints a table; the step times of all variants come from the same process, so their ratios hold.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def old_masked_loss(model, batch: dict, bf16: bool):
    """The loop's loss before the change: a boolean mask applied on the device."""
    import torch.nn.functional as F

    from lorekit.train.data import IGNORE
    from lorekit.train.loop import _autocast

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = next(model.parameters()).device
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    labels = batch["labels"].to(device)[:, 1:]
    with _autocast(device, bf16):
        hidden = causal.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        keep = labels != IGNORE
        logits = causal.lm_head(hidden[:, :-1][keep])
    logits = logits.float()
    cap = getattr(causal.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        import torch

        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, labels[keep], reduction="sum"), int(keep.sum())


def rows_and_plan(args, model_folder: Path, tok):
    from dataclasses import replace

    from lorekit import chat_formats
    from lorekit.train import recipe
    from lorekit.train.config import TrainConfig
    from lorekit.train.data import encode_rows, read_rows

    lore, build = args.work / "probe-lore", args.work / "probe-build"
    if not (build / "dataset" / "train.jsonl").is_file():
        import shutil

        shutil.rmtree(lore, ignore_errors=True)
        shutil.copytree(ROOT / "sample_lore", lore)
        limit = "max_facts = 12\n" if args.smoke else "max_facts = 0\n"
        (lore / "lorekit.toml").write_text("[compile]\n" + limit, encoding="utf-8")
        subprocess.run([sys.executable, "-m", "lorekit", "compile", str(lore), "--out", str(build)], check=True,
                       capture_output=True)
    cfg = TrainConfig(model=str(model_folder), backend="transformers", load_in_4bit=False,
                      gradient_checkpointing=False, batch_size=args.batch_size, grad_accum=1, optimizer="adamw_8bit")
    cuda = not args.smoke
    cfg = recipe.resolve_defaults(cfg, cuda)
    fmt = chat_formats.get("gemma4")
    rows = encode_rows(tok, fmt, read_rows(build / "dataset" / "train.jsonl"), cfg.max_length, "train.jsonl")
    plan = recipe._plan(cfg if cuda else replace(cfg, optimizer="adamw"), cuda, tok)
    plan.pad_multiple = 8 if cuda else 1
    return cfg, rows, plan


def time_steps(model, rows, plan, group_list, variant: str, loss_fn) -> dict:
    import torch

    from lorekit.train import loop

    plan = loop.Plan(**{**plan.__dict__, "optimizer": "adamw" if "adamw" == variant.split("+")[-1] else plan.optimizer})
    optimizer = loop.make_optimizer(model, plan)
    scheduler = loop.make_scheduler(optimizer, plan, 1000)
    saved = loop.masked_loss
    loop.masked_loss = loss_fn
    try:
        stop = loop.StopFlag()
        times = []
        for group in group_list:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loop._step(model, optimizer, scheduler, rows, group, plan, stop)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    finally:
        loop.masked_loss = saved
    steady = times[2:] or times
    tokens = [sum(len(rows[i].input_ids) for b in g for i in b) for g in group_list]
    return {"variant": variant, "step_s": round(sum(steady) / len(steady), 4), "first_s": round(times[0], 3),
            "tokens_per_s": round(sum(tokens[2:] or tokens) / sum(steady), 1), "steps": len(times),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None}


def sync_sites(model, rows, plan, group) -> list[str]:
    """Where one step of the current loop makes the host wait (torch's sync debug mode), by caller."""
    import torch

    from lorekit.train import loop

    sites: dict[str, int] = {}

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1]
                  if "/lorekit/" in f.filename or "/transformers/" in f.filename or "/peft/" in f.filename]
        key = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-3:]))
        sites[key] = sites.get(key, 0) + 1

    optimizer = loop.make_optimizer(model, plan)
    scheduler = loop.make_scheduler(optimizer, plan, 1000)
    old = warnings.showwarning
    warnings.showwarning = record
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = record
            torch.cuda.set_sync_debug_mode("warn")
            try:
                loop._step(model, optimizer, scheduler, rows, group, plan, loop.StopFlag())
            finally:
                torch.cuda.set_sync_debug_mode("default")
    finally:
        warnings.showwarning = old
    return [f"{n} x {k}" for k, n in sorted(sites.items(), key=lambda kv: -kv[1])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/lorekit-e2b-build"), help="bench/build_e2b_gpu.py's")
    ap.add_argument("--tokenizer", type=Path, default=ROOT / ".gpu" / "e2b-tokenizer.tar.xz")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per variant (the first 2 not counted)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import build_e2b_gpu as b

    t0 = time.time()
    folder, info = b.prepare_model(argparse.Namespace(work=args.work, smoke=args.smoke, shape="e2b",
                                                      tokenizer=args.tokenizer))
    import torch

    from lorekit.train import loop, recipe

    result = {"machine": info.get("machine"), "model_s": round(time.time() - t0, 1), "variants": []}
    cuda = torch.cuda.is_available() and not args.smoke
    from dataclasses import replace

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    cfg, rows, plan = rows_and_plan(args, folder, tok)
    order = plan.step_groups(rows, 0)
    # the largest steps of the epoch, a fixed pick: the same batches for every variant
    by_size = sorted(order, key=lambda g: -sum(len(rows[i].input_ids) for b_ in g for i in b_))
    picks = by_size[len(by_size) // 4:len(by_size) // 4 + args.steps]
    result["batch_tokens"] = [sum(len(rows[i].input_ids) for b_ in g for i in b_) for g in picks]
    print(f"rows {len(rows)}, {len(order)} steps an epoch; probe batches of {result['batch_tokens']} tokens",
          flush=True)

    for offload in (False, True):
        t1 = time.time()
        model, _, _, _ = recipe._load(replace(cfg, offload_ple=offload), "transformers", cuda)
        print(f"loaded (offload_ple={offload}) in {time.time() - t1:.1f} s", flush=True)
        variants = [("after", loop.masked_loss), ("after+adamw", loop.masked_loss)]
        if offload:
            variants = [("before", old_masked_loss)] + variants
        for name, fn in variants:
            label = name if offload else f"resident:{name}"
            r = time_steps(model, rows, plan if cuda else replace(plan, optimizer="adamw"), picks, label, fn)
            print(json.dumps(r), flush=True)
            result["variants"].append(r)
        if offload:
            with torch.no_grad():
                batch = loop._batch(rows, _piece(picks[0][0]), plan)
                result["fixed_loss"] = {"before": float(old_masked_loss(model, batch, plan.bf16)[0]),
                                        "after": float(loop.masked_loss(model, batch, plan.bf16)[0])}
            print("fixed batch loss", result["fixed_loss"], flush=True)
            if cuda:
                result["sync_sites_after"] = sync_sites(model, rows, plan, picks[0])
                print("host waits in one step (after):", *result["sync_sites_after"], sep="\n  ", flush=True)
        del model
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
    base = next(v for v in result["variants"] if v["variant"] == "before")["step_s"]
    lines = ["| variant | s a step | tokens/s | vs before | peak GiB |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {v['variant']} | {v['step_s']} | {v['tokens_per_s']} | x{base / v['step_s']:.2f} | {v['peak_gib']} |"
              for v in result["variants"]]
    result["table"] = "\n".join(lines)
    print(result["table"])
    (args.out / "step_probe.json").write_text(json.dumps(result, indent=1))
    return 0


def _piece(rows_of_batch):
    from lorekit.train.distributed import Piece

    return Piece(rows=list(rows_of_batch), prefix_of=list(rows_of_batch), weight=1.0)


if __name__ == "__main__" and "--make-model" not in sys.argv:
    sys.exit(main())
