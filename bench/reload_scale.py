"""The server's lore reload after a one-page edit on a generated vault, before and after a change.

    python3 bench/reload_scale.py [--pages 10000] [--before REV] [--edits 3] [--results PATH]

Generates a vault of `--pages` pages (bench/compile_scale.py's generator: 20 NPCs, each knowing one
region's ~200 pages by tag; lore notes on, the default), then, for the code of git revision
`--before` (default HEAD, extracted with `git archive`) and for the working tree, each in a process
of its own on a copy of the vault: a first `Lore.load()`, then `--edits` rounds of three one-page
edits, each followed by `Lore.load()` (what the server's watcher calls on a save):

- fact: a page one NPC knows, its History sentence reworded (same size);
- section: a page nobody knows, a `## Rumour` section added (bench/grounding_serve.py's edit);
- npc page: an NPC's own page, its summary reworded.

Every NPC's search index is built after the first load (the server does it while idle); after each
fact edit the bench times the NPC's next retrieval (`notes_for`, which builds its index again) and checks that the edited sentence is in it: "the next turn uses the
edited fact". The working tree's process also checks, after its last edit, that its notes equal
those of a fresh full load. Appends a dated section to bench/results/reload_scale.md. Target
(issue 14): the next turn has an edited fact within about 1 s at 10,000 pages.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "When did {name} first appear?"


def child(code: Path, vault: Path, edits: int, check: bool) -> dict:
    """One code version: first load, then the timed edits. Runs in its own process."""
    sys.path.insert(0, str(code))
    from lorekit.serve.personas import Lore

    assert Path(sys.modules["lorekit"].__file__).resolve().is_relative_to(code.resolve()), "imported the wrong code"
    lore = Lore(vault)
    t0 = time.perf_counter()
    assert lore.load().ok
    out: dict = {"first_load_s": time.perf_counter() - t0, "notes": len(lore.current.retriever.book.notes),
                 "reloads": []}
    for npc in lore.current.npcs:  # the server builds every NPC's search index while idle
        lore.current.retriever.warm(npc)
    vault_ = lore.current.vault
    npc = sorted(vault_.npcs)[0]
    known = sorted(e for e in vault_.npcs[npc].knows if e != npc and e not in vault_.npcs)
    nobody = sorted(set(vault_.entities) - set().union(*(n.knows | n.secrets for n in vault_.npcs.values())))
    for k in range(edits):
        fact_page = vault / vault_.entities[known[k]].page
        name = vault_.entities[known[k]].name
        text = fact_page.read_text(encoding="utf-8")
        fact_page.write_text(text.replace("first appeared in", "first surfaced in"), encoding="utf-8")
        reload_s = timed(lore)
        t0 = time.perf_counter()
        notes = lore.current.notes_for(npc, QUESTION.format(name=name), [])
        turn_s = time.perf_counter() - t0
        seen = any("first surfaced in" in n.text for n in notes)
        out["reloads"].append({"kind": "fact", "reload_s": reload_s, "notes_ms": lore.notes_ms,
                               "retrieve_s": turn_s, "edit_in_notes": seen})
        page = vault / vault_.entities[nobody[k]].page
        page.write_text(page.read_text(encoding="utf-8") + f"\n## Rumour {k}\n\nA rumour about this place.\n",
                        encoding="utf-8")
        out["reloads"].append({"kind": "section", "reload_s": timed(lore), "notes_ms": lore.notes_ms})
        own = vault / vault_.entities[npc].page
        own.write_text(own.read_text(encoding="utf-8").replace("is known around", f"is famous ({k}) around", 1),
                       encoding="utf-8")
        out["reloads"].append({"kind": "npc page", "reload_s": timed(lore), "notes_ms": lore.notes_ms})
    if check:
        fresh = Lore(vault)
        assert fresh.load().ok
        a, b = lore.current.retriever.book, fresh.current.retriever.book
        out["equals_fresh_load"] = a.notes == b.notes and a.by_npc == b.by_npc and lore.current.prompts == fresh.current.prompts
    return out


def timed(lore) -> float:
    t0 = time.perf_counter()
    result = lore.load()
    assert result.ok, result.errors
    return time.perf_counter() - t0


def run_version(label: str, code: Path, vault: Path, work: Path, edits: int, check: bool) -> dict:
    copy = work / f"vault-{label}"
    shutil.copytree(vault, copy)
    out = work / f"{label}.json"
    cmd = [sys.executable, __file__, "--child", str(code), "--vault", str(copy), "--edits", str(edits),
           "--json", str(out)] + (["--check"] if check else [])
    subprocess.run(cmd, check=True, cwd=work)
    return json.loads(out.read_text())


def table(results: dict[str, dict]) -> list[str]:
    lines = ["| code | first load | kind of edit | reload, median (min-max) | notes part, median | next retrieval | "
             "edit in the next turn's notes |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, r in results.items():
        for kind in ("fact", "section", "npc page"):
            rows = [x for x in r["reloads"] if x["kind"] == kind]
            s = [x["reload_s"] for x in rows]
            retrieve = f"{statistics.median(x['retrieve_s'] for x in rows) * 1000:.0f} ms" if kind == "fact" else ""
            seen = f"{sum(x['edit_in_notes'] for x in rows)}/{len(rows)}" if kind == "fact" else ""
            lines.append(f"| {label} | {r['first_load_s']:.1f} s | {kind} | {statistics.median(s):.2f} s "
                         f"({min(s):.2f}-{max(s):.2f}) | {statistics.median(x['notes_ms'] for x in rows):.0f} ms | "
                         f"{retrieve} | {seen} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=10000)
    ap.add_argument("--before", default="HEAD", help="git revision to time as 'before' ('' to skip)")
    ap.add_argument("--edits", type=int, default=3, help="rounds of the three edits")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "reload_scale.md"))
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--vault", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        args.json.write_text(json.dumps(child(args.child, args.vault, args.edits, args.check)))
        return 0
    sys.path.insert(0, str(ROOT / "bench"))
    from compile_scale import generate

    load0 = os.getloadavg()[0]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        generate(work / "vault", args.pages)
        if args.before:
            before = work / "before"
            before.mkdir()
            archive = subprocess.run(["git", "archive", args.before, "lorekit", "templates"], cwd=ROOT, check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
            rev = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=ROOT, check=True,
                                 capture_output=True, text=True).stdout.strip()
            results[f"before ({rev})"] = run_version("before", before, work / "vault", work, args.edits, False)
        results["after (working tree)"] = run_version("after", ROOT, work / "vault", work, args.edits, True)
    after = results["after (working tree)"]
    lines = [f"## {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}: reload after a one-page edit, "
             f"{args.pages} generated pages", "",
             f"- machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cores), Python "
             f"{platform.python_version()}; 1-minute load {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end",
             f"- command: `python3 bench/reload_scale.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             f"- {after['notes']} notes; each version in its own process on its own copy of the vault, one after "
             "the other; 'next retrieval': the edited NPC's `notes_for` right after the reload (its search index "
             "built again)", "", *table(results), "",
             f"After the last edit the working tree's notes equal a fresh full load's: {after['equals_fresh_load']}."]
    if args.before:
        ref = results[next(iter(results))]
        ratio = [statistics.median(x["reload_s"] for x in ref["reloads"] if x["kind"] == k)
                 / statistics.median(x["reload_s"] for x in after["reloads"] if x["kind"] == k)
                 for k in ("fact", "section", "npc page")]
        lines.append("Reload, before / after (medians): " + ", ".join(
            f"{k} {r:.1f}x" for k, r in zip(("fact", "section", "npc page"), ratio, strict=True)) + ".")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.results)
    head = out.read_text(encoding="utf-8") + "\n---\n\n" if out.is_file() else ""
    out.write_text(head + text, encoding="utf-8")
    return 0 if after["equals_fresh_load"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
