"""Proof run: the real Gemma 3 270M fine-tuned on sample_lore with default settings, base vs tuned.

    python3 bench/eval_270m.py [--out /tmp/evalrun] [--lore sample_lore] [--reuse] [--subset E1,E2 --npc ID]

Runs `lorekit compile`, `train`, `export` and `eval` as a user would (each stage skipped with
--reuse when its artifact exists), times every stage, and writes bench/results/eval_270m.json and
.md: base (the baseline, measured in the same run) against tuned figures, with machine, date and
commands.

--subset keeps, after compiling, only the lore keeper's rows about the listed entities (slugs), the
lore keeper's "unknown name" rows, and the secret and greeting rows of one NPC (--npc): the full
sample_lore dataset (2,630 rows, 8 epochs by default on CPU) takes hours to train on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"

STAGES = [  # (name, artifact that shows the stage is done, command)
    ("compile", "dataset/eval.jsonl", ["compile", "{lore}", "--out", "{out}"]),
    ("train", "adapter/adapter_config.json", ["train", "{out}"]),
    ("export", "export/model.gguf", ["export", "{out}"]),
    ("eval", None, ["eval", "{out}"]),
]


def run_stage(name: str, argv: list[str], log_dir: Path) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "lorekit", *argv]
    print(f"$ {' '.join(cmd)}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (log_dir / f"{name}.log").write_text(proc.stdout + proc.stderr)
    print(proc.stdout[-3000:], proc.stderr[-1500:], sep="\n", flush=True)
    if proc.returncode:
        raise SystemExit(f"{name} failed (exit {proc.returncode}); see {log_dir / (name + '.log')}")
    return wall, " ".join(["python3 -m lorekit", *argv])


NPC_KINDS = ("secret", "greeting")


def keep_row(meta: dict, entities: set[str], npc: str) -> bool:
    if meta.get("npc") is None:
        if meta.get("kind") == "unknown":
            return True
        facts = meta.get("facts") or []
        return bool(facts) and all(f.split(".")[0] in entities for f in facts)
    return meta.get("npc") == npc and meta.get("kind") in NPC_KINDS


def subset(out: Path, entities: set[str], npc: str) -> dict:
    """Filter the compiled dataset in place; record the subset and the new hash in report.json."""
    ds = out / "dataset"
    counts, h = {}, hashlib.sha256()
    for name in ("train.jsonl", "eval.jsonl"):
        lines = (ds / name).read_text().splitlines()
        kept = [line for line in lines if line.strip() and keep_row(json.loads(line)["meta"], entities, npc)]
        (ds / name).write_text("".join(line + "\n" for line in kept))
        counts[name] = {"before": len(lines), "after": len(kept)}
        h.update((ds / name).read_bytes())
    report = json.loads((ds / "report.json").read_text())
    report["dataset_sha256"] = h.hexdigest()
    report["subset"] = {"entities": sorted(entities), "npc": npc, "rows": counts}
    (ds / "report.json").write_text(json.dumps(report, indent=1))
    print(f"subset: {counts}", flush=True)
    return report["subset"]


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu or platform.processor(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def figures(report: dict) -> dict:
    s = report["summary"]
    keys = ("fact_recall", "honest_ignorance", "in_character", "secrets_kept", "repetition")
    out = {k: {"base": s["base"][k], "tuned": s["tuned"][k]} for k in keys}
    out["recall_by_kind"] = {"base": s["base"]["recall_by_kind"], "tuned": s["tuned"]["recall_by_kind"]}
    out["general"] = s.get("general")
    out["repetition_reference"] = s.get("repetition_reference")
    b, t = s["base"]["fact_recall"]["share"], s["tuned"]["fact_recall"]["share"]
    out["fact_recall_ratio_tuned_over_base"] = round(t / b, 2) if b else None
    out["tokens_per_s"] = {"base": s["base"]["tokens_per_s"], "tuned": s["tuned"]["tokens_per_s"]}
    return out


def markdown(result: dict) -> str:
    f, s = result["figures"], result["sample"]
    lines = [
        "# eval_270m: Gemma 3 270M fine-tuned on sample_lore, base vs tuned",
        "",
        f"- date: {result['date']}",
        f"- machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, Python {result['machine']['python']}",
        f"- commands: `{'`, `'.join(result['commands'])}`",
        f"- stage wall times (s): {', '.join(f'{k} {v:.0f}' for k, v in result['wall_s'].items())}",
        f"- sample: {s['asked']} of {s['eval_rows']} held-out eval questions (limit {s['limit']}, seed {s['seed']}; "
        f"{', '.join(f'{k} {n}' for k, n in s['by_kind'].items())}) + {s['general_questions']} general questions; "
        f"greedy, at most {s['max_tokens']} tokens per answer",
        f"- training: {json.dumps(result['train_config'])}",
        f"- dataset subset: {json.dumps(result['subset']) if result.get('subset') else 'none (full compiled dataset)'}",
        "",
        "| figure | base | tuned |",
        "| --- | --- | --- |",
    ]
    for key, label in (("fact_recall", "fact recall"), ("honest_ignorance", "honest ignorance"),
                       ("in_character", "in character"), ("secrets_kept", "secrets kept"),
                       ("repetition", "verbatim repetition (lower is better)")):
        b, t = f[key]["base"], f[key]["tuned"]
        hits = "verbatim" if key == "repetition" else "hits"
        lines.append(f"| {label} | {pct(b['share'])} ({b[hits]}/{b['total']}) | {pct(t['share'])} ({t[hits]}/{t['total']}) |")
    for kind in sorted(set(f["recall_by_kind"]["base"]) | set(f["recall_by_kind"]["tuned"])):
        b, t = f["recall_by_kind"]["base"].get(kind, {}), f["recall_by_kind"]["tuned"].get(kind, {})
        lines.append(f"| recall, {kind} | {pct(b.get('share'))} | {pct(t.get('share'))} |")
    g = f.get("general")
    if g:
        lines.append(f"| general: answer contains the reference | {pct(g['base_correct'])} | {pct(g['tuned_correct'])} |")
        lines.append(f"| general: tuned agrees with base | | {pct(g['agreement'])} |")
    lines += [
        "",
        f"Tuned/base fact recall ratio: {f['fact_recall_ratio_tuned_over_base'] or 'n/a (base recall 0)'}. "
        f"Dataset's own eval answers repeating training answers: {pct(f['repetition_reference'])}. "
        f"Generation speed (tokens/s): base {f['tokens_per_s']['base']}, tuned {f['tokens_per_s']['tuned']}.",
        "",
        f"Verdict: **{result['verdict']['status']}** ({result['verdict']['headline']})",
        "",
        *[f"- {a}" for a in result["verdict"]["advice"]],
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/evalrun")
    ap.add_argument("--lore", default=str(REPO / "sample_lore"))
    ap.add_argument("--reuse", action="store_true", help="skip a stage whose artifact already exists")
    ap.add_argument("--subset", default="", help="comma-separated entity slugs to keep (see above)")
    ap.add_argument("--npc", default="tobin-reedy", help="NPC whose secret and greeting rows --subset keeps")
    ap.add_argument("--eval-threads", type=int, default=0,
                    help="llama.cpp threads for eval (0: 1 when the machine is busier than its cores, else all)")
    ap.add_argument("eval_args", nargs="*", help="extra flags for `lorekit eval` (after --)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logs = out / "bench-logs"
    logs.mkdir(exist_ok=True)
    walls, commands, picked = {}, [], None
    for name, artifact, argv in STAGES:
        argv = [a.format(lore=args.lore, out=out) for a in argv] + (args.eval_args if name == "eval" else [])
        if name == "eval":
            threads = args.eval_threads or (1 if os.getloadavg()[0] > (os.cpu_count() or 1) else 0)
            os.environ["LOREKIT_EVAL_THREADS"] = str(threads)
            commands.append(f"LOREKIT_EVAL_THREADS={threads}")
        if args.reuse and artifact and (out / artifact).exists():
            print(f"reusing {out / artifact}")
            commands.append(" ".join(["python3 -m lorekit", *argv]) + "  (reused)")
        else:
            walls[name], cmd = run_stage(name, argv, logs)
            commands.append(cmd)
        if name == "compile" and args.subset:
            picked = json.loads((out / "dataset" / "report.json").read_text()).get("subset") \
                or subset(out, set(args.subset.split(",")), args.npc)
            commands.append(f"bench/eval_270m.py --subset {args.subset} --npc {args.npc} (dataset filtered)")
    report = json.loads((out / "eval" / "report.json").read_text())
    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "commands": commands,
        "wall_s": {k: round(v, 1) for k, v in walls.items()},
        "models": report.get("models"),
        "train_config": report.get("train"),
        "sample": report["summary"]["sample"],
        "subset": picked,
        "figures": figures(report),
        "verdict": report["verdict"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "eval_270m.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / "eval_270m.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
