"""Retrieval recall@k of the lore notes on the held-out eval questions of the whole sample world.

For every held-out fact question an NPC is asked (eval.jsonl, `max_facts = 0`: every fact of the
world), does the retriever put the fact's note into the turn's notes? Measured at several budgets,
with the default budget marked; the baseline in the same run is plain BM25 over all of the NPC's
notes (no entity resolution), at the same budget.

    python3 bench/retrieval_recall.py [LORE_DIR] [--results bench/results/retrieval_recall.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lorekit.compile import load_config, run  # noqa: E402
from lorekit.compile.config import CompileConfig  # noqa: E402
from lorekit.grounding import Budget, Retriever  # noqa: E402
from lorekit.grounding.retrieve import approx_tokens  # noqa: E402
from lorekit.lore import load_vault  # noqa: E402

BUDGETS = [(80, 3), (120, 4), (160, 5), (200, 6), (300, 8)]


def questions(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "dataset" / "eval.jsonl").read_text().splitlines()]
    return [r["meta"] for r in rows if r["meta"].get("npc") and r["meta"]["kind"] in ("field", "reverse", "summary", "section")
            and r["meta"].get("question")]


def bm25_only(retriever: Retriever, npc: str, text: str) -> list:
    notes = retriever.book.of(npc)
    scores = retriever._scores(npc, text)
    ranked = [n for s, _, n in sorted(((s, i, n) for i, (s, n) in enumerate(zip(scores, notes, strict=True))),
                                      key=lambda k: (-k[0], k[1])) if s > 0]
    return retriever.fit(ranked)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lore", nargs="?", default=str(ROOT / "sample_lore"))
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "retrieval_recall.md"))
    args = ap.parse_args(argv)
    lore = Path(args.lore)
    default = CompileConfig()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(lore, {"max_facts": 0, "cache": False})
        t0 = time.perf_counter()
        result = run(lore, Path(tmp), cfg)
        compile_s = time.perf_counter() - t0
        qs = questions(Path(tmp))
    vault = load_vault(lore)
    from lorekit.compile.dataset import Builder
    from lorekit.grounding.notes import build_notes, keeper_statement
    from lorekit.prompt import templates_for

    book = build_notes(vault, keeper_statement(Builder(vault, cfg, templates_for(vault, cfg.template_dir or None), {})))
    lines = [f"# Retrieval recall@k on the held-out questions of the whole world ({lore.name})", "",
             f"- machine: {platform.node()} ({platform.machine()}, {platform.processor() or 'cpu'}), "
             f"python {platform.python_version()}",
             f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- command: `python3 bench/{Path(__file__).name} {' '.join(argv or sys.argv[1:])}`".rstrip(),
             f"- {len(qs)} held-out NPC fact questions (every fact of the world, `max_facts = 0`; compile {compile_s:.1f} s, "
             f"{result.report['rows']['train']} train rows); {len(book.notes)} notes", "",
             "| budget (tokens / notes) | entity + BM25 (LoreKit) | BM25 alone (baseline) | ratio | mean notes | mean tokens | ms per retrieval |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for tokens, count in BUDGETS:
        retriever = Retriever(vault, book, Budget(tokens, count))
        hit = base = 0
        sizes, costs, times = [], [], []
        for m in qs:
            t = time.perf_counter()
            got = retriever.retrieve(m["npc"], m["question"])
            times.append((time.perf_counter() - t) * 1000)
            hit += m["facts"][0] in {n.id for n in got}
            base += m["facts"][0] in {n.id for n in bm25_only(retriever, m["npc"], m["question"])}
            sizes.append(len(got))
            costs.append(sum(approx_tokens(n.text) for n in got))
        mark = " (default)" if (tokens, count) == (default.notes_budget, default.notes_max) else ""
        lines.append(f"| {tokens} / {count}{mark} | {hit}/{len(qs)} = {hit / len(qs):.1%} | {base}/{len(qs)} = "
                     f"{base / len(qs):.1%} | {hit / max(base, 1):.2f}x | {statistics.mean(sizes):.1f} | "
                     f"{statistics.mean(costs):.0f} | {statistics.median(times[5:] or times):.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.results).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
