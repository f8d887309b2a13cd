"""Lore notes after an edit: build again only what the edit could change (the server's reload).

`NoteCache.build` gives the book that `build_notes` gives for the same vault and facts
(tests/test_serve_reload_incremental.py compares the two after each kind of edit), keeping between
loads what an edit cannot have changed:

- a page's facts and their notes, while the page's bytes and the vault's names stay the same
  (every page's id and name, and the name, alias and path index that links resolve by);
- a fact's rendered text, while the fact, the page it is about, the templates and the config do;
- an NPC's note list, while its `knows` and `secrets` stay the same and no fact about a page in its
  scope (those pages and its own) was added, changed or removed.

Any change of names, templates or config builds every page's facts and every NPC's list again
(renders are still reused by content). One instance per lore folder; not thread-safe (the server
builds one snapshot at a time).
"""

from __future__ import annotations

from collections.abc import Callable

from lorekit.grounding.notes import NoteBook, assemble, note_of, page_shas, render
from lorekit.lore import Fact, Vault
from lorekit.lore.facts import _reverse_fact, entity_facts  # facts_of's two steps, one page at a time


class NoteCache:
    def __init__(self) -> None:
        self.settings: str | None = None  # config and templates the renders were made with
        self.names: tuple | None = None  # the vault's names the facts were made with (see _names)
        self.renders: dict = {}  # render key -> (text, keys): see notes.render
        self.pages: dict[str, tuple] = {}  # entity id -> (page key, facts, notes, [((subject, field), line)])
        self.reverse: dict[tuple, tuple] = {}  # (subject, field) -> (sources, its page's bytes, fact, kept?, note)
        self.book: NoteBook | None = None  # the last book built, and its vault
        self.vault: Vault | None = None

    def build(self, vault: Vault, statement, keep: Callable[[Fact], bool], settings: str,
              previous: NoteBook | None) -> tuple[NoteBook, set[str]]:
        """The notes of `vault` (`statement` renders a fact, `keep` says which facts count, `settings`
        names everything else a render depends on), and the NPCs whose note lists were built again;
        the others come from `previous`, which must be the last book this cache built."""
        if settings != self.settings:
            self.settings, self.renders, self.pages, self.reverse = settings, {}, {}, {}
        names = _names(vault)
        if names != self.names:
            self.names, self.pages, self.reverse = names, {}, {}
        whole = not self.pages
        used: dict = {}
        shas = page_shas(vault)
        facts, notes, touched = self._page_facts(vault, statement, keep, shas, used)
        links = self._reverse_facts(vault, statement, keep, shas, used, touched)
        for fact, note in links:
            facts.append(fact)
            notes.append(note)
        if whole:
            self.renders = used  # every fact was rendered or looked up: drop renders nothing uses
        else:
            self.renders.update(used)
        kept = self._unchanged_npcs(vault, touched) if previous is not None and previous is self.book else set()
        book = assemble(vault, facts, notes, previous, kept)
        self.book, self.vault = book, vault
        return book, set(vault.npcs) - kept

    def _page_facts(self, vault: Vault, statement, keep, shas: dict, used: dict) -> tuple[list, list, set[str]]:
        """Every page's facts and notes, kept where the page is unchanged; and the pages made again."""
        facts: list = []
        notes: list = []
        touched: set[str] = set()
        pages = {}
        for entity in vault.entities.values():
            key = (entity.page, shas[entity.page], entity.public)
            entry = self.pages.get(entity.id)
            if entry is None or entry[0] != key:
                links: dict = {}
                own = [f for f in entity_facts(vault, entity, links) if keep(f)]
                entry = (key, own, [note_of(vault, f, render(f, statement, self.renders, used, key[1])) for f in own],
                         [(target, line) for target, sources in links.items() for _, line in sources])
                touched.add(entity.id)
            pages[entity.id] = entry
            facts += entry[1]
            notes += entry[2]
        self.pages = pages
        return facts, notes, touched

    def _reverse_facts(self, vault: Vault, statement, keep, shas: dict, used: dict, touched: set[str]) -> list:
        """The reverse facts ("Who leads the Ash Guild?") and their notes, in facts_of's order; each
        kept while its sources, its subject's page and its sources' pages are unchanged. `touched`
        gains the subject of every reverse fact that changed, appeared or went."""
        sources: dict[tuple[str, str], list] = {}  # (subject, field) -> [(source, line)], as facts_of gathers them
        for eid, (_, _, _, links) in self.pages.items():
            for key, line in links:
                sources.setdefault(key, []).append((eid, line))
        out, reverse = [], {}
        for (target, field), ids in sources.items():
            sha = shas[vault.entities[target].page]
            entry = self.reverse.get((target, field))
            if entry is None or entry[0] != ids or entry[1] != sha or any(eid in touched for eid, _ in ids):
                found = [(vault.entities[eid], line) for eid, line in ids]
                fact = _reverse_fact(vault, vault.entities[target], field, found)
                if entry is None or entry[2] != fact or entry[1] != sha:
                    told = keep(fact)
                    note = note_of(vault, fact, render(fact, statement, self.renders, used, sha)) if told else None
                    entry = (ids, sha, fact, told, note)
                    touched.add(target)
                else:
                    entry = (ids, *entry[1:])
            reverse[(target, field)] = entry
            if entry[3]:
                out.append((entry[2], entry[4]))
        touched.update(target for target, _ in self.reverse.keys() - reverse.keys())
        self.reverse = reverse
        return out

    def _unchanged_npcs(self, vault: Vault, touched: set[str]) -> set[str]:
        """NPCs whose note list cannot have changed since the last build: the same `knows` and
        `secrets`, and no changed page in them or on their own page (lorekit.lore.facts: an NPC
        tells or keeps only facts whose pages all lie in its knows and secrets, its own included)."""
        old = self.vault.npcs if self.vault is not None else {}
        out = set()
        for npc_id, npc in vault.npcs.items():
            was = old.get(npc_id)
            if was is not None and was.knows == npc.knows and was.secrets == npc.secrets \
                    and not touched & (npc.knows | npc.secrets | {npc_id}):
                out.add(npc_id)
        return out


def _names(vault: Vault) -> tuple:
    """What a page's facts and notes read of other pages: which pages there are, in order, their
    names, and how a link resolves (the name, alias and path index)."""
    return list(vault.entities), {e.id: e.name for e in vault.entities.values()}, vault.index, vault.paths
