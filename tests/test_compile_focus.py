"""`[compile] max_facts`: a budget of facts, the NPCs' pages first, whole and deterministic."""

from __future__ import annotations

import json

from lorekit.compile import run
from lorekit.compile.config import CompileConfig
from tests.conftest import SAMPLE_LORE


def _facts(path) -> set[str]:
    """Fact ids that rows teach or ask (refusals of secrets excepted)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return {f for row in rows if row["meta"]["kind"] != "secret" for f in row["meta"]["facts"]}


def test_max_facts_keeps_the_budget_and_npc_pages_first(tmp_path):
    full = run(SAMPLE_LORE, tmp_path / "full", CompileConfig(cache=False))
    small = run(SAMPLE_LORE, tmp_path / "small", CompileConfig(cache=False, max_facts=90))
    again = run(SAMPLE_LORE, tmp_path / "again", CompileConfig(cache=False, max_facts=90))

    assert small.report["facts"] == 90 and small.report["facts_total"] == full.report["facts"]
    assert small.report["rows"]["train"] < full.report["rows"]["train"] / 3
    assert small.train_path.read_bytes() == again.train_path.read_bytes()
    taught = _facts(small.train_path)
    # Every NPC's own page is taught (the player asks NPCs about themselves first).
    for npc_id in json.loads(small.report_path.read_text())["npcs"]:
        assert any(f.startswith(npc_id["id"] + ".") for f in taught), npc_id["id"]
    # Eval asks about facts that training teaches, and about a sample of the rest of the world.
    rows = [json.loads(line) for line in small.eval_path.read_text().splitlines()]
    world = {f for r in rows if r["meta"].get("trained") is False for f in r["meta"]["facts"]}
    assert world and not world & taught
    asked = {f for r in rows if r["meta"].get("trained") is not False and r["meta"]["kind"] != "secret"
             for f in r["meta"]["facts"]}  # refusals name the fact kept, which is never taught
    assert asked <= taught
    assert "teaching 90 of" in __import__("lorekit.compile.report", fromlist=["summary"]).summary(small.report)


def test_small_set_warns_unless_a_fact_budget_made_it_small(tmp_path):
    def warned(cfg):
        return any("train rows (<" in w for w in run(SAMPLE_LORE, tmp_path / str(id(cfg)), cfg).report["warnings"])

    assert warned(CompileConfig(cache=False, min_rows=100_000))  # too few rows for this threshold: warned
    assert not warned(CompileConfig(cache=False, min_rows=100_000, max_facts=16))  # small on purpose
