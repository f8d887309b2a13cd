"""Count answers of a build's eval that carry names from another world (the world a prior was trained on).

A notes-reading prior (`lorekit/priors/`) learned its skill on `bench/prior_world`; where the user's notes
do not hold an answer it may answer from that world instead. This counts, in OUT/eval/report.json, the
base and tuned answers (fact questions and general questions) that name a page or alias of the other
world that the build's own world does not have, and the names found; `by_where` splits them by what a player
would be served: an NPC's question with its notes (`served`), a question asked without notes (the lore
keeper's, and the eval's no-notes probes), a general question. A prior trained on several worlds (the renamed
copies of bench/prior_worlds.py) takes one `--world` each.

    python bench/prior_leak.py OUT [--world bench/prior_world ...] [--results bench/results/prior_leak.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import sys
from collections import Counter
from pathlib import Path

from lorekit.lore.vault import load_vault

HERE = Path(__file__).resolve().parent


def names_of(root: Path) -> set[str]:
    """Every page name and alias of the vault at `root`, with a leading "the" dropped (matched as words)."""
    names = set()
    for e in load_vault(root).entities.values():
        for name in [e.name, *e.aliases]:
            name = re.sub(r"^(?i:the)\s+", "", str(name).strip())
            if len(name) >= 4:
                names.add(name)
    return names


def leaks(text: str, names: set[str]) -> list[str]:
    return sorted(n for n in names if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text))


def where(row: dict, general: bool) -> str:
    """What a player would be served: "served" (an NPC's question with its notes), "no notes", "general"."""
    if general:
        return "general"
    return "served" if row.get("npc") and row.get("variant") != "no notes" else "no notes"


def count(report: dict, other: set[str]) -> dict:
    rows = [(r, False) for r in report["questions"]] + [(r, True) for r in report.get("general") or []]
    out = {}
    for side in ("base", "tuned"):
        texts = [r[side]["answer"] if isinstance(r[side], dict) else r[side] for r, _ in rows]  # questions: judged
        found = [leaks(t or "", other) for t in texts]
        by_where: dict[str, dict[str, int]] = {}
        for (r, general), f in zip(rows, found, strict=True):
            tally = by_where.setdefault(where(r, general), {"answers": 0, "with_other_names": 0})
            tally["answers"] += 1
            tally["with_other_names"] += bool(f)
        out[side] = {"answers": len(texts), "with_other_names": sum(1 for f in found if f),
                     "names": dict(Counter(n for f in found for n in f).most_common(10)), "by_where": by_where}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="a build folder with eval/report.json")
    ap.add_argument("--world", type=Path, action="append",
                    help="another world (repeatable; default: bench/prior_world)")
    ap.add_argument("--results", type=Path, help="append a markdown line here")
    ap.add_argument("--label", default="", help="what this build was (for the results line)")
    args = ap.parse_args(argv)
    report = json.loads((args.out / "eval" / "report.json").read_text(encoding="utf-8"))
    lore_dir = json.loads((args.out / "dataset" / "report.json").read_text(encoding="utf-8"))["lore_dir"]
    other = set().union(*(names_of(w) for w in args.world or [HERE / "prior_world"])) - names_of(Path(lore_dir))
    figures = count(report, other)
    print(json.dumps(figures, indent=2))
    if args.results:
        t = figures["tuned"]
        line = (f"- {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.node()}, "
                f"`python bench/prior_leak.py {args.out}` {args.label}: tuned answers with other-world names "
                f"**{t['with_other_names']}/{t['answers']}** (base {figures['base']['with_other_names']}/"
                f"{figures['base']['answers']}); most often: {', '.join(t['names']) or 'none'}\n")
        with args.results.open("a", encoding="utf-8") as f:
            f.write(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
