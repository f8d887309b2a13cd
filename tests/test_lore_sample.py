"""The sample world is the living example of the lore format: it must stay valid and rich enough."""

from __future__ import annotations

from collections import Counter

from lorekit.lore import load_vault
from tests.conftest import SAMPLE_LORE


def test_sample_lore_is_valid_and_complete():
    vault = load_vault(SAMPLE_LORE)
    assert [str(p) for p in vault.problems] == []
    types = Counter(e.type for e in vault.entities.values())
    assert sum(types.values()) >= 40
    assert {"character", "location", "faction", "item", "event"} <= set(types)
    assert len(vault.npcs) >= 5
    assert len({npc.voice for npc in vault.npcs.values()}) == len(vault.npcs)
    assert any(e.secret for e in vault.entities.values())
    assert any(npc.secrets for npc in vault.npcs.values())
