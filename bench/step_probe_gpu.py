"""Where an optimizer step of the E2B build goes on a GPU: the same steps, timed under variants, in one process.

    python bench/step_probe_gpu.py --out $OUT            # on the GPU machine (after bench/build_e2b_gpu.py's model)
    python bench/step_probe_gpu.py --out /tmp/p --smoke  # CPU check of this script: tiny random Gemma 4

Issue 18's build spends most of its time in optimizer steps that are bound by the host launching kernels
(bench/results/build_e2b_gpu.md: 0.596 s a step at batch 32, ~0.37 s of it fixed per step). This loads the
model of `bench/build_e2b_gpu.py` (its --work folder; made there if missing) with LoreKit's own loader and the
`--preset fast` settings, tokenizes the whole sample world's rows as `lorekit train` does, and times `--steps`
optimizer steps of the same batches (a fixed pick from the epoch's batch order) under each variant:

  plain       the loop with transformers' RMSNorm and PEFT's input casts (`[train] fuse = false`)
  fused       the loop with `[train] fuse = true` (lorekit/train/fused.py), as `lorekit train` runs it on CUDA then
  fused+adamw `fused` with torch's AdamW instead of bitsandbytes' 8-bit AdamW
  fused@N     `fused` at batch N (`--batch-sizes`): fewer, larger steps, if the card holds them

The peak memory is taken per variant; a batch that does not fit is recorded as "oom". The loss of one fixed
batch under `plain` and `fused` is printed (the two must agree), and where a step of `fused` still makes the
host wait for the device (torch's sync debug mode). Writes OUT/step_probe.json and prints a table; all
variants run in one process, so their ratios hold.
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


def time_steps(model, rows, plan, group_list, variant: str, largest=None) -> dict:
    import torch

    from lorekit.train import loop

    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    plan = loop.Plan(**{**plan.__dict__, "optimizer": "adamw" if variant.endswith("+adamw") else plan.optimizer})
    optimizer = loop.make_optimizer(model, plan)
    scheduler = loop.make_scheduler(optimizer, plan, 1000)
    stop = loop.StopFlag()
    times = []
    try:
        for group in group_list:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            loop._step(model, optimizer, scheduler, rows, group, plan, stop)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    except torch.OutOfMemoryError:
        model.zero_grad(set_to_none=True)
        del optimizer
        return {"variant": variant, "oom": True, "steps": len(times), "batch_size": plan.batch_size,
                "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
    steady = times[2:] or times
    tokens = [_tokens(rows, g) for g in group_list]
    result = {"variant": variant, "step_s": round(sum(steady) / len(steady), 4), "first_s": round(times[0], 3),
              "tokens_per_s": round(sum(tokens[2:] or tokens) / sum(steady), 1), "steps": len(times),
              "batch_size": plan.batch_size,
              "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}
    if largest is not None and cuda:  # one more step, on the epoch's largest batch: a build's peak
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        result["largest_tokens"] = _tokens(rows, largest)
        try:
            loop._step(model, optimizer, scheduler, rows, largest, plan, stop)
            result["largest_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        except torch.OutOfMemoryError:
            model.zero_grad(set_to_none=True)
            result["largest_peak_gib"] = "oom"
    return result


def _tokens(rows, group) -> int:
    """Row tokens of one optimizer step (a group of micro-batches of row indices)."""
    return sum(len(rows[i].input_ids) for batch in group for i in batch)


def picks_of(rows, plan, steps: int):
    """A fixed pick of `steps` optimizer steps: from the epoch's order, those from a quarter of the way down
    the list sorted by tokens (large, not the very largest); and the epoch's largest step, whose peak memory
    says whether a whole build at this batch size fits the card."""
    order = plan.step_groups(rows, 0)
    by_size = sorted(order, key=lambda g: -_tokens(rows, g))
    return order, by_size[len(by_size) // 4:len(by_size) // 4 + steps], by_size[0]


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
    ap.add_argument("--batch-sizes", type=lambda v: [int(x) for x in v.split(",") if x], default=[48, 64],
                    help="larger batches to time fused at, comma-separated (empty: none)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import build_e2b_gpu as b

    t0 = time.time()
    folder, info = b.prepare_model(argparse.Namespace(work=args.work, smoke=args.smoke, shape="e2b",
                                                      tokenizer=args.tokenizer))
    import torch

    from lorekit.train import fused, loop, recipe

    result = {"machine": info.get("machine"), "model_s": round(time.time() - t0, 1), "variants": []}
    cuda = torch.cuda.is_available() and not args.smoke
    from dataclasses import replace

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    cfg, rows, plan = rows_and_plan(args, folder, tok)
    order, picks, largest = picks_of(rows, plan, args.steps)  # the same batches for every variant at this size
    result["batch_tokens"] = [_tokens(rows, g) for g in picks]
    print(f"rows {len(rows)}, {len(order)} steps an epoch; probe batches of {result['batch_tokens']} tokens",
          flush=True)

    t1 = time.time()
    model, _, _, _ = recipe._load(cfg, "transformers", cuda)
    print(f"loaded in {time.time() - t1:.1f} s", flush=True)
    with torch.no_grad():
        batch = loop._batch(rows, _piece(picks[0][0]), plan)
        plain_loss = float(loop.masked_loss(model, batch, plan.bf16)[0])
        print("fused:", fused.apply(model, autocast=plan.bf16).summary(), flush=True)
        result["fixed_loss"] = {"plain": plain_loss, "fused": float(loop.masked_loss(model, batch, plan.bf16)[0])}
    print("fixed batch loss", result["fixed_loss"], flush=True)
    fused.undo(model)
    variants = [("plain", plan, picks, largest), ("fused", plan, picks, largest), ("fused+adamw", plan, picks, None)]
    for size in args.batch_sizes:
        bigger = replace(plan, batch_size=size)
        variants.append((f"fused@{size}", bigger, *picks_of(rows, bigger, args.steps)[1:]))
    for name, plan_of, groups, big in variants:
        if name.startswith("fused"):
            fused.apply(model, autocast=plan.bf16)
        r = time_steps(model, rows, plan_of, groups, name, big)
        print(json.dumps(r), flush=True)
        result["variants"].append(r)
        fused.undo(model)
    if cuda:
        fused.apply(model, autocast=plan.bf16)
        result["sync_sites_fused"] = sync_sites(model, rows, plan, picks[0])
        print("host waits in one step (fused):", *result["sync_sites_fused"], sep="\n  ", flush=True)
    base = next((v.get("tokens_per_s") for v in result["variants"] if v["variant"] == "plain"), None) or float("nan")
    lines = ["| variant | batch | s a step | tokens/s | tokens/s vs plain | peak GiB | largest step: tokens, peak GiB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for v in result["variants"]:
        big = f"{v['largest_tokens']}, {v['largest_peak_gib']}" if "largest_tokens" in v else "-"
        lines.append(f"| {v['variant']} | {v.get('batch_size', '-')} | out of memory | - | - | {v['peak_gib']} | - |"
                     if v.get("oom") else f"| {v['variant']} | {v['batch_size']} | {v['step_s']} | {v['tokens_per_s']} | "
                     f"x{v['tokens_per_s'] / base:.2f} | {v['peak_gib']} | {big} |")
    result["table"] = "\n".join(lines)
    print(result["table"])
    (args.out / "step_probe.json").write_text(json.dumps(result, indent=1))
    return 0


FALLBACK_BATCH = 16  # the build's batch when the probe gives nothing better: fits an 80 GB card


def pick_batch(variants: list[dict], card_gib: float, share: float = 0.92,
               fallback: int = FALLBACK_BATCH) -> tuple[int, str]:
    """The build's batch from a probe's variants: the fused one (not +adamw) with the most tokens/s whose step on
    the epoch's largest batch fit in `share` of the card; `fallback` when none did. Returns (batch, why)."""
    fits = [v for v in variants if v["variant"].startswith("fused") and not v["variant"].endswith("+adamw")
            and not v.get("oom") and isinstance(v.get("largest_peak_gib"), (int, float))
            and v["largest_peak_gib"] < share * card_gib]
    best = max(fits, key=lambda v: v["tokens_per_s"], default=None)
    batch = best["batch_size"] if best else fallback
    why = (f"batch {batch}: card {card_gib:.1f} GiB; fused variants whose largest step fits in {share:.0%}: "
           + ("; ".join(f"{v['variant']} {v['tokens_per_s']} tokens/s, largest step {v['largest_peak_gib']} GiB"
                        for v in fits) or f"none, so {fallback}"))
    return batch, why


def _pick_main(probe_json: Path) -> int:
    """`--pick`: print the build's batch for a probe result on this machine's first GPU (16 without one)."""
    try:
        import torch

        card = torch.cuda.get_device_properties(0).total_memory / 2**30
        variants = json.loads(probe_json.read_text())["variants"]
    except Exception as e:  # no GPU or no probe result
        print(f"batch {FALLBACK_BATCH}: no probe result ({type(e).__name__}: {e})", file=sys.stderr)
        print(FALLBACK_BATCH)
        return 0
    batch, why = pick_batch(variants, card)
    print(why, file=sys.stderr)
    print(batch)
    return 0


def _piece(rows_of_batch):
    from lorekit.train.distributed import Piece

    return Piece(rows=list(rows_of_batch), prefix_of=list(rows_of_batch), weight=1.0)


if __name__ == "__main__" and "--make-model" not in sys.argv:
    if sys.argv[1:2] == ["--pick"]:  # bench/e2b_gpu_run.sh: python3 bench/step_probe_gpu.py --pick OUT/step_probe.json
        sys.exit(_pick_main(Path(sys.argv[2])))
    sys.exit(main())
