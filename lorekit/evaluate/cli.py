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
    parser.add_argument("--limit", type=int, help="ask at most N eval rows, spread over facts trained / not "
                        "trained, unknown, absent, secrets and the rest (0 = all)")
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
    for line in summary_lines(result.summary):
        print(line)
    v = result.verdict
    print(f"verdict: {v['status']} ({v['headline']})")
    for line in v["advice"]:
        print(f"  - {line}")
    print(f"report: {result.report_html}")
    return 0


def summary_lines(s: dict) -> list[str]:
    """The figures, base against tuned, one a line (shares with their counts)."""
    sample = s["sample"]
    lines = [f"asked {sample['asked']} of {sample['eval_rows']} eval questions in {sample.get('prompts', sample['asked'])}"
             f" prompts + {sample['general_questions']} general"]
    b, t = s["base"], s["tuned"]
    figures = [("fact recall", b["fact_recall"], t["fact_recall"])]
    for label, key in (("with notes", "with_notes"), ("without notes", "without_notes")):
        for part, sub in (("trained", "trained"), ("not trained", "not_trained")):
            figures.append((f" {label}, {part}", b["recall"][key][sub], t["recall"][key][sub]))
    figures += [("honest ignorance", b["honest_ignorance"], t["honest_ignorance"]),
                (" unknown names", b["honest_ignorance"].get("unknown"), t["honest_ignorance"].get("unknown")),
                (" absent facts", b["honest_ignorance"].get("absent"), t["honest_ignorance"].get("absent")),
                ("false refusals", b["false_refusals"], t["false_refusals"]),
                ("secret leaks", b["secret_leaks"], t["secret_leaks"]),
                ("refusals held", b["refusals_held"], t["refusals_held"]),
                ("greetings answered", b.get("greetings"), t.get("greetings")),
                ("farewells answered", b.get("farewells"), t.get("farewells")),
                ("in character", b["in_character"], t["in_character"]),
                ("verbatim repetition", b["repetition"], t["repetition"])]
    for label, x, y in figures:
        if x and y and (x.get("total") or y.get("total")):
            lines.append(f"  {label:<28} base {_fig(x)}  tuned {_fig(y)}")
    leaks = t["secret_leaks"].get("by_attack") or {}
    if leaks:
        lines.append("  tuned leaks by attack: " + ", ".join(f"{k} {v['hits']}/{v['total']}" for k, v in leaks.items()))
    ret = s.get("retrieval") or {}
    if ret.get("total"):
        label = f"retrieval recall@{ret['k']}"
        lines.append(f"  {label:<28} {_pct(ret['share'])} ({ret['hits']}/{ret['total']}"
                     " eval fact questions with notes)")
    if s.get("general"):
        lines.append(f"  {'general agreement':<28} {_pct(s['general']['agreement'])} of answers unchanged in substance")
    return lines


def _fig(x: dict) -> str:
    count = f"{x.get('hits', x.get('verbatim', 0))}/{x['total']}"
    return f"{_pct(x['share'])} {count:>7}"


def _pct(x) -> str:
    return "  n/a" if x is None else f"{100 * x:3.0f}%"
