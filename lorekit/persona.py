"""An NPC's system turn, rendered from `templates/persona.j2` (or the vault's `_templates/persona.j2`).

Training rows use `system_prompt(vault, npc_id)` as their system turn; the server calls the same
function, with the game's `state`, so the model sees at run time the text it was trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorekit.errors import LorekitError


def templates_for(vault: Any, template_dir: str | Path | None = None, bytecode_dir: Path | None = None):
    """The vault's template set (cached on the vault object)."""
    from lorekit.compile.templates import Templates

    key = str(template_dir or "")
    cache = vault.__dict__.setdefault("_templates", {})
    if key not in cache:
        from lorekit.lore.article import article_names

        cache[key] = Templates(vault.root, Path(template_dir) if template_dir else None, bytecode_dir)
        cache[key].use_article_names(article_names(vault.entities.values()))
    return cache[key]


def npc_view(npc: Any) -> dict[str, Any]:
    return {"id": npc.id, "name": npc.name, "voice": npc.voice, "greeting": npc.greeting, "style": npc.style,
            "refuse": npc.refuse, "dont_know": npc.dont_know, "openers": list(npc.openers)}


def entity_view(entity: Any) -> dict[str, Any]:
    return {"id": entity.id, "name": entity.name, "type": entity.type, "aliases": list(entity.aliases),
            "tags": list(entity.tags), "page": entity.page, "summary": entity.summary,
            "fields": {k: ", ".join(p.text for p in parts) for k, parts in entity.fields.items()}}


def system_prompt(vault: Any, npc_id: str, state: dict | None = None, template_dir: str | Path | None = None) -> str:
    """The NPC's persona; with `state` (location, time, nearby, quest flags...) a "Right now:" block."""
    npc = vault.npcs.get(npc_id)
    if npc is None:
        known = ", ".join(sorted(vault.npcs)) or "none"
        raise LorekitError(f"unknown NPC `{npc_id}` (NPCs in this vault: {known})")
    templates = templates_for(vault, template_dir)
    entity = vault.entities[npc.id]
    ctx = {"npc": npc_view(npc), "entity": entity_view(entity),
           "known": sorted(vault.entities[e].name for e in npc.knows if e != npc.id),
           "secrets": sorted(vault.entities[e].name for e in npc.secrets)}
    text = templates.render(templates.find("persona.j2") or "persona.j2", "system", ctx)
    return text + state_block(state) if state else text


def keeper_prompt(vault: Any, template_dir: str | Path | None = None) -> str:
    """System turn of the rows without an NPC (the neutral lore keeper)."""
    templates = templates_for(vault, template_dir)
    return templates.render("keeper.j2", "system", {})


def state_block(state: dict) -> str:
    parts = []
    for key, value in state.items():
        if value is None or value == "" or value == [] or value == {}:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value))
        parts.append(f"{str(key).replace('_', ' ')}: {value}")
    return ("\n\nRight now: " + "; ".join(parts) + ".") if parts else ""
