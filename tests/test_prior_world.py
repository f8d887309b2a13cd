"""The second world (bench/prior_world) trains a generic notes-reading prior: it must compile cleanly,
teach every fact with notes, have NPCs that keep secrets, and share no name with sample_lore, whose
eval it must not leak into."""

from __future__ import annotations

import json
import re
from collections import Counter

from lorekit.compile import run
from lorekit.lore import load_vault
from tests.conftest import REPO, SAMPLE_LORE

PRIOR_WORLD = REPO / "bench" / "prior_world"


def _names(vault) -> set[str]:
    """Every page name and alias, lower case, without a leading "the"."""
    out = set()
    for e in vault.entities.values():
        for name in [e.name, *e.aliases]:
            out.add(re.sub(r"^the\s+", "", name.strip().lower()))
    return out


def test_prior_world_is_valid_and_shaped_like_the_sample():
    vault = load_vault(PRIOR_WORLD)
    assert [str(p) for p in vault.problems] == []
    types = Counter(e.type for e in vault.entities.values())
    assert 45 <= sum(types.values()) <= 60
    assert {"character", "location", "faction", "item", "event", "lore"} <= set(types)
    assert len(vault.npcs) >= 6
    assert len({npc.voice for npc in vault.npcs.values()}) == len(vault.npcs)
    assert sum(1 for npc in vault.npcs.values() if npc.secrets) >= 3
    assert any(e.secret for e in vault.entities.values())
    assert any(e.known_by for e in vault.entities.values())


def test_prior_world_shares_no_names_with_sample_lore():
    prior, sample = load_vault(PRIOR_WORLD), load_vault(SAMPLE_LORE)
    assert _names(prior) & _names(sample) == set()
    # nor does its prose mention a sample page by name ("Vellicor", "Grey Sea", "Tide Bell", ...)
    text = "\n".join(p.read_text(encoding="utf-8") for p in PRIOR_WORLD.rglob("*.md")).lower()
    named = {n for e in sample.entities.values() if (n := re.sub(r"^the\s+", "", e.name.lower()))}
    assert sorted(n for n in named if re.search(rf"\b{re.escape(n)}\b", text)) == []


def test_prior_world_compiles_every_fact_with_notes(tmp_path):
    result = run(PRIOR_WORLD, tmp_path / "build")
    report = result.report
    assert result.problems == [] and report["warnings"] == []
    assert report["config"]["notes"] is True and report["config"]["max_facts"] == 0
    assert 1500 <= report["rows"]["train"] <= 3500
    assert report["rows_per_fact"]["min"] >= 5
    assert report["rows_by_kind"]["train"]["secret"] > 0 and report["rows_by_kind"]["train"]["unknown"] > 0
    rows = [json.loads(line) for line in result.train_path.read_text(encoding="utf-8").splitlines()]
    assert {r["meta"]["npc"] for r in rows} >= set(load_vault(PRIOR_WORLD).npcs)
    # the NPCs that refuse do so in their own words (their `refuse` line), not only the default ones
    refusals = {r["conversations"][-1]["value"] for r in rows if r["meta"]["kind"] == "secret"}
    assert any("League business" in line for line in refusals)
