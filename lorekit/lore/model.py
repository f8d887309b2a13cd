"""The entity graph's data types."""

from __future__ import annotations

from dataclasses import dataclass, field

from lorekit.lore.links import ValuePart
from lorekit.lore.page import Section

TYPES = ("character", "location", "faction", "item", "event", "lore")
# Front matter keys that configure a page rather than state a fact about it.
RESERVED = {"type", "name", "tags", "npc", "secret", "known_by", "cssclass", "cssclasses", "publish", "id",
            "article_in_name"}
# An NPC's persona fields: under `npc:`, or at the top level of a page with `npc: true` (the flat form).
NPC_FIELDS = ("voice", "greeting", "farewell", "style", "refuse", "dont_know", "openers", "knows", "secrets")
# Of these, the ones that mean nothing but persona: never taught as facts, on any page. (`style` can be
# an ordinary field, "the style of the Salt Gate", on a page that is not an NPC.)
PERSONA_ONLY = ("voice", "greeting", "farewell", "refuse", "dont_know", "openers", "knows", "secrets")


@dataclass
class Npc:
    id: str
    name: str
    page: str
    voice: str = ""
    greeting: str = ""
    farewell: str = ""  # its answer to "Goodbye." or "Thanks, that's all." (none: no farewell rows)
    style: str = ""
    refuse: str = ""
    dont_know: str = ""
    openers: list[str] = field(default_factory=list)
    knows: set[str] = field(default_factory=set)  # entity ids whose facts it tells (its own included)
    secrets: set[str] = field(default_factory=set)  # entity ids it knows but refuses to tell


@dataclass
class Entity:
    id: str
    name: str
    type: str
    page: str
    aliases: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    fields: dict[str, list[ValuePart]] = field(default_factory=dict)
    field_lines: dict[str, int] = field(default_factory=dict)
    secret_fields: dict[str, list[ValuePart]] = field(default_factory=dict)  # inline fields in secret text
    summary: str = ""
    summary_line: int = 0
    summary_targets: list[str] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    secret: bool = False
    article_in_name: bool = False  # a leading "The" stays capitalised mid-sentence (lorekit.lore.article)
    known_by: list[str] = field(default_factory=list)  # NPC ids; empty = no restriction
    npc: Npc | None = None

    @property
    def public(self) -> bool:
        return not self.secret and not self.known_by
