"""Retrieval recall@k of the lore notes, on two question sets of the whole sample world.

1. The held-out eval questions (eval.jsonl, `max_facts = 0`: every fact of the world), phrased by
   LoreKit's own templates in a variant training never used.
2. `bench/player_questions.jsonl`: 240 questions (40 per NPC) written as players type them by a
   helper that read only the NPCs' notes, never LoreKit's templates or code (casual, lower case,
   short forms of names: "whose mask is it anyway?", "when was the siege?"), each with the fact
   whose note answers it. Its misses were read while retrieval was changed (2026-12-05).
3. `bench/player_questions_2.jsonl`: 180 more (30 per NPC) by another helper that saw neither the
   templates nor set 1, in four players' voices (role-play, terse, curious, simple English); not read
   while changing retrieval: the held-out set. Sets 2 and 3 are only valid for `sample_lore`.

For each question: is the fact's note among the turn's notes (recall@k), and is it the first note
(a small model reads the first notes most)? Measured at several budgets, the default marked; the
baseline in the same run is plain BM25 over all of the NPC's notes (no entity resolution).

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
PLAYER_SETS = [("player questions (set 1, read while tuning)", ROOT / "bench" / "player_questions.jsonl"),
               ("player questions (set 2, read for one rule and the cue words)", ROOT / "bench" / "player_questions_2.jsonl"),
               ("player questions (set 3, read for the cue prefixes and chat spellings)",
                ROOT / "bench" / "player_questions_3.jsonl"),
               ("player questions (set 4, held out)", ROOT / "bench" / "player_questions_4.jsonl")]
sys.path.insert(0, str(ROOT))

from lorekit.compile import load_config, run  # noqa: E402
from lorekit.compile.config import CompileConfig  # noqa: E402
from lorekit.grounding import Budget, Retriever  # noqa: E402
from lorekit.grounding.retrieve import approx_tokens  # noqa: E402
from lorekit.lore import load_vault  # noqa: E402

BUDGETS = [(80, 3), (120, 4), (160, 5), (200, 6), (300, 8)]


def questions(out: Path) -> list[tuple[str, str, str]]:
    """(NPC, question, fact id) of the held-out eval rows."""
    rows = [json.loads(line) for line in (out / "dataset" / "eval.jsonl").read_text().splitlines()]
    return [(r["meta"]["npc"], r["meta"]["question"], r["meta"]["facts"][0]) for r in rows
            if r["meta"].get("npc") and r["meta"]["kind"] in ("field", "reverse", "summary", "section")
            and r["meta"].get("question")]


def player_questions(lore: Path, path: Path) -> list[tuple[str, str, str]]:
    if lore.resolve() != (ROOT / "sample_lore").resolve():
        return []
    rows = (json.loads(line) for line in path.read_text(encoding="utf-8").splitlines())
    return [(r["npc"], r["question"], r["fact"]) for r in rows]


def score(retriever: Retriever, qs: list[tuple[str, str, str]]) -> dict:
    hit = first = base = 0
    sizes, costs, times = [], [], []
    for npc, question, fact in qs:
        t = time.perf_counter()
        got = retriever.retrieve(npc, question)
        times.append((time.perf_counter() - t) * 1000)
        ids = [n.id for n in got]
        hit += fact in ids
        first += ids[:1] == [fact]
        base += fact in {n.id for n in bm25_only(retriever, npc, question)}
        sizes.append(len(got))
        costs.append(sum(approx_tokens(n.text) for n in got))
    return {"hit": hit, "first": first, "base": base, "n": len(qs), "notes": statistics.mean(sizes),
            "tokens": statistics.mean(costs), "ms": statistics.median(times[5:] or times)}


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
        sets = [("held-out eval questions", questions(Path(tmp))),
                *((title, player_questions(lore, path)) for title, path in PLAYER_SETS)]
    vault = load_vault(lore)
    from lorekit.compile.dataset import Builder
    from lorekit.grounding.notes import build_notes, keeper_statement
    from lorekit.prompt import templates_for

    book = build_notes(vault, keeper_statement(Builder(vault, cfg, templates_for(vault, cfg.template_dir or None), {})))
    lines = [f"# Retrieval recall@k on questions about the whole world ({lore.name})", "",
             f"- machine: {platform.node()} ({platform.machine()}, {platform.processor() or 'cpu'}), "
             f"python {platform.python_version()}",
             f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- command: `python3 bench/{Path(__file__).name} {' '.join(argv or sys.argv[1:])}`".rstrip(),
             f"- every fact of the world (`max_facts = 0`; compile {compile_s:.1f} s, "
             f"{result.report['rows']['train']} train rows); {len(book.notes)} notes"]
    for title, qs in sets:
        if not qs:
            continue
        lines += ["", f"## {len(qs)} {title}", "",
                  "| budget (tokens / notes) | right note given (LoreKit) | right note first | BM25 alone (baseline) "
                  "| ratio | mean notes | mean tokens | ms per retrieval |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for tokens, count in BUDGETS:
            f = score(Retriever(vault, book, Budget(tokens, count)), qs)
            n = f["n"]
            mark = " (default)" if (tokens, count) == (default.notes_budget, default.notes_max) else ""
            lines.append(f"| {tokens} / {count}{mark} | {f['hit']}/{n} = {f['hit'] / n:.1%} | {f['first']}/{n} = "
                         f"{f['first'] / n:.1%} | {f['base']}/{n} = {f['base'] / n:.1%} | "
                         f"{f['hit'] / max(f['base'], 1):.2f}x | {f['notes']:.1f} | {f['tokens']:.0f} | {f['ms']:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.results).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
