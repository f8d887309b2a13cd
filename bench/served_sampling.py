"""What a player hears under the server's sampling, not the eval's greedy decoding.

`lorekit eval` decodes greedily without a repeat penalty, so two runs agree. The server samples (`[serve]`
temperature, top_p, top_k, repeat_penalty). A repeat penalty counts the prompt's last tokens too, so it
pushes the model off the very words a grounded NPC should repeat: its notes, and the `dont_know` line its
persona quotes. This asks a build's eval questions (with the notes their rows carry, as the server gives
them) under several sampling settings, several seeds each, and scores the replies with the eval's own judge.

    python3 bench/served_sampling.py BUILD [--seeds 3] [--limit 0] [--results bench/results/served_sampling.md]

Settings compared (one run, same questions and seeds): greedy with and without a repeat penalty (without: the
eval's), and top_p 0.95 / top_k 40 at temperature 0.7 with repeat_penalty 1.1 (the old serve default) and 1.0,
and at temperature 0.3 with 1.0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from lorekit.evaluate import EvalConfig, data, score
from lorekit.evaluate.generate import GREEDY, LlamaGenerator

SETTINGS = {  # name -> (temperature, top_p, top_k, repeat_penalty)
    "greedy, penalty 1.0 (the eval)": GREEDY,
    "greedy, penalty 1.1 (`--temperature 0` on the old default)": (0.0, 1.0, 1, 1.1),
    "t 0.7, penalty 1.1 (old serve default)": (0.7, 0.95, 40, 1.1),
    "t 0.7, penalty 1.0": (0.7, 0.95, 40, 1.0),
    "t 0.3, penalty 1.0": (0.3, 0.95, 40, 1.0),
}
KINDS = (*data.FACT_KINDS, *data.IGNORANCE_KINDS, "secret", "greeting")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build", type=Path)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="questions per kind (0: all)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results" / "served_sampling.md")
    args = ap.parse_args(argv)
    export = json.loads((args.build / "export" / "export.json").read_text(encoding="utf-8"))
    generator = LlamaGenerator(args.build / "export" / "model.gguf", export.get("family", "gemma3"),
                               max_tokens=args.max_tokens, n_ctx=2048)
    ctx = score.Context.build(args.build / "dataset", EvalConfig())
    questions = [q for q in data.load_questions(args.build / "dataset" / "eval.jsonl")
                 if q.meta.get("npc") and q.kind in KINDS]
    if args.limit:
        questions = [q for k in KINDS for q in [q for q in questions if q.kind == k][:args.limit]]
    figures = {}
    for name, setting in SETTINGS.items():
        rows = []
        for seed in range(args.seeds if setting[0] > 0 else 1):  # greedy gives one answer
            for q in questions:
                generator.llm.set_seed(seed)
                a = generator.reply(q.messages, setting)
                rows.append(score.score_question(q, a, a, ctx))
        s = score.model_summary(rows, "tuned", ctx.repeat_words, {})
        figures[name] = {"fact": s["fact_recall"], "dont_know": s["honest_ignorance"], "false_refusals":
                         s["false_refusals"], "leaks": s["secret_leaks"], "refusals_held": s["refusals_held"],
                         "greetings": s["greetings"], "replies": len(rows)}
        print(name, {k: (v["hits"], v["total"]) if isinstance(v, dict) else v for k, v in figures[name].items()},
              flush=True)

    def cell(x: dict) -> str:
        return f"{100 * x['share']:.0f} % ({x['hits']}/{x['total']})" if x["total"] else "n/a"

    cols = [("fact recall", "fact"), ("\"I don't know\"", "dont_know"), ("false refusals", "false_refusals"),
            ("leaks", "leaks"), ("refusals held", "refusals_held"), ("greetings", "greetings")]
    lines = [f"## {args.build} ({len(questions)} questions, {args.seeds} seeds)", "",
             f"- machine: {platform.node()}, {os.cpu_count()} cores, Python {platform.python_version()}",
             f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- command: `python3 bench/served_sampling.py {' '.join(argv or sys.argv[1:])}`", "",
             "| sampling | " + " | ".join(c for c, _ in cols) + " |", "| --- |" + " --- |" * len(cols)]
    lines += [f"| {name} | " + " | ".join(cell(f[k]) for _, k in cols) + " |" for name, f in figures.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    old = args.results.read_text(encoding="utf-8") if args.results.is_file() else "# Served sampling against the eval's greedy decoding\n"
    args.results.write_text(old.rstrip("\n") + "\n\n" + text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
