"""Gemma 4 E2B on one CUDA GPU, in one command: where the memory goes, plain loop vs Unsloth, step profiles.

    python bench/train_e2b_gpu.py --out $OUT      # on the GPU machine; starts no part after --budget s
    python bench/train_e2b_gpu.py --out /tmp/e2b --smoke   # CPU run of the same code on a tiny Gemma 4

Parts, in this order, each skipped when the time left (`--budget`, default 450 s) is below what it needs:
  (a) memory: the E2B shape (random weights, 4-bit nf4, LoRA r 16, gradient checkpointing, 8-bit AdamW) at
      batch 2 x 4 micro-batches of ~1,024-token rows, loaded with LoreKit's own loaders, one fresh process
      per backend (--memory-first: the plain loop; --memory-last: Unsloth). Each process trains in two
      phases: "resident" (per-layer embeddings on the GPU, as before) then "offload" (the same model after
      `ple_offload.offload`, as `lorekit train` now runs on CUDA). Recorded: resident bytes by kind (4-bit
      linear weights, per-layer tables, other embeddings, LoRA, optimizer state) summed from the tensors
      themselves, the load peak, each step's peak over what was resident before it (activations and step
      temporaries), the training peak and tokens/s of each phase, and the loss of one fixed batch just
      before and just after the offload (the same model, so it must not change).
  (b) throughput: `bench/train_throughput.py` cases plain, Unsloth, Unsloth, plain in one process tree, so
      each backend runs once first and once second; then the shipped speed table updated with the figures.
  (c) profile: a torch.profiler top-20 (self device time, self CPU time) of one optimizer step of each
      phase of the backends named in --profile.

Files written under --out (6): memory.json, throughput.json, speed_table.json, profile.txt, summary.md
(also printed), and run.json (arguments, machine, what was skipped and why).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

START = time.time()
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import train_throughput as tt  # noqa: E402  (bench/, next to this file)

# variant -> (backend, gradient checkpointing mode: Unsloth's own offloads activations to CPU memory)
VARIANTS = {
    "plain": ("transformers", "torch"),
    "unsloth": ("unsloth", "unsloth"),
    "unsloth-torch-checkpointing": ("unsloth", "torch"),
}
PHASES = ("resident", "offload")
# seconds a part needs on the H200 (earlier runs: load ~20 s plain / ~55 s Unsloth, ~2.5 s an optimizer step);
# an Unsloth variant may start with time for its first phase only: each phase is saved as it ends
NEEDS = {"plain": 55, "unsloth": 70, "unsloth-torch-checkpointing": 70, "e2b-4bit-transformers": 55,
         "e2b-4bit-unsloth": 90}
KINDS = ("linear_4bit", "ple", "embeddings", "lora", "linear_other", "other")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the result files")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lorekit-e2b"), help="models, rows and runs")
    ap.add_argument("--budget", type=float, default=450, help="start no part that would end after this many s")
    ap.add_argument("--memory-first", default="plain", help="(a) variants before (b)")
    ap.add_argument("--cases", default="e2b-4bit-transformers,e2b-4bit-unsloth,e2b-4bit-unsloth,e2b-4bit-transformers",
                    help="(b) bench/train_throughput.py cases, in order")
    ap.add_argument("--memory-last", default="unsloth", help="(a) variants after (b)")
    ap.add_argument("--profile", default="plain,unsloth", help="(c) variants whose step is profiled")
    ap.add_argument("--steps", type=int, default=3, help="optimizer steps per phase (the first is warm-up)")
    ap.add_argument("--shape", default="gemma4-e2b")
    ap.add_argument("--rows", default="100,1000", help="COUNT,TOKENS: rows of about TOKENS tokens")
    ap.add_argument("--smoke", action="store_true",
                    help="CPU check of this script: tiny Gemma 4, plain variants, one tiny case")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.smoke:
        args.shape, args.rows, args.memory_last, args.profile = "tiny-gemma4", "64,80", "", "plain"
        args.cases = "tiny4-transformers"
    args.memory_first, args.memory_last, args.profile, args.cases = (
        _names(args.memory_first), _names(args.memory_last), _names(args.profile), _names(args.cases))
    for name in args.memory_first + args.memory_last + args.profile:
        if name not in VARIANTS:
            ap.error(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}")
    for case in args.cases:
        if case not in tt.CASES:
            ap.error(f"unknown case {case!r}; see bench/train_throughput.py CASES")
    count, _, tokens = args.rows.partition(",")
    args.rows = (int(count), int(tokens))
    return args


def _names(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


class Budget:
    def __init__(self, seconds: float):
        self.end = START + seconds

    def left(self) -> float:
        return self.end - time.time()

    def allows(self, part: str) -> bool:
        return self.left() >= NEEDS.get(part, 30)


# ---- (a) and (c): one variant in a fresh process ------------------------------------------------------------

def breakdown(model, device: str) -> dict[str, int]:
    """Bytes of `model`'s parameters and buffers on `device`, by kind, each tensor counted once (the tied
    output layer is the input embedding); plus the per-layer tables held in CPU memory by the offload."""
    import itertools

    import torch

    from lorekit.train.ple_offload import CpuRowLookup

    parts = dict.fromkeys(KINDS, 0)
    seen: set[int] = set()
    for name, t in itertools.chain(model.named_parameters(), model.named_buffers()):
        if t.device.type != torch.device(device).type or t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        parts[kind_of(name, t)] += t.numel() * t.element_size() + _quant_state_bytes(t)
    parts["ple_in_cpu_memory"] = sum(m.table.numel() * m.table.element_size()
                                     for m in model.modules() if isinstance(m, CpuRowLookup))
    return parts


def kind_of(name: str, tensor) -> str:
    if "lora_" in name or "trainable_tokens" in name:
        return "lora"
    if "embed_tokens_per_layer" in name:
        return "ple"
    if "embed_tokens" in name or "lm_head" in name:
        return "embeddings"
    if type(tensor).__name__ == "Params4bit":
        return "linear_4bit"
    if name.endswith(".weight") and tensor.dim() == 2:
        return "linear_other"
    return "other"


def _quant_state_bytes(tensor) -> int:
    """bitsandbytes keeps a 4-bit weight's scales beside it (absmax, and with double quantization the scales
    of those scales in state2)."""
    import torch

    total, state = 0, getattr(tensor, "quant_state", None)
    while state is not None:
        for attr in ("absmax", "code", "offset"):
            value = getattr(state, attr, None)
            if torch.is_tensor(value):
                total += value.numel() * value.element_size()
        state = getattr(state, "state2", None)
    return total


def optimizer_bytes(optimizer) -> int:
    import torch

    return sum(v.numel() * v.element_size() for state in optimizer.state.values() for v in state.values()
               if torch.is_tensor(v))


def variant_worker(variant: str, work: Path, shape: str, steps: int, profile: bool, result: Path) -> None:
    """Load, attach LoRA, then train `steps` optimizer steps at batch 2 x 4 in each phase and measure;
    `result` is rewritten after each phase, so a later failure keeps the earlier figures."""
    import itertools

    backend, checkpointing = VARIANTS[variant]
    if backend == "unsloth":  # before transformers, as in lorekit's loader
        os.environ.setdefault("UNSLOTH_COMPILE_DISABLE", "1")
        import unsloth  # noqa: F401
    import torch

    from lorekit import chat_formats
    from lorekit.train import load, loop, ple_offload, recipe
    from lorekit.train.data import collate, encode_rows, read_rows

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    mem = torch.cuda.memory_allocated if cuda else (lambda: 0)
    record: dict = {"variant": variant, "backend": backend, "checkpointing": checkpointing,
                    "device": torch.cuda.get_device_name(0) if cuda else "cpu", "phases": {}}
    lora = {"r": 16, "alpha": 32, "dropout": 0.0, "turn_tokens": True}
    folder = str(work / f"model-{shape}")
    torch.manual_seed(3407)  # the same LoRA initialisation in every variant, as `lorekit train` seeds it
    t = time.time()
    if backend == "unsloth":
        model, tok, profile_ = load.load_unsloth(folder, 1024, True, lora, 3407, True, False, checkpointing)
    else:
        model, tok, profile_ = load.load_model(folder, device, load_in_4bit=cuda)
        model = recipe.attach_lora(model, profile_, lora, True, tok)
    if cuda:
        torch.cuda.synchronize()
    record["load_s"] = round(time.time() - t, 1)
    record["load_peak_bytes"] = torch.cuda.max_memory_allocated() if cuda else 0
    rows = encode_rows(tok, chat_formats.get(profile_.family),
                       read_rows(work / "mem-data" / "dataset" / "train.jsonl"), 1024)
    plan = loop.Plan(epochs=1, batch_size=2, grad_accum=4, lr=2e-4, warmup_ratio=0.0, schedule="constant",
                     weight_decay=0.0, optimizer="adamw_8bit" if cuda else "adamw", bf16=cuda, max_steps=0,
                     eval_every=0, log_every=1, seed=3407, keep_best=False, pad_id=tok.pad_token_id,
                     pad_multiple=8 if cuda else 1)
    optimizer = loop.make_optimizer(model, plan)
    scheduler = loop.make_scheduler(optimizer, plan, 1000)
    groups = itertools.cycle(plan.step_groups(rows, 0))
    check = collate([rows[i] for i in plan.step_groups(rows, 0)[0][0]], plan.pad_id, plan.pad_multiple)
    model.train()
    stop = loop.StopFlag()  # never entered: no signal handler, never set
    for phase in PHASES:
        if phase == "offload":
            before = _fixed_loss(model, check, plan)
            record["ple_moved_bytes"] = ple_offload.offload(model, device)
            after = _fixed_loss(model, check, plan)
            record["offload_check"] = {"loss_before": before, "loss_after": after, "same": before == after}
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        parts = breakdown(model, device)
        parts["unattributed"] = mem() - sum(parts[k] for k in KINDS) if cuda else 0
        ran = [_timed_step(model, optimizer, scheduler, rows, next(groups), plan, stop, cuda) for _ in range(steps)]
        timed = ran[1:] or ran
        record["phases"][phase] = {
            "parts": parts, "bytes_resident": parts["unattributed"] + sum(parts[k] for k in KINDS), "steps": ran,
            "optimizer_state_bytes": optimizer_bytes(optimizer),
            "tokens_per_s": round(sum(s["tokens"] for s in timed) / sum(s["s"] for s in timed), 1),
            "train_peak_bytes": max(s["peak"] for s in ran),
            "step_over_resident_bytes": max(s["peak"] - s["before"] for s in timed)}
        if profile:
            record["phases"][phase]["profile"] = _profile_step(model, optimizer, scheduler, rows, next(groups),
                                                               plan, stop, cuda)
        result.write_text(json.dumps(record, indent=1))


def _fixed_loss(model, batch: dict, plan) -> float:
    import torch

    from lorekit.train import loop

    with torch.no_grad():
        loss, n = loop.masked_loss(model, batch, plan.bf16)
    return float(loss) / n


def _timed_step(model, optimizer, scheduler, rows, group, plan, stop, cuda: bool) -> dict:
    import torch

    from lorekit.train import loop

    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if cuda else 0
    t = time.perf_counter()
    loss, tokens = loop._step(model, optimizer, scheduler, rows, group, plan, stop)
    if cuda:
        torch.cuda.synchronize()
    return {"s": round(time.perf_counter() - t, 3), "tokens": tokens, "loss": round(loss, 4), "before": before,
            "peak": torch.cuda.max_memory_allocated() if cuda else 0,
            "after": torch.cuda.memory_allocated() if cuda else 0}


def _profile_step(model, optimizer, scheduler, rows, group, plan, stop, cuda: bool) -> dict:
    """One optimizer step under torch.profiler: top-20 by self device time and by self CPU time, how long
    the GPU was busy against the step's wall time, and how many kernels were launched."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from lorekit.train import loop

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    try:
        with profile(activities=activities) as prof:
            t = time.perf_counter()
            loop._step(model, optimizer, scheduler, rows, group, plan, stop)
            if cuda:
                torch.cuda.synchronize()
            wall = time.perf_counter() - t
        events = prof.key_averages()
        out = {"step_s": round(wall, 3), "by_cpu_time": events.table(sort_by="self_cpu_time_total", row_limit=20)}
        if cuda:
            for key in ("self_device_time_total", "self_cuda_time_total"):  # torch renamed cuda -> device
                try:
                    out["by_device_time"] = events.table(sort_by=key, row_limit=20)
                    out["device_busy_s"] = round(sum(getattr(e, key) for e in events) / 1e6, 3)
                    break
                except (AttributeError, KeyError, ValueError):
                    continue
            out["kernel_launches"] = sum(e.count for e in events if "LaunchKernel" in e.key)
        return out
    except Exception as e:  # noqa: BLE001 - a profiler failure must not lose the memory figures
        return {"error": f"{type(e).__name__}: {e}"}


def run_variant(variant: str, args, limit: float) -> dict:
    result = args.work / f"variant-{variant}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--out", str(args.out), "--work", str(args.work), "--worker", variant,
           "--result", str(result), "--shape", args.shape, "--steps", str(args.steps),
           "--profile", ",".join(args.profile)]
    t = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))
        tail, ok = (proc.stdout + proc.stderr)[-3000:], proc.returncode == 0 and result.exists()
    except subprocess.TimeoutExpired as e:
        tail, ok = (tt._text(e.stdout) + tt._text(e.stderr))[-3000:], False
    record = json.loads(result.read_text()) if result.exists() else {"variant": variant, "phases": {}}
    if not ok:  # the phases it finished are kept
        record["error"] = f"failed after {time.time() - t:.0f} s (limit {limit:.0f} s)"
    record["wall_s"] = round(time.time() - t, 1)
    record["log_tail"] = tail[-1500:]
    for phase, r in record["phases"].items():
        print(f"(a) {variant} {phase}: training peak {gib(r['train_peak_bytes'])} GiB, {r['tokens_per_s']} tokens/s",
              flush=True)
    if not ok:
        print(f"(a) {variant}: FAILED\n{tail}", flush=True)
    return record


# ---- the report ----------------------------------------------------------------------------------------------

def gib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f}"


def memory_table(memory: list[dict]) -> str:
    lines = ["| variant | phase | load peak | training peak | 4-bit linear | per-layer emb. on GPU "
             "| per-layer emb. in CPU RAM | other embeddings | LoRA | optimizer | step peak over resident | other "
             "| tokens/s |", "| --- " * 13 + "|"]
    notes = []
    for r in memory:
        for phase, x in r.get("phases", {}).items():
            p = x["parts"]
            lines.append(
                f"| {r['variant']} | {phase} | {gib(r['load_peak_bytes'])} | {gib(x['train_peak_bytes'])} "
                f"| {gib(p['linear_4bit'])} | {gib(p['ple'])} | {gib(p['ple_in_cpu_memory'])} | {gib(p['embeddings'])} "
                f"| {gib(p['lora'])} | {gib(x['optimizer_state_bytes'])} | {gib(x['step_over_resident_bytes'])} "
                f"| {gib(p['linear_other'] + p['other'] + p.get('unattributed', 0))} | {x['tokens_per_s']:,.0f} |")
            notes.append(f"{r['variant']} {phase} {[s['loss'] for s in x['steps']]}")
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['error']} |" + " |" * 11)
        check = r.get("offload_check")
        if check:
            notes.append(f"{r['variant']}: loss of one fixed batch before / after the offload "
                         f"{check['loss_before']:.6f} / {check['loss_after']:.6f} ({'same' if check['same'] else 'DIFFERENT'})")
        phases = r.get("phases", {})
        if {"resident", "offload"} <= set(phases):
            ratio = phases["offload"]["tokens_per_s"] / phases["resident"]["tokens_per_s"]
            notes.append(f"{r['variant']}: tokens/s with the offload / without = {ratio:.2f}x (same process)")
    if notes:
        lines += ["", "Loss of each step, then checks: " + "; ".join(notes)]
    return "\n".join(lines)


def throughput_table(results: list[dict]) -> str:
    lines = ["| # | case | steady tokens/s | start-up s | first step s | wall s | peak GiB |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for i, r in enumerate(results, 1):
        if not r.get("ok"):
            lines.append(f"| {i} | {r['case']} | {r.get('error', 'skipped')} | | | | |")
            continue
        lines.append(f"| {i} | {r['case']} | {r.get('steady_tokens_per_s', '-')} | {r.get('startup_s', '-')} "
                     f"| {r.get('first_step_at_s')} | {r.get('wall_s')} | {r.get('peak_memory_gib')} |")
    return "\n".join(lines)


def order_ratios(results: list[dict]) -> list[str]:
    """Unsloth / plain steady tokens/s for each adjacent pair, named by which ran first."""
    out = []
    for a, b in zip(results, results[1:], strict=False):
        pair = {a.get("backend_asked"): a, b.get("backend_asked"): b}
        if set(pair) == {"transformers", "unsloth"} and all(x.get("steady_tokens_per_s") for x in (a, b)):
            ratio = pair["unsloth"]["steady_tokens_per_s"] / pair["transformers"]["steady_tokens_per_s"]
            out.append(f"{a['backend_asked']} first, then {b['backend_asked']}: Unsloth / plain = {ratio:.2f}x")
    return out


def auto_preview(table_path: Path, shape_model: str) -> list[str]:
    """What `--backend auto` picks on CUDA for the E2B profile at a few dataset sizes, from the new table."""
    from lorekit.train import speed

    table = speed.load_table(table_path)
    lines = []
    for tokens in (100_000, 1_000_000, 10_000_000):
        c = speed.choose(backend="auto", compile=None, model=shape_model, family="gemma4", device="cuda",
                         precision="4bit", batch_size=2, tokens=tokens, unsloth_installed=True, table=table)
        lines.append(f"{tokens:,} tokens: {c.summary()}")
    return lines


def profile_text(memory: list[dict]) -> str:
    parts = []
    for r in memory:
        for phase, x in r.get("phases", {}).items():
            prof = x.get("profile")
            if not prof:
                continue
            head = f"==== {r['variant']} ({phase}): one optimizer step (batch 2 x 4 micro-batches)"
            if "error" in prof:
                parts.append(f"{head}\nprofiler failed: {prof['error']}\n")
                continue
            busy = f", GPU busy {prof['device_busy_s']} s, {prof['kernel_launches']} kernel launches" \
                if "device_busy_s" in prof else ""
            parts.append(f"{head}: {prof['step_s']} s wall{busy}\n\n-- by self device time\n"
                         f"{prof.get('by_device_time', '(no GPU)')}\n\n-- by self CPU time\n{prof['by_cpu_time']}\n")
    return "\n".join(parts) or "no step was profiled\n"


def summary(args, memory: list[dict], throughput: list[dict], added: list[dict], skipped: list[str],
            preview: list[str], machine: dict) -> str:
    lines = [f"# Gemma 4 E2B on {machine.get('gpu', 'CPU')}: bench/train_e2b_gpu.py",
             "", f"- date: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(START))}, wall {time.time() - START:.0f} s",
             f"- machine: {json.dumps(machine)}",
             f"- command: python {' '.join(sys.argv)}", "",
             "## (a) Memory at batch 2 x 4 of ~1,024-token rows (GiB) and tokens/s, one process per backend", "",
             memory_table(memory), "",
             "Resident kinds are summed from the tensors themselves; 'load peak' is max_memory_allocated from "
             "the process start to the end of loading (the per-layer tables are on the GPU then in both phases); "
             "'training peak' is the highest max_memory_allocated during the phase's steps; 'step peak over "
             "resident' is the highest during a step less what was allocated before it (activations, gradients "
             "and step temporaries); 'other' holds norms, small projections, buffers and what the tensors do not "
             "account for.", "",
             "## (b) Plain loop vs Unsloth, bench/train_throughput.py cases in one process tree", "",
             throughput_table(throughput), "", *[f"- {x}" for x in order_ratios(throughput)], "",
             f"Speed table rows written: {len(added)}" + "".join(f"\n- skipped {x}" for x in skipped), "",
             "`--backend auto` on CUDA for this shape, from the updated table:", "",
             *[f"- {x}" for x in preview], "",
             "## (c) Profiles: see profile.txt", ""]
    skipped_parts = [f"- {p}" for p in getattr(args, "skipped_parts", [])]
    if skipped_parts:
        lines += ["## Skipped for time", "", *skipped_parts, ""]
    return "\n".join(lines)


# ---- the command ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        variant_worker(args.worker, args.work, args.shape, args.steps, args.worker in args.profile, args.result)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    budget, args.skipped_parts = Budget(args.budget), []
    subprocess.run([sys.executable, tt.__file__, "--prepare", args.shape, "--work", str(args.work)], check=True)
    tt.write_rows(args.work / "mem-data", args.work / f"model-{args.shape}", *args.rows)
    print(f"model and rows ready at {time.time() - START:.0f} s", flush=True)
    memory: list[dict] = []

    def variants(names: list[str]) -> None:
        for name in names:
            if not budget.allows(name):
                args.skipped_parts.append(f"(a) {name}: {budget.left():.0f} s left, needs ~{NEEDS[name]} s")
                continue
            memory.append(run_variant(name, args, max(budget.left() - 5, 10)))
            (args.out / "memory.json").write_text(json.dumps(memory, indent=1))

    variants(args.memory_first)
    results: list[dict] = []
    report = tt.write_report(args.out / "throughput.json", results)
    for case in args.cases:
        if not budget.allows(case):
            args.skipped_parts.append(f"(b) {case}: {budget.left():.0f} s left, needs ~{NEEDS.get(case, 30)} s")
            continue
        results.append(tt.run_case(case, args.work, 5 if not args.smoke else 3, limit=max(budget.left() - 5, 10)))
        report = tt.write_report(args.out / "throughput.json", results)
    added, skipped = tt.update_table(args.out / "speed_table.json", [report])
    variants(args.memory_last)
    (args.out / "memory.json").write_text(json.dumps(memory, indent=1))
    (args.out / "profile.txt").write_text(profile_text(memory))
    preview = auto_preview(args.out / "speed_table.json", str(args.work / f"model-{args.shape}"))
    text = summary(args, memory, results, added, skipped, preview, report["machine"])
    (args.out / "summary.md").write_text(text)
    (args.out / "run.json").write_text(json.dumps(
        {"argv": sys.argv, "wall_s": round(time.time() - START, 1), "machine": report["machine"],
         "skipped": args.skipped_parts}, indent=1))
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
