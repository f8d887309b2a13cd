"""The text the model sees, built in one place: compile, train, serve, export and eval all call here.

A turn of an NPC is laid out as

    system turn:   the persona (`templates/persona.j2`, or the vault's `_templates/persona.j2`)
    history:       earlier exchanges, as user/assistant turns
    last user turn: [lore notes block] [game state block] the player's line

The persona holds nothing that changes from turn to turn, so a runtime keeps it (and the history)
processed between turns; what changes (retrieved notes, game state) sits in the last user turn.
Training rows are rendered through the same functions, so what is served is what was trained.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lorekit.errors import LorekitError

NOTES_HEADER = "Lore notes (what you know; use only these for facts):"
SECRET_MARK = "(secret: never tell) "


def resolve_template_dir(lore_dir: Path | str, template_dir: str | Path | None) -> Path | None:
    """`[compile] template_dir` as a folder: a relative path is read from the lore folder first
    (the server and export run from anywhere), else from the working directory."""
    if not template_dir:
        return None
    path = Path(template_dir)
    if path.is_absolute():
        return path
    beside = Path(lore_dir) / path
    return beside if beside.is_dir() or not path.is_dir() else path.resolve()


def template_dir_of(lore_dir: Path | str) -> Path | None:
    """The template folder `lorekit.toml` names for this lore folder (None: the vault's and the defaults)."""
    from lorekit.compile.config import CompileConfig
    from lorekit.config import load

    return resolve_template_dir(lore_dir, load(CompileConfig, "compile", Path(lore_dir)).template_dir)


def templates_for(vault: Any, template_dir: str | Path | None = None, bytecode_dir: Path | None = None):
    """The vault's template set (cached on the vault object)."""
    from lorekit.compile.templates import Templates
    from lorekit.lore.article import article_names

    folder = resolve_template_dir(vault.root, template_dir)
    key = str(folder or "")
    cache = vault.__dict__.setdefault("_templates", {})
    if key not in cache:
        cache[key] = Templates(vault.root, folder, bytecode_dir)
        cache[key].use_article_names(article_names(vault.entities.values()))
    return cache[key]


def npc_view(npc: Any) -> dict[str, Any]:
    return {"id": npc.id, "name": npc.name, "voice": npc.voice, "greeting": npc.greeting, "farewell": npc.farewell,
            "style": npc.style,
            "refuse": npc.refuse, "dont_know": npc.dont_know, "openers": list(npc.openers)}


def entity_view(entity: Any) -> dict[str, Any]:
    return {"id": entity.id, "name": entity.name, "type": entity.type, "aliases": list(entity.aliases),
            "tags": list(entity.tags), "page": entity.page, "summary": entity.summary,
            "fields": {k: ", ".join(p.text for p in parts) for k, parts in entity.fields.items()}}


def persona(vault: Any, npc_id: str, template_dir: str | Path | None = None) -> str:
    """The NPC's system turn. It never holds the game state: see `user_turn`."""
    npc = vault.npcs.get(npc_id)
    if npc is None:
        known = ", ".join(sorted(vault.npcs)) or "none"
        raise LorekitError(f"unknown NPC `{npc_id}` (NPCs in this vault: {known})")
    templates = templates_for(vault, template_dir)
    entity = vault.entities[npc.id]
    ctx = {"npc": npc_view(npc), "entity": entity_view(entity),
           "known": sorted(vault.entities[e].name for e in npc.knows if e != npc.id),
           "secrets": sorted(vault.entities[e].name for e in npc.secrets)}
    return templates.render(templates.find("persona.j2") or "persona.j2", "system", ctx)


def keeper(vault: Any, template_dir: str | Path | None = None) -> str:
    """System turn of the rows without an NPC (the neutral lore keeper)."""
    return templates_for(vault, template_dir).render("keeper.j2", "system", {})


def state_block(state: dict | None) -> str:
    """The game's `state` (location, time, nearby, quest flags...) as one "Right now: ..." line; "" if empty."""
    parts = []
    for key, value in (state or {}).items():
        if value is None or value == "" or value == [] or value == {}:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value))
        parts.append(f"{str(key).replace('_', ' ')}: {value}")
    return ("Right now: " + "; ".join(parts) + ".") if parts else ""


def notes_block(notes: list[tuple[str, bool]] | None) -> str:
    """Retrieved lore notes, one line each; `(text, secret)` pairs. None: no notes block at all;
    []: the block says there is nothing, which is what "I don't know" answers are trained on."""
    if notes is None:
        return ""
    lines = [f"- {SECRET_MARK if secret else ''}{text}" for text, secret in notes] or ["- (nothing about this)"]
    return NOTES_HEADER + "\n" + "\n".join(lines)


def user_turn(text: str, state: dict | None = None, notes: list[tuple[str, bool]] | None = None) -> str:
    """The last user turn as the model sees it: notes, then the game state, then the player's line."""
    blocks = [b for b in (notes_block(notes), state_block(state)) if b]
    return "\n\n".join([*blocks, text])


def conversation(system: str, history: list[dict[str, str]], text: str, state: dict | None = None,
                 notes: list[tuple[str, bool]] | None = None) -> list[dict[str, str]]:
    """Chat messages of one turn: system, earlier exchanges, and the last user turn."""
    return [{"role": "system", "content": system}, *history,
            {"role": "user", "content": user_turn(text, state, notes)}]
