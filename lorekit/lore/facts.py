"""Facts: what a vault states, one question-and-answer unit each.

Kinds: `field` (a front matter field, asked forward), `reverse` (a link field asked from the linked
page: "Who leads the Ash Guild?" <- leader), `summary` (the first paragraph) and `section` (a
`## Heading`'s first paragraph). Answers are short: at most two sentences of prose.

Who may hear a fact has one home, here: `may_tell(vault, npc_id, fact)` (say it openly) and
`holds_secret(vault, npc_id, fact)` (know it, refuse in character). A secret part of a page (a secret
section, a `#secret` paragraph, a `> [!secret]` callout, an inline field inside one) gives a fact
with `secret=True` whose `pages` hold `SECRET`, which no NPC knows and which is never public, so every
check of the form `fact.pages <= npc.knows` refuses it as well. Its holders are the NPC whose page it
is, the NPCs in the page's `known_by`, and NPCs whose `secrets` name the page: they refuse, nobody
tells. Facts of a `secret: true` page have `secret=True` too and keep their documented rule: an NPC
whose `knows` names the page tells them, one whose `secrets` names it refuses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lorekit.lore.article import name_in
from lorekit.lore.model import Entity
from lorekit.lore.vault import Vault, slug

SECRET = "!secret"  # in `Fact.pages` of a secret part of a page (never an entity id: ids hold no "!")
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9\"'(\[])")
MAX_ANSWER_CHARS = 320


@dataclass(frozen=True)
class Fact:
    id: str
    kind: str  # "field" | "reverse" | "summary" | "section"
    entity: str  # subject entity id (the page the question is about)
    field: str  # field name, "summary", or the section heading
    label: str  # the field as words: "part of", "history"
    values: tuple[str, ...]  # what the answer states, as text ("Oren Vell (brother)")
    expect: tuple[str, ...]  # key values a correct answer states verbatim ("Oren Vell")
    pages: frozenset[str]  # entity ids an NPC must know to tell this fact (SECRET: nobody tells it)
    file: str  # lore file and line the fact comes from (for messages)
    line: int
    others: tuple[str, ...] = ()  # names of the linked entities (reverse: the sources)
    types: tuple[str, ...] = ()  # reverse: the sources' page types, sorted ("event", "item")
    secret: bool = False  # from a secret page or a secret part of one: see may_tell / holds_secret


def facts_of(vault: Vault) -> list[Fact]:
    """Every fact of the vault in a stable order (page order, then field order); a page's secret
    parts come after its other facts."""
    out: list[Fact] = []
    reverse: dict[tuple[str, str], list[tuple[Entity, int]]] = {}
    for entity in vault.entities.values():
        out.extend(entity_facts(vault, entity, reverse))
    for (target_id, field_name), sources in reverse.items():
        out.append(_reverse_fact(vault, vault.entities[target_id], field_name, sources))
    return out


def entity_facts(vault: Vault, entity: Entity, reverse: dict | None = None) -> list[Fact]:
    out = []
    hidden = entity.secret
    if entity.summary:
        text = short(entity.summary)
        out.append(Fact(f"{entity.id}.summary", "summary", entity.id, "summary", "summary", (text,),
                        _expect_in(vault, text, entity, entity.summary_targets), frozenset({entity.id}),
                        entity.page, entity.summary_line, secret=hidden))
    for section in entity.sections:
        if section.secret or section.level != 2 or not section.text:
            continue
        text = short(section.text)
        out.append(Fact(f"{entity.id}.section.{slug(section.heading)}", "section", entity.id, section.heading,
                        _label(section.heading), (text,), _expect_in(vault, text, entity, section.targets),
                        frozenset({entity.id}), entity.page, section.text_line, secret=hidden))
    for key, parts in entity.fields.items():
        values, expect, others = [], [], []
        for part in parts:
            target = vault.resolve(part.target) if part.target else None
            if target is None:
                values.append(part.text)
                expect.append(part.text if not part.target else part.target)
                continue
            values.append(f"{target.name} ({part.note})" if part.note else target.name)
            expect.append(target.name)
            others.append(target.name)
            if reverse is not None and target.id != entity.id and entity.public and key != "aliases":
                reverse.setdefault((target.id, key), []).append((entity, part.line))
        out.append(Fact(f"{entity.id}.{key}", "field", entity.id, key, key.replace("_", " "), tuple(values),
                        tuple(dict.fromkeys(expect)), frozenset({entity.id}), entity.page,
                        entity.field_lines.get(key, 1), tuple(others), secret=hidden))
    return out + _secret_facts(vault, entity)


def _label(heading: str) -> str:
    return re.sub(r"^the\s+", "", heading.lower())


def _secret_facts(vault: Vault, entity: Entity) -> list[Fact]:
    """The secret parts of a page, as facts nobody tells (their pages hold SECRET)."""
    out: list[Fact] = []
    taken: set[str] = set()
    pages = frozenset({entity.id, SECRET})
    for section in entity.sections:
        if not section.secret or not section.text:
            continue
        text = short(section.text)
        fid = _unique(f"{entity.id}.secret.{slug(section.heading)}", taken)
        out.append(Fact(fid, "section", entity.id, section.heading, _label(section.heading), (text,),
                        _expect_in(vault, text, entity, section.targets), pages, entity.page, section.text_line,
                        secret=True))
    for key, parts in entity.secret_fields.items():
        values = tuple(p.text for p in parts)
        fid = _unique(f"{entity.id}.secret.field.{key}", taken)
        out.append(Fact(fid, "field", entity.id, key, key.replace("_", " "), values, values, pages, entity.page,
                        parts[0].line, secret=True))
    return out


def _unique(fid: str, taken: set[str]) -> str:
    n, out = 1, fid
    while out in taken:
        n += 1
        out = f"{fid}-{n}"
    taken.add(out)
    return out


def _reverse_fact(vault: Vault, target: Entity, field_name: str, sources: list[tuple[Entity, int]]) -> Fact:
    names = tuple(dict.fromkeys(e.name for e, _ in sources))
    first, line = sources[0]
    return Fact(f"{target.id}.rev.{field_name}", "reverse", target.id, field_name, field_name.replace("_", " "),
                names, names, frozenset({target.id, *(e.id for e, _ in sources)}), first.page, line, names,
                tuple(sorted({e.type for e, _ in sources})), secret=target.secret)


def may_tell(vault: Any, npc_id: str | None, fact: Fact) -> bool:
    """Whether `npc_id` (None: the neutral lore keeper) may say `fact` openly. A secret part of a page
    is told by nobody; otherwise the keeper tells public facts, an NPC those of the pages it knows."""
    if SECRET in fact.pages:
        return False
    if npc_id is None:
        return fact.pages <= vault.public_ids()
    npc = vault.npcs.get(npc_id)
    return npc is not None and fact.pages <= npc.knows


def speaks_of(vault: Any, fact: Fact) -> frozenset[str]:
    """Every entity id a fact speaks of: the page it is about, the pages it links, the pages it names."""
    about = frozenset(fact.pages) | {e.id for name in fact.others if (e := vault.resolve(name)) is not None}
    return about - {SECRET}


def heard_of(vault: Any, facts: Iterable[Fact]) -> dict[str, set[str]]:
    """Entity ids each NPC knows something of: those its tellable facts speak of ("Corvina Marr lives in
    Vellicor": an NPC that knows Corvina has heard of Vellicor, though it does not know Vellicor's page)."""
    by_entity: dict[str, list[Fact]] = {}
    for fact in facts:
        by_entity.setdefault(fact.entity, []).append(fact)
    heard: dict[str, set[str]] = {}
    for npc_id, npc in vault.npcs.items():
        heard[npc_id] = set()
        for entity_id in npc.knows:
            for fact in by_entity.get(entity_id, ()):
                if may_tell(vault, npc_id, fact):
                    heard[npc_id] |= speaks_of(vault, fact)
    return heard


def holds_secret(vault: Any, npc_id: str | None, fact: Fact) -> bool:
    """Whether `npc_id` knows `fact` but must refuse to tell it, in character."""
    npc = vault.npcs.get(npc_id) if npc_id is not None else None
    if npc is None:
        return False
    if SECRET in fact.pages:
        return npc.id in secret_holders(vault, fact.entity)
    return bool(fact.pages & npc.secrets) and fact.pages <= npc.knows | npc.secrets


def secret_holders(vault: Any, entity_id: str) -> set[str]:
    """The NPCs that hold the secret parts of a page: its own NPC, the NPCs in its `known_by`, and
    NPCs whose `secrets` name it."""
    entity = vault.entities[entity_id]
    out = set(entity.known_by) | {n.id for n in vault.npcs.values() if entity_id in n.secrets}
    if entity.npc is not None:
        out.add(entity.npc.id)
    return out


def short(text: str) -> str:
    """The first one or two sentences of a paragraph, at most ~320 characters."""
    sentences = _SENTENCE_END.split(text.strip())
    out = sentences[0]
    if len(sentences) > 1 and len(out) + len(sentences[1]) < MAX_ANSWER_CHARS:
        out = f"{out} {sentences[1]}"
    if len(out) > MAX_ANSWER_CHARS:
        cut = out[:MAX_ANSWER_CHARS].rsplit(" ", 1)[0].rstrip(",;:")
        out = cut + "..."
    return out


def _expect_in(vault: Vault, text: str, entity: Entity, targets: list[str]) -> tuple[str, ...]:
    """Full names of the pages a paragraph links to that the answer text states verbatim (at most 3)."""
    found = []
    for name in targets:
        target = vault.resolve(name)
        if target is not None and target.id != entity.id and name_in(target.name, text) and target.name not in found:
            found.append(target.name)
    return tuple(found[:3])
