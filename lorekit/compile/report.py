"""report.json and the terminal summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lorekit.compile.config import CompileConfig


def make_report(lore_dir: Path, cfg: CompileConfig, built: Any, sha: str, n_train: int, n_eval: int) -> dict[str, Any]:
    vault = built.vault
    per_fact = Counter(f for r in built.train for f in r.facts if r.kind not in ("secret",))
    fact_counts = [per_fact.get(f.id, 0) for f in built.facts]
    taught = [c for c in fact_counts if c]
    warnings = [str(p) for p in built.problems if p.severity == "warning"]
    return {
        "lore_dir": str(Path(lore_dir).resolve()),
        "dataset_sha256": sha,
        "format": cfg.format,
        "pages": len(vault.pages),
        "entities": len(vault.entities),
        "entities_by_type": dict(sorted(Counter(e.type for e in vault.entities.values()).items())),
        "facts": len(built.facts),
        "facts_total": built.facts_total,
        "facts_by_kind": dict(sorted(Counter(f.kind for f in built.facts).items())),
        "facts_untaught": sum(1 for c in fact_counts if c == 0),
        "rows": {"train": n_train, "eval": n_eval, "eval_dropped_as_seen": built.dropped_eval},
        "rows_by_kind": {"train": _count(built.train, "kind"), "eval": _count(built.eval, "kind")},
        "rows_per_npc": {"train": _count(built.train, "npc"), "eval": _count(built.eval, "npc")},
        "rows_per_fact": {"min": min(taught, default=0), "max": max(taught, default=0),
                          "mean": round(sum(taught) / len(taught), 2) if taught else 0},
        "npcs": [{"id": n.id, "name": n.name, "greeting": n.greeting, "page": n.page,
                  "knows": len(n.knows), "secrets": len(n.secrets)} for n in vault.npcs.values()],
        "warnings": warnings,
        "config": {k: v for k, v in asdict(cfg).items() if k != "cache"},  # the cache never changes the bytes
    }


def _count(recs: list[Any], attr: str) -> dict[str, int]:
    c = Counter(getattr(r, attr) or "(lore keeper)" for r in recs)
    return dict(sorted(c.items()))


def summary(report: dict[str, Any], wall_s: float | None = None) -> str:
    """A short human-readable digest of report.json for the terminal."""
    r = report
    types = ", ".join(f"{n} {t}" for t, n in r["entities_by_type"].items())
    kinds = ", ".join(f"{n} {k}" for k, n in r["facts_by_kind"].items())
    lines = [
        f"pages      {r['pages']} ({types})",
        f"facts      {r['facts']} ({kinds}); untaught (no speaker may tell them): {r['facts_untaught']}",
        *([f"           teaching {r['facts']} of {r['facts_total']} facts (max_facts = {r['config']['max_facts']})"]
          if r.get("facts_total", r["facts"]) > r["facts"] else []),
        f"rows       {r['rows']['train']} train, {r['rows']['eval']} eval",
        "           by kind: " + ", ".join(f"{k} {n}" for k, n in r["rows_by_kind"]["train"].items()),
        f"per fact   min {r['rows_per_fact']['min']}, mean {r['rows_per_fact']['mean']}, max {r['rows_per_fact']['max']}",
        "per NPC    " + ", ".join(f"{k} {n}" for k, n in r["rows_per_npc"]["train"].items()),
    ]
    if wall_s is not None:
        lines.append(f"time       {wall_s:.2f} s")
    if r["warnings"]:
        lines.append(f"warnings   {len(r['warnings'])}")
        lines += [f"  {w}" for w in r["warnings"][:20]]
        if len(r["warnings"]) > 20:
            lines.append(f"  ... {len(r['warnings']) - 20} more in report.json")
    return "\n".join(lines)
