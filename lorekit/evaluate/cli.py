"""`lorekit eval OUT`: compare the base model with the tuned model and write a report."""

from __future__ import annotations

import argparse
from pathlib import Path

from lorekit import config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", nargs="?", default="build", help="build folder (default: build)")
    parser.add_argument("--backend", choices=["gguf", "adapter"], help="gguf (llama.cpp, default) or adapter (PyTorch)")
    parser.add_argument("--base", help="base model GGUF (default: from export.json or the profile)")
    parser.add_argument("--tuned", help="tuned model GGUF (default: OUT/export/model.gguf)")
    parser.add_argument("--limit", type=int, help="ask at most N eval questions, spread over kinds (0 = all)")
    parser.add_argument("--max-tokens", type=int, help="most tokens per answer")
    parser.add_argument("--seed", type=int, help="seed for picking questions")
    parser.add_argument("--no-general", dest="general", action="store_const", const=False,
                        help="skip the general-knowledge questions")


def command(args: argparse.Namespace) -> int:
    from lorekit.evaluate import EvalConfig, data, run

    out = Path(args.out)
    lore_dir = data.read_json(out / "dataset" / "report.json").get("lore_dir")
    overrides = {k: getattr(args, k) for k in ("backend", "base", "tuned", "limit", "max_tokens", "seed", "general")}
    cfg = config.load(EvalConfig, "eval", Path(lore_dir) if lore_dir else None, overrides)
    result = run(out, cfg)
    s, v = result.summary, result.verdict
    print(f"asked {s['sample']['asked']} of {s['sample']['eval_rows']} eval questions"
          f" + {s['sample']['general_questions']} general")
    for label, key in (("fact recall", "fact_recall"), ("honest ignorance", "honest_ignorance"),
                       ("in character", "in_character"), ("secrets kept", "secrets_kept"),
                       ("verbatim repetition", "repetition")):
        print(f"  {label:<20} base {_pct(s['base'][key]['share'])}  tuned {_pct(s['tuned'][key]['share'])}")
    if s.get("general"):
        print(f"  {'general agreement':<20} {_pct(s['general']['agreement'])} of answers unchanged in substance")
    print(f"verdict: {v['status']} ({v['headline']})")
    for line in v["advice"]:
        print(f"  - {line}")
    print(f"report: {result.report_html}")
    return 0


def _pct(x) -> str:
    return "  n/a" if x is None else f"{100 * x:3.0f}%"
