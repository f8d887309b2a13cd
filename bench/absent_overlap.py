"""Could a word check tell "my notes do not answer this" from a real question? (No, on the sample world.)

An NPC asked about what the lore does not say ("How many bridges does Brinewick have?") gets notes about
the page, none with the answer, and the 270M often reads one out. A runtime could test whether any
content word of the question (not a name, not a question word, 5-letter prefixes) occurs in the notes
retrieval gave, and give "(nothing about this)" when none does. This script counts, on the whole sample
world, how often that test fires on the held-out fact questions (a false "I don't know" each) and on the
absent-fact questions of every NPC and page (`templates/grounding/absent.j2`, every line).

    python3 bench/absent_overlap.py [LORE_DIR] [--results bench/results/absent_overlap.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lorekit.compile import load_config, run  # noqa: E402
from lorekit.compile.dataset import Builder  # noqa: E402
from lorekit.grounding import Retriever, build_notes  # noqa: E402
from lorekit.grounding.notes import keeper_statement  # noqa: E402
from lorekit.grounding.retrieve import COMMON, FALLBACK_SKIP, words  # noqa: E402
from lorekit.grounding.rows import FACT_KINDS, unsaid  # noqa: E402
from lorekit.lore import load_vault  # noqa: E402
from lorekit.lore.vault import entity_corpus  # noqa: E402
from lorekit.prompt import templates_for  # noqa: E402

# Words that say nothing of which fact is asked, beyond retrieval's own lists (bm25s keeps most of them).
FILLER = {"and", "are", "but", "for", "into", "not", "such", "that", "the", "their", "then", "there", "these",
          "this", "was", "will", "with", "many", "much", "one", "first", "like", "most", "best", "kind", "sort",
          "part", "name", "called", "long", "after", "before", "day", "year", "times", "make", "made", "does",
          "did", "get", "people", "should", "exactly"}


def content(retriever: Retriever, question: str) -> set[str]:
    ws = words(retriever._strip(question))
    return {w[:5] for w in ws if len(w) > 2 and w not in FALLBACK_SKIP | COMMON | FILLER
            and w not in retriever.names.words}


def overlaps(retriever: Retriever, npc: str, question: str) -> bool | None:
    """Whether a content word of the question is in its notes (None: the question has no content word)."""
    asked = content(retriever, question)
    if not asked:
        return None
    bag = {w[:5] for n in retriever.retrieve(npc, question) for w in words(f"{n.text} {n.keys}")}
    return bool(asked & bag)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lore", nargs="?", default=str(ROOT / "sample_lore"))
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "absent_overlap.md"))
    args = ap.parse_args(argv)
    lore = Path(args.lore)
    vault, cfg = load_vault(lore), load_config(lore, {"max_facts": 0, "cache": False})
    with tempfile.TemporaryDirectory() as tmp:
        run(lore, Path(tmp), cfg)
        rows = [json.loads(line)["meta"] for line in (Path(tmp) / "dataset" / "eval.jsonl").read_text().splitlines()]
    templates = templates_for(vault, cfg.template_dir or None)
    book = build_notes(vault, keeper_statement(Builder(vault, cfg, templates, {})))
    retriever = Retriever(vault, book)
    facts = [overlaps(retriever, m["npc"], m["question"]) for m in rows
             if m.get("npc") and m["kind"] in FACT_KINDS and m.get("question")]
    absent = []
    for npc in vault.npcs.values():
        for eid in sorted({n.entity for n in book.of(npc.id) if not n.secret}):
            entity = vault.entities[eid]
            prose = entity_corpus(entity)
            for line in templates.lines("grounding/absent.j2", "questions", {"name": entity.name, "type": entity.type}):
                key, _, question = line.partition("|")
                if question and key not in entity.fields and unsaid(key, prose):
                    absent.append(overlaps(retriever, npc.id, question))

    def row(name: str, got: list) -> str:
        n = len(got)
        return (f"| {name} | {n} | {got.count(True)} ({got.count(True) / n:.0%}) | {got.count(False)} "
                f"({got.count(False) / n:.0%}) | {got.count(None)} |")

    lines = [f"# A word check for \"my notes do not answer this\" ({lore.name}, every fact)", "",
             f"- machine: {platform.node()} ({platform.machine()}), python {platform.python_version()}",
             f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- command: `python3 bench/{Path(__file__).name} {' '.join(argv or sys.argv[1:])}`".rstrip(), "",
             "| questions | asked | a content word in the notes | none (the check would say \"I don't know\") | "
             "no content word |", "| --- | --- | --- | --- | --- |",
             row("held-out fact questions (answer in the notes)", facts),
             row("absent-fact questions (answer nowhere)", absent), "",
             "The check would have to fire on the second row and not on the first; a share of fact questions in "
             "its \"none\" column is the share of answers it would turn into false \"I don't know\"."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.results).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
