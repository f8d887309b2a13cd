"""`max_facts`: teach a budget of facts, those of the pages that matter most to the NPCs first.

A 2-core CPU trains the embedded 270M model on a few hundred rows in minutes, not on the thousands
a 50-page world yields; a GPU does not need this. Pages are ranked, and their facts taken whole:
1. NPC pages (the player talks to these first), then pages some NPC keeps secret (refusals are cheap),
2. then by how many NPCs know the page, then by how many other facts point at it, then by name.
The result keeps the facts' original order, so the dataset stays deterministic.
"""

from __future__ import annotations

from collections import Counter

from lorekit.lore import Fact, Vault


def focus(vault: Vault, facts: list[Fact], limit: int) -> list[Fact]:
    if limit <= 0 or len(facts) <= limit:
        return facts
    known = Counter(e for npc in vault.npcs.values() for e in npc.knows)
    pointed = Counter(p for f in facts for p in f.pages if p != f.entity)
    npc_pages = {npc_entity(vault, npc_id) for npc_id in vault.npcs}
    secrets = {e for npc in vault.npcs.values() for e in npc.secrets}

    def rank(entity_id: str) -> tuple:
        tier = 0 if entity_id in npc_pages else 1 if entity_id in secrets else 2
        return (tier, -known[entity_id], -pointed[entity_id], entity_id)

    order = sorted(range(len(facts)), key=lambda i: (rank(facts[i].entity), i))
    chosen = set(order[:limit])
    return [f for i, f in enumerate(facts) if i in chosen]


def npc_entity(vault: Vault, npc_id: str) -> str:
    npc = vault.npcs[npc_id]
    for entity in vault.entities.values():
        if entity.npc is npc:
            return entity.id
    return npc_id
