"""NPCs -> character cards: for each NPC, `<id>.json` (Character Card V2) and `<id>.png`.

The card's description is the NPC page's prose, its personality the voice, its first message the
greeting. The character book holds what the NPC may tell (`lorekit.lore.facts.may_tell`): one entry
per page it knows, keyed by the page's name and aliases, holding that page's prose and fields.
Secrets never go in: not the pages in its `secrets`, not a secret part of any page. The PNG is the
portrait the NPC page embeds (`![[portrait.png]]`) when it is a PNG in the vault, else a plain card.
"""

from __future__ import annotations

import base64
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from lorekit import atomic
from lorekit.cards import png
from lorekit.cards.card import BookEntry, Card, card_json
from lorekit.errors import LorekitError
from lorekit.lore import Fact, Vault, facts_of, load_vault, may_tell
from lorekit.lore.model import Entity, Npc
from lorekit.lore.page import ParsedPage

log = logging.getLogger(__name__)


@dataclass
class Exported:
    npc_id: str
    json_path: Path
    png_path: Path
    entries: int
    portrait: str | None  # the vault image used, or None for a plain card


@dataclass
class ExportResult:
    cards: list[Exported] = field(default_factory=list)


def export_cards(lore_dir: Path | str, out: Path | str) -> ExportResult:
    lore_dir, out = Path(lore_dir), Path(out)
    vault = load_vault(lore_dir)
    if vault.errors:
        first = vault.errors[0]
        raise LorekitError(f"{lore_dir}: {len(vault.errors)} error(s) in the lore, first: {first} "
                           f"(fix them first; `lorekit validate {lore_dir}` lists them all)")
    if not vault.npcs:
        raise LorekitError(f"{lore_dir}: no NPCs to export (fix: give a character page `npc: true` and a `voice`)")
    result = ExportResult()
    facts = [f for f in facts_of(vault) if f.kind == "field" and f.field != "aliases"]
    for npc in vault.npcs.values():
        card = npc_card(vault, npc, facts)
        data = json.dumps(card_json(card), indent=2, ensure_ascii=False) + "\n"
        image, portrait = _image(vault, npc)
        encoded = base64.b64encode(json.dumps(card_json(card), ensure_ascii=False).encode("utf-8")).decode("ascii")
        json_path, png_path = out / f"{npc.id}.json", out / f"{npc.id}.png"
        atomic.write_text(json_path, data)
        atomic.write_bytes(png_path, png.with_text(image, "chara", encoded))
        result.cards.append(Exported(npc.id, json_path, png_path, len(card.book), portrait))
    return result


def npc_card(vault: Vault, npc: Npc, facts: list[Fact] | None = None) -> Card:
    """The NPC's card; `facts` are the vault's field facts (computed once for all NPCs)."""
    entity = vault.entities[npc.id]
    card = Card(spec="chara_card_v2", name=npc.name, description=prose(vault, entity), personality=npc.voice,
                first_mes=npc.greeting, tags=list(entity.tags),
                creator_notes=f"Exported by LoreKit from {entity.page}. The character book holds what "
                              f"{npc.name} may tell; secrets are left out.")
    card.extensions = {"lorekit": {k: v for k, v in (("id", npc.id), ("page", entity.page), ("style", npc.style),
                                                     ("refuse", npc.refuse), ("dont_know", npc.dont_know),
                                                     ("openers", npc.openers)) if v}}
    card.book_name = f"What {npc.name} knows"
    if facts is None:
        facts = [f for f in facts_of(vault) if f.kind == "field" and f.field != "aliases"]
    by_entity: dict[str, list[Fact]] = {}
    for f in facts:
        by_entity.setdefault(f.entity, []).append(f)
    for other in vault.entities.values():
        if other.id == npc.id or other.id not in npc.knows:
            continue
        lines = [f"{f.label.capitalize()}: {', '.join(f.values)}." for f in by_entity.get(other.id, [])
                 if may_tell(vault, npc.id, f)]
        content = "\n\n".join(filter(None, [prose(vault, other), "\n".join(lines)]))
        if content:
            card.book.append(BookEntry(keys=list(dict.fromkeys([other.name, *other.aliases])), content=content,
                                       name=other.name))
    return card


def prose(vault: Vault, entity: Entity) -> str:
    """A page's text without its secret parts: paragraphs, and `## Heading` sections with theirs."""
    page = _pages(vault)[entity.page]
    parts = [p for p in [page.summary, *page.summary_more] if p]
    for section in entity.sections:
        if section.secret:
            continue
        text = [t for t in [section.text, *section.more] if t]
        if text:
            parts.append(f"{'#' * max(section.level, 2)} {section.heading}\n\n" + "\n\n".join(text))
    return "\n\n".join(parts)


def _image(vault: Vault, npc: Npc) -> tuple[bytes, str | None]:
    """The PNG the NPC page embeds, if the vault has it and it reads as a PNG; else a plain card."""
    page = _pages(vault)[vault.entities[npc.id].page]
    for name in page.images:
        found = _find_attachment(vault.root, name)
        if found is None or found.suffix.lower() != ".png":
            continue
        data = found.read_bytes()
        try:
            png.chunks(data)
        except png.PngError as e:
            log.warning("%s: %s; using a plain card image", found, e)
            continue
        return data, found.relative_to(vault.root).as_posix()
    return png.plain_card(npc.id), None


def _pages(vault: Vault) -> dict[str, ParsedPage]:
    cache = vault.__dict__.setdefault("_cards_pages", {})
    if not cache:
        cache.update((p.path, p) for p in vault.pages)
    return cache


def _find_attachment(root: Path, name: str) -> Path | None:
    """An embedded file as Obsidian finds it: by its path in the vault, else by its file name anywhere."""
    direct = root / name.lstrip("/")
    if direct.is_file():
        return direct
    base = Path(name).name
    for path in sorted(root.rglob(base)):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts):
            return path
    return None
