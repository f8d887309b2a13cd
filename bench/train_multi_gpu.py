"""`lorekit train` on 2 GPUs against 1 GPU: same model, same rows, same global batch, in one run.

    python bench/train_multi_gpu.py                    # on a machine with >= 2 CUDA GPUs
    python bench/train_multi_gpu.py --runs 1,2 --steps 8 --set load_in_4bit=false --set optimizer=adamw

Each run is the command a user runs, `torchrun --standalone --nproc-per-node N -m lorekit train OUT`, on a
Gemma 4 E2B-shaped model with random weights (the shape and the NPC-style rows of
bench/train_throughput.py), the plain loop (Unsloth trains on one GPU only, so both sides use the same
loop), 4-bit nf4, LoRA r 16, gradient checkpointing, 8-bit AdamW, 2 rows a micro-batch x 4 micro-batches:
8 rows a step whatever the number of GPUs (each of 2 GPUs runs 2 of the 4 micro-batches). Steady tokens/s
comes from the run's own metrics.jsonl, from step --warm to the last. --runs 1,2,2,1 (the default) runs
each count once first and once second; ratios are taken within each adjacent 1-GPU / 2-GPU pair.
The adapters of the first 1-GPU and 2-GPU runs are compared (same files, keys and shapes; the largest
difference). Target: 2 GPUs >= 1.8 x 1 GPU. Writes --out (markdown, with machine, date and command) and
the same figures as JSON next to it. 4-bit and 8-bit AdamW need bitsandbytes (../shared/gpu/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import train_throughput as tt  # noqa: E402  (bench/, next to this file)

TARGET = 1.8
CONFIG = dict(backend="transformers", epochs=1, batch_size=2, grad_accum=4, load_in_4bit=True,
              gradient_checkpointing=True, max_length=1024, log_every=1, lr=2e-4, warmup_ratio=0.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="1,2,2,1", help="GPU counts, one run each, in this order (1 and 2 needed)")
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps a run (8 rows each)")
    ap.add_argument("--warm", type=int, default=3, help="steps left out of the steady figure")
    ap.add_argument("--rows", default="200,1000", help="COUNT,TOKENS: rows of about TOKENS tokens")
    ap.add_argument("--shape", default="gemma4-e2b", choices=["gemma4-e2b", "gemma3-1b"])
    ap.add_argument("--parallel", default="ddp", choices=["ddp", "fsdp"])
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a [train] setting for every run, e.g. --set load_in_4bit=false")
    ap.add_argument("--work", type=Path, default=Path("/tmp/lorekit-multi-gpu"), help="model, rows and runs")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_multi_gpu.md")
    ap.add_argument("--timeout", type=float, default=600, help="seconds a run may take")
    args = ap.parse_args(argv)
    try:
        args.runs = [int(x) for x in args.runs.split(",") if x]
        count, _, tokens = args.rows.partition(",")
        args.rows = (int(count), int(tokens))
    except ValueError:
        ap.error(f"--runs {args.runs!r} / --rows {args.rows!r}: comma-separated whole numbers")
    if not {1, 2} <= set(args.runs) or min(args.runs) < 1:
        ap.error(f"--runs {','.join(map(str, args.runs))}: needs a 1-GPU and a 2-GPU run to compare")
    if args.steps <= args.warm + 1:
        ap.error(f"--steps {args.steps} must exceed --warm {args.warm} by 2 or more")
    if args.steps * 8 > args.rows[0]:
        ap.error(f"--steps {args.steps} x 8 rows is more than --rows {args.rows[0]}: one epoch must cover them")
    args.config = {**CONFIG, "max_steps": args.steps, "parallel": args.parallel, **tt.parse_set(args.set)}
    return args


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpus(args: argparse.Namespace, found: int) -> None:
    need = max(args.runs)
    if found < need:
        raise SystemExit(f"bench/train_multi_gpu.py needs {need} CUDA GPUs, found {found}; "
                         "run it on a machine with two or more")


def prepare(args: argparse.Namespace) -> tuple[Path, Path]:
    """The random-weight model (built once, in a process of its own) and the rows every run trains on."""
    model = args.work / f"model-{args.shape}"
    subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--prepare", args.shape,
                    "--work", str(args.work)], check=True)
    data = args.work / "data"
    if not (data / "dataset" / "train.jsonl").exists():
        tt.write_rows(data, model, *args.rows)
    lore = args.work / "lore"
    lore.mkdir(parents=True, exist_ok=True)
    lines = [f"{k} = {json.dumps(v)}" for k, v in {"model": str(model), **args.config}.items()]
    (lore / "lorekit.toml").write_text("[train]\n" + "\n".join(lines) + "\n")
    return data, lore


def run_one(n: int, index: int, data: Path, lore: Path, args: argparse.Namespace) -> dict:
    """`torchrun --nproc-per-node n -m lorekit train OUT`; its steady tokens/s from metrics.jsonl."""
    out = args.work / f"run{index}-{n}gpu"
    shutil.rmtree(out, ignore_errors=True)
    (out / "dataset").mkdir(parents=True)
    (out / "dataset" / "train.jsonl").write_bytes((data / "dataset" / "train.jsonl").read_bytes())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}",
           "-m", "lorekit", "train", str(out), "--lore", str(lore)]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") or ",".join(str(i) for i in range(gpu_count()))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               CUDA_VISIBLE_DEVICES=",".join(visible.split(",")[:n]))  # a 1-GPU run sees one GPU
    t = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    record = {"gpus": n, "index": index, "out": str(out), "wall_s": round(time.time() - t, 1),
              "ok": proc.returncode == 0, "command": " ".join(cmd[1:])}
    if proc.returncode:
        record["log_tail"] = (proc.stdout + proc.stderr)[-3000:]
        return record
    metrics = [json.loads(x) for x in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    record.update(steady(metrics, args.warm))
    return record


def steady(metrics: list[dict], warm: int) -> dict:
    """Tokens/s between the end of step `warm` and the last step, from one run's metrics lines."""
    steps = [m for m in metrics if "tokens" in m]
    first, last = next(m for m in steps if m["step"] == warm), steps[-1]
    return {"steps": last["step"], "steady_tokens_per_s": round((last["tokens"] - first["tokens"]) /
                                                                (last["elapsed_s"] - first["elapsed_s"]), 1),
            "peak_memory_gib_rank0": round(max(m["memory_mb"] for m in steps) / 1024, 2),
            "final_loss": last["loss"]}


def ratios(results: list[dict]) -> list[float]:
    """2-GPU / 1-GPU tokens/s of each adjacent pair of runs (1,2,2,1 gives two: each order once)."""
    out = []
    for a, b in zip(results, results[1:], strict=False):
        if {a["gpus"], b["gpus"]} == {1, 2} and a.get("steady_tokens_per_s") and b.get("steady_tokens_per_s"):
            one, two = (a, b) if a["gpus"] == 1 else (b, a)
            out.append(round(two["steady_tokens_per_s"] / one["steady_tokens_per_s"], 3))
    return out


def compare_adapters(results: list[dict]) -> dict:
    """The first 1-GPU and 2-GPU adapters: the same files, keys and shapes, and how far apart they are."""
    from safetensors.torch import load_file

    one = next((r for r in results if r["gpus"] == 1 and r["ok"]), None)
    two = next((r for r in results if r["gpus"] == 2 and r["ok"]), None)
    if not (one and two):
        return {"compared": False}
    a_dir, b_dir = Path(one["out"]) / "adapter", Path(two["out"]) / "adapter"
    a, b = (load_file(str(d / "adapter_model.safetensors")) for d in (a_dir, b_dir))
    same_shapes = a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    return {"compared": True, "same_files": sorted(p.name for p in a_dir.iterdir()) == sorted(p.name for p in b_dir.iterdir()),
            "same_keys_and_shapes": same_shapes, "tensors": len(a),
            "max_abs_difference": max(float((a[k].float() - b[k].float()).abs().max()) for k in a) if same_shapes else None}


def machine() -> dict:
    import torch

    info = {"host": platform.node(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "gpus": [torch.cuda.get_device_name(i) for i in range(gpu_count())]}
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def write_report(args, results: list[dict], adapters: dict) -> dict:
    from lorekit.atomic import write_text

    pairs = ratios(results)
    report = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "command": "python bench/train_multi_gpu.py " + " ".join(sys.argv[1:]), "config": args.config,
              "rows": list(args.rows), "shape": args.shape, "results": results, "ratios_2_vs_1": pairs,
              "target": TARGET, "met": bool(pairs) and min(pairs) >= TARGET, "adapters": adapters}
    write_text(args.out.with_suffix(".json"), json.dumps(report, indent=1))
    lines = [f"# `lorekit train` on 2 GPUs against 1 GPU ({args.shape}, random weights)", "",
             f"- Machine: {', '.join(report['machine']['gpus']) or 'no GPU'}; {report['machine']['cpus']} CPU cores; "
             f"torch {report['machine']['torch']}, transformers {report['machine'].get('transformers', '?')}",
             f"- Date: {report['date']}", f"- Command: `{report['command']}`",
             f"- Each run: `torchrun --standalone --nproc-per-node N -m lorekit train OUT`, [train] {args.config}",
             f"- Rows: {args.rows[0]} of about {args.rows[1]} tokens; 8 rows a step on every GPU count", "",
             "| run | GPUs | steady tokens/s | wall s | peak GiB (rank 0) | final loss |", "| --- | --- | --- | --- | --- | --- |"]
    for r in results:
        if r["ok"]:
            lines.append(f"| {r['index']} | {r['gpus']} | {r['steady_tokens_per_s']:,.0f} | {r['wall_s']} | "
                         f"{r['peak_memory_gib_rank0']} | {r['final_loss']} |")
        else:
            lines.append(f"| {r['index']} | {r['gpus']} | failed (see the JSON's log_tail) | {r['wall_s']} | - | - |")
    verdict = "met" if report["met"] else "NOT met"
    lines += ["", f"2 GPUs / 1 GPU, each adjacent pair: {', '.join(f'{x:.2f}x' for x in pairs) or 'none'} "
              f"(target >= {TARGET}x: {verdict}).", "",
              f"Adapters of the first 1-GPU and 2-GPU runs: {json.dumps(adapters)}."]
    write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_gpus(args, gpu_count())
    args.work.mkdir(parents=True, exist_ok=True)
    data, lore = prepare(args)
    results = []
    for index, n in enumerate(args.runs, 1):
        results.append(run_one(n, index, data, lore, args))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "log_tail"}), flush=True)
    report = write_report(args, results, compare_adapters(results))
    return 0 if all(r["ok"] for r in results) and report["ratios_2_vs_1"] else 1


if __name__ == "__main__":
    sys.exit(main())
