"""Lore notes: for every NPC, one neutral sentence for every fact it may tell.

A note's text is the lore keeper's statement of the fact (the `answer` block of the fact's
template, no NPC voice), so a modder changes the wording where they change the answers. Secrets
never enter the notes of an NPC that does not hold them; a holder gets a note that names only the
topic it keeps (never the secret itself), so no prompt ever carries a secret's text.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from lorekit.compile.templates import TemplateFailure
from lorekit.lore import Fact, Vault, facts_of
from lorekit.lore.facts import SECRET, holds_secret, may_tell, speaks_of


@dataclass(frozen=True)
class Note:
    id: str  # the fact id ("secret:<npc>:<entity>" for a kept topic)
    entity: str  # the entity the fact is about
    text: str  # one neutral sentence (for a secret: the topic only)
    page: str  # source page, relative to the lore folder
    heading: str  # field label, section heading or "summary"
    secret: bool = False
    about: frozenset[str] = frozenset()  # every entity id the note speaks of (the subject, linked pages)
    keys: str = ""  # what retrieval matches besides the text: the training phrasings of the fact's question

    @property
    def source(self) -> dict[str, str]:
        return {"page": self.page, "heading": self.heading}


def note_pairs(notes: list[Note]) -> list[tuple[str, bool]]:
    """The notes as `lorekit.prompt` lays them out: (text, secret) each."""
    return [(n.text, n.secret) for n in notes]


@dataclass
class NoteBook:
    """Every note of a vault, and which NPC may be told which."""

    notes: dict[str, Note] = field(default_factory=dict)  # note id -> note
    by_npc: dict[str, list[str]] = field(default_factory=dict)  # NPC id -> note ids, in fact order
    digest: str = ""  # changes whenever any note or any NPC's scope changes

    def of(self, npc: str) -> list[Note]:
        return [self.notes[i] for i in self.by_npc.get(npc, [])]

    def by_npc_set(self, npc: str) -> frozenset[str]:
        """The note ids the NPC may be given (cached: asked once per row at compile time)."""
        cache = self.__dict__.setdefault("_sets", {})
        if npc not in cache:
            cache[npc] = frozenset(self.by_npc.get(npc, []))
        return cache[npc]

    def npc_digest(self, npc: str) -> str:
        """A hash of the NPC's notes (cached: a reload compares every NPC's)."""
        cache = self.__dict__.setdefault("_digests", {})
        if npc not in cache:
            h = hashlib.blake2b(digest_size=12)
            for note in self.of(npc):
                h.update(f"{note.id}\0{note.text}\0{note.secret}\0".encode())
            cache[npc] = h.hexdigest()
        return cache[npc]


def build_notes(vault: Vault, statement, cache: dict | None = None, facts: list[Fact] | None = None) -> NoteBook:
    """All notes of the vault. `statement(fact) -> (text, keys)` renders a fact as the lore keeper
    states it, and the words it is asked in; `cache` (render key -> both) keeps renders between
    calls, so an edit re-renders only the facts it changed (`lorekit.grounding.reload` keeps more)."""
    facts = facts_of(vault) if facts is None else facts
    used: dict = {}
    shas = page_shas(vault)
    notes = [note_of(vault, fact, render(fact, statement, cache, used, shas[vault.entities[fact.entity].page]))
             for fact in facts]
    if cache is not None:
        cache.clear()
        cache.update(used)
    return assemble(vault, facts, notes)


def page_shas(vault: Vault) -> dict[str, str]:
    """Page path -> content hash: a render's key holds the bytes of the page its fact is about."""
    return {p.path: p.sha for p in vault.pages}


def render(fact: Fact, statement, cache: dict | None, used: dict, sha: str) -> tuple[str, str] | None:
    """`statement(fact)`, from `cache` where the fact and `sha`, the bytes of the page it is about, are
    unchanged (a template may say more of that page than the fact: `entity.summary`, its aliases);
    None where the template fails (the fact's own rows report it; no note for the fact)."""
    key = repr((fact.id, fact.kind, fact.field, fact.values, fact.expect, fact.others, fact.types, sha))
    rendered = cache.get(key) if cache is not None else None
    if rendered is None:
        try:
            rendered = statement(fact)
        except TemplateFailure:
            return None
    used[key] = rendered
    return rendered


def note_of(vault: Vault, fact: Fact, rendered: tuple[str, str] | None) -> Note | None:
    """The note of a fact rendered as `(text, keys)`; None where it could not be rendered."""
    if rendered is None:
        return None
    text, keys = rendered
    return Note(fact.id, fact.entity, text, fact.file, _heading(fact), False, speaks_of(vault, fact), keys)


def assemble(vault: Vault, facts: list[Fact], notes: list[Note | None], previous: NoteBook | None = None,
             keep: set[str] | frozenset[str] = frozenset()) -> NoteBook:
    """The book of these facts' notes (`notes[i]` is `facts[i]`'s, None for no note) and who may hear
    which. NPCs in `keep` take their note lists from `previous`: a reload that knows their notes
    did not change (`lorekit.grounding.reload`)."""
    book = NoteBook({fact.id: note for fact, note in zip(facts, notes, strict=True) if note is not None})
    old, kept = (previous, keep) if previous is not None else (NoteBook(), frozenset())
    told = [(fact, SECRET in fact.pages) for fact, note in zip(facts, notes, strict=True) if note is not None] \
        if set(vault.npcs) - kept else []
    digests, old_digests = book.__dict__.setdefault("_digests", {}), old.__dict__.get("_digests", {})
    for npc_id in vault.npcs:
        if npc_id in kept:
            ids = old.by_npc.get(npc_id, [])
            book.notes.update((i, old.notes[i]) for i in ids if i.startswith("secret:"))  # its kept secrets
            if npc_id in old_digests:
                digests[npc_id] = old_digests[npc_id]
        else:
            ids = _npc_notes(book, vault, npc_id, told)
        if ids:
            book.by_npc[npc_id] = ids
    h = hashlib.blake2b(digest_size=16)
    for npc_id in sorted(book.by_npc):
        h.update(f"{npc_id}\0{book.npc_digest(npc_id)}\0".encode())
    book.digest = h.hexdigest()
    return book


def _npc_notes(book: NoteBook, vault: Vault, npc_id: str, told: list[tuple[Fact, bool]]) -> list[str]:
    """The note ids one NPC may be given, in fact order, then the whole pages it keeps. Who may hear
    what has one home, `lorekit.lore.facts`."""
    ids = []
    for fact, secret in told:
        if secret:  # a secret part of a page: its holders keep it, nobody tells it
            if holds_secret(vault, npc_id, fact):
                ids.append(_kept(book, vault, npc_id, fact))
        elif may_tell(vault, npc_id, fact):
            ids.append(fact.id)
    for eid in sorted(vault.npcs[npc_id].secrets):  # whole pages the NPC keeps: the topic, never the text
        entity = vault.entities[eid]
        note = Note(f"secret:{npc_id}:{eid}", eid, entity.name, entity.page, "secret", True, frozenset({eid}))
        book.notes[note.id] = note
        ids.append(note.id)
    return ids


def _kept(book: NoteBook, vault: Vault, npc_id: str, fact: Fact) -> str:
    """The holder's note of a secret fact: its topic (page and heading), not its text."""
    entity = vault.entities[fact.entity]
    heading = _heading(fact)
    topic = entity.name if heading.lower() in ("secret", "secrets", "summary") else f"{entity.name}: {heading}"
    note = Note(f"secret:{npc_id}:{fact.id}", fact.entity, topic, fact.file, _heading(fact), True,
                frozenset({fact.entity}))
    book.notes[note.id] = note
    return note.id


def _heading(fact: Fact) -> str:
    return fact.field if fact.kind == "section" else fact.label


def keeper_statement(builder: Any):
    """`statement(fact)` for `build_notes`: the fact's answer as the neutral lore keeper says it, and
    the training phrasings of its question (never the held-out ones: the eval asks in those)."""
    def statement(fact: Fact) -> tuple[str, str]:
        template = builder.template_for(fact)
        ctx = builder.context(fact)
        text = builder.answer(template, ctx, None, f"{builder.cfg.seed}:{fact.id}:note")
        train_q, _ = builder.questions(template, ctx, None, f"{builder.cfg.seed}:{fact.id}:q")
        return text, " ".join(train_q)
    return statement
