"""Facts: what a vault states, one question-and-answer unit each.

Kinds: `field` (a front matter field, asked forward), `reverse` (a link field asked from the linked
page: "Who leads the Ash Guild?" <- leader), `summary` (the first paragraph) and `section` (a
`## Heading`'s first paragraph). Answers are short: at most two sentences of prose.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lorekit.lore.article import name_in
from lorekit.lore.model import Entity
from lorekit.lore.vault import Vault, slug

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
    pages: frozenset[str]  # entity ids an NPC must know to tell this fact
    file: str  # lore file and line the fact comes from (for messages)
    line: int
    others: tuple[str, ...] = ()  # names of the linked entities (reverse: the sources)
    types: tuple[str, ...] = ()  # reverse: the sources' page types, sorted ("event", "item")


def facts_of(vault: Vault) -> list[Fact]:
    """Every fact of the vault in a stable order (page order, then field order)."""
    out: list[Fact] = []
    reverse: dict[tuple[str, str], list[tuple[Entity, int]]] = {}
    for entity in vault.entities.values():
        out.extend(entity_facts(vault, entity, reverse))
    for (target_id, field_name), sources in reverse.items():
        out.append(_reverse_fact(vault, vault.entities[target_id], field_name, sources))
    return out


def entity_facts(vault: Vault, entity: Entity, reverse: dict | None = None) -> list[Fact]:
    out = []
    if entity.summary:
        text = short(entity.summary)
        out.append(Fact(f"{entity.id}.summary", "summary", entity.id, "summary", "summary", (text,),
                        _expect_in(vault, text, entity, entity.summary_targets), frozenset({entity.id}),
                        entity.page, entity.summary_line))
    for section in entity.sections:
        if section.level != 2 or not section.text:
            continue
        text = short(section.text)
        out.append(Fact(f"{entity.id}.section.{slug(section.heading)}", "section", entity.id, section.heading,
                        re.sub(r"^the\s+", "", section.heading.lower()), (text,), _expect_in(vault, text, entity, section.targets),
                        frozenset({entity.id}),
                        entity.page, section.text_line))
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
                        entity.field_lines.get(key, 1), tuple(others)))
    return out


def _reverse_fact(vault: Vault, target: Entity, field_name: str, sources: list[tuple[Entity, int]]) -> Fact:
    names = tuple(dict.fromkeys(e.name for e, _ in sources))
    first, line = sources[0]
    return Fact(f"{target.id}.rev.{field_name}", "reverse", target.id, field_name, field_name.replace("_", " "),
                names, names, frozenset({target.id, *(e.id for e, _ in sources)}), first.page, line, names,
                tuple(sorted({e.type for e, _ in sources})))


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
