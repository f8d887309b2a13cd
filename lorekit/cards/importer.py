"""A character card -> pages of a vault: an NPC page, and its character book as lore.

`personality` becomes the voice, `first_mes` the greeting, `description` the page body. Each book
entry becomes a lore page (named by the entry, its other keys as aliases), or a section of an
existing page when one of its keys names that page; the NPC `knows` all of them. What has no place
in the lore format (scenario, example messages, other greetings) is kept in a `%%` comment on the
NPC page, which is never taught. Nothing is written before every page is planned and checked; an
existing page is overwritten only with `force`, and sections are only ever appended.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lorekit import atomic
from lorekit.cards.card import BookEntry, Card, read_card
from lorekit.errors import LorekitError
from lorekit.lore import Entity, Vault, load_vault, slug

_CHAR = re.compile(r"\{\{\s*char\s*\}\}|<BOT>", re.I)
_USER = re.compile(r"\{\{\s*user\s*\}\}|<USER>", re.I)


@dataclass
class Write:
    rel: str  # path in the vault
    text: str
    what: str  # what the CLI prints


@dataclass
class ImportResult:
    npc_id: str
    page: str
    writes: list[Write] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _NewPage:
    title: str
    aliases: list[str]
    paragraphs: list[str]
    entries: list[str]


def import_card(card_path: Path | str, lore_dir: Path | str, force: bool = False) -> ImportResult:
    """Read the card, plan every page, then write them (each atomically)."""
    card = read_card(card_path)
    result = plan(card, Path(lore_dir), str(card_path), force)
    for w in result.writes:
        atomic.write_text(Path(lore_dir) / w.rel, w.text)
    return result


def plan(card: Card, lore_dir: Path, source: str, force: bool = False) -> ImportResult:
    """Every page to write for `card` (read from `source`, named in messages), checked, not yet written."""
    if not lore_dir.is_dir():
        raise LorekitError(f"{lore_dir}: lore folder not found (fix: create it, or pass the folder holding your pages)")
    vault = load_vault(lore_dir)
    name = card.name
    npc_rel = _npc_path(vault, card, lore_dir, source, force)
    result = ImportResult(slug(name), npc_rel)
    fix = lambda text: _macros(text, name, result)  # noqa: E731  (taught text: {{user}} gets a note)
    own: list[tuple[str, str]] = []  # sections for the NPC page: (heading, content)
    new: dict[str, _NewPage] = {}  # lower-case title -> page to write
    appends: dict[str, list[tuple[str, str, str]]] = {}  # existing page -> (heading, content, entry)
    knows: list[str] = []
    for i, entry in enumerate(card.book):
        label = entry.name or (entry.keys[0] if entry.keys else f"entry {i + 1}")
        if not entry.enabled:
            result.notes.append(f"book entry \"{label}\" is disabled in the card: skipped")
            continue
        content = fix(entry.content).strip()
        if not content:
            result.notes.append(f"book entry \"{label}\" has no content: skipped")
            continue
        if entry.regex:
            result.notes.append(f"book entry \"{label}\" has regex keys: its keys are not kept as names")
        target = _existing_target(vault, entry, name)
        if target == "":
            own.append((_heading(entry, name), content))
        elif target is not None:
            appends.setdefault(target.page, []).append((_heading(entry, target.name), content, label))
            knows.append(target.name)
        else:
            title = _title(entry, i, name)
            page = new.setdefault(title.lower(), _NewPage(title, [], [], []))
            page.paragraphs.append(content)
            page.entries.append(label)
            page.aliases += [] if entry.regex else [k for k in entry.keys if k.lower() != title.lower()]
            knows.append(page.title)
    _check_new_pages(vault, lore_dir, new, name, result, force)
    result.writes.insert(0, Write(npc_rel, _npc_page(card, fix, knows, own, source),
                                  f"wrote {npc_rel} (NPC `{result.npc_id}`, knows {len(dict.fromkeys(knows))} page(s))"))
    for rel, sections in appends.items():
        _append_sections(lore_dir, rel, sections, result)
    _notes(card, knows, npc_rel, result)
    return result


def _npc_path(vault: Vault, card: Card, lore_dir: Path, source: str, force: bool) -> str:
    """Where the NPC page goes; a page of that name (or id) exists: an error, or its path with force."""
    existing = vault.resolve(card.name) or vault.entities.get(slug(card.name))
    if existing is not None:
        if not force:
            raise LorekitError(f"{source}: the card's name `{card.name}` is already a page ({existing.page}) "
                               "(fix: pass --force to overwrite that page, or rename the character in the card)")
        return existing.page
    rel = f"characters/{file_name(card.name)}.md"
    if (lore_dir / rel).exists() and not force:
        raise LorekitError(f"{source}: {rel} exists already (fix: pass --force to overwrite it, or rename the character)")
    return rel


def _existing_target(vault: Vault, entry: BookEntry, name: str) -> Entity | str | None:
    """The page an entry's keys name: an existing entity, "" for the card's own character, or None."""
    names = ([] if entry.regex else entry.keys) + ([entry.name] if entry.name else [])
    for key in names:
        if key.lower() == name.lower():
            return ""
        found = vault.resolve(key)
        if found is not None:
            return "" if found.id == slug(name) else found
    return None


def _title(entry: BookEntry, i: int, name: str) -> str:
    title = entry.name or (entry.keys[0] if entry.keys and not entry.regex else f"{name} lore {i + 1}")
    return " ".join(title.replace("[", "(").replace("]", ")").replace("|", "/").replace("#", "").split())


def _heading(entry: BookEntry, page_name: str) -> str:
    if entry.name and entry.name.lower() != page_name.lower():
        return _title(entry, 0, page_name)
    return "Lore"


def _check_new_pages(vault: Vault, lore_dir: Path, new: dict[str, _NewPage], name: str, result: ImportResult,
                     force: bool) -> None:
    """Each new page gets a free file and a free name; an alias that is taken is dropped (with a note)."""
    taken = {name.lower(), *(p.title.lower() for p in new.values())}
    for page in new.values():
        rel = f"lore/{file_name(page.title)}.md"
        if (lore_dir / rel).exists() and not force:
            raise LorekitError(f"{rel} exists already, for the book entry \"{page.title}\" "
                               "(fix: pass --force to overwrite it, or rename the entry in the card)")
        aliases = []
        for alias in dict.fromkeys(page.aliases):
            if alias.lower() in taken or vault.resolve(alias) is not None:
                result.notes.append(f"key \"{alias}\" of book entry \"{page.title}\" already names another page: "
                                    "not kept as an alias")
                continue
            taken.add(alias.lower())
            aliases.append(alias)
        front = {"type": "lore", "name": page.title}
        if aliases:
            front["aliases"] = aliases
        text = _front(front) + f"# {page.title}\n\n" + "\n\n".join(page.paragraphs) + "\n"
        entries = ", ".join(f'"{e}"' for e in page.entries)
        result.writes.append(Write(rel, text, f"wrote {rel} (book entry {entries})"))


def _append_sections(lore_dir: Path, rel: str, sections: list[tuple[str, str, str]], result: ImportResult) -> None:
    text = (lore_dir / rel).read_text(encoding="utf-8")
    headings = {m.group(1).strip().lower() for m in re.finditer(r"^#{1,6}\s+(.*?)\s*$", text, re.M)}
    added = []
    for heading, content, entry in sections:
        if " ".join(content.split()) in " ".join(text.split()):
            result.notes.append(f"book entry \"{entry}\" is already in {rel}: not added again")
            continue
        base, n = heading, 1
        while heading.lower() in headings:
            n += 1
            heading = f"{base} {n}"
        headings.add(heading.lower())
        text = text.rstrip("\n") + f"\n\n## {heading}\n{content}\n"
        added.append(f"## {heading} (book entry \"{entry}\")")
    if added:
        result.writes.append(Write(rel, text, f"added {', '.join(added)} to {rel}"))


def _npc_page(card: Card, fix, knows: list[str], own: list[tuple[str, str]], source: str) -> str:
    npc: dict = {"voice": " ".join(fix(card.personality).split())}
    if card.first_mes.strip():
        npc["greeting"] = fix(card.first_mes).strip()
    for key in ("style", "refuse", "dont_know"):
        value = card.lorekit.get(key)
        if isinstance(value, str) and value.strip():
            npc[key] = value.strip()
    openers = card.lorekit.get("openers")
    if isinstance(openers, list) and all(isinstance(o, str) for o in openers) and openers:
        npc["openers"] = openers
    npc["knows"] = [f"[[{k}]]" for k in dict.fromkeys(knows)]
    front: dict = {"type": "character", "name": card.name}
    if card.nickname.strip() and card.nickname.strip().lower() != card.name.lower():
        front["aliases"] = [card.nickname.strip()]
    tags = [re.sub(r"[^\w/-]+", "-", t).strip("-").lower() for t in card.tags]
    if any(tags):
        front["tags"] = [t for t in dict.fromkeys(tags) if t]
    front["npc"] = npc
    body = f"# {card.name}\n\n"
    if card.description.strip():
        body += fix(card.description).strip() + "\n"
    for heading, content in own:
        body += f"\n## {heading}\n{content}\n"
    return _front(front) + body + _kept(card, source)


def _kept(card: Card, source: str) -> str:
    """Card fields the lore format has no place for, in a comment LoreKit never teaches."""
    parts = []
    for label, value in (("scenario", card.scenario), ("example messages", card.mes_example),
                         ("creator notes", card.creator_notes), ("system prompt", card.system_prompt)):
        if value.strip():
            parts.append(f"{label}:\n{_CHAR.sub(card.name, value).strip()}")
    for i, greeting in enumerate(card.alternate_greetings, 1):
        if greeting.strip():
            parts.append(f"alternate greeting {i}:\n{_CHAR.sub(card.name, greeting).strip()}")
    if not parts:
        return ""
    kept = "\n\n".join(parts).replace("%%", "% %")
    return f"\n%% Kept from the card {Path(source).name} ({card.spec}); LoreKit does not teach these.\n\n{kept}\n%%\n"


def _notes(card: Card, knows: list[str], rel: str, result: ImportResult) -> None:
    if not card.personality.strip():
        result.notes.append(f"the card has no `personality`: write how {card.name} speaks as `voice:` in {rel}")
    if not knows:
        result.notes.append(f"{card.name} knows no other page yet: list pages in `knows:` in {rel}")


def _macros(text: str, name: str, result: ImportResult) -> str:
    text = _CHAR.sub(name, text)
    if _USER.search(text) and not any("{{user}}" in n for n in result.notes):
        result.notes.append("the card's description, greeting or book says {{user}} (the player); LoreKit "
                            "keeps it as written: edit the pages where it should read otherwise")
    return text


def _front(data: dict) -> str:
    return "---\n" + yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=4096) + "---\n"


def file_name(name: str) -> str:
    """A file name for a page name: no characters that file systems or wiki links forbid."""
    text = re.sub(r'[\\/:*?"<>|#^\[\]]+', " ", name)
    return " ".join(text.split()).strip(" ._")[:120] or "card"  # a leading `.` or `_` would hide the page
