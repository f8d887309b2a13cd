"""The lore the server answers from: an immutable snapshot of the vault, every NPC's system prompt
and, with grounding on (`[compile] notes`), every NPC's lore notes and the retriever over them.

`Lore.load()` builds a new snapshot and swaps it in only if the vault has no errors, so broken lore
keeps the last good state. A turn takes `lore.current` once when it starts: turns already streaming
finish on the snapshot they started with.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorekit.errors import LorekitError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NpcInfo:
    id: str
    name: str
    greeting: str


@dataclass(frozen=True)
class LoreSnapshot:
    vault: Any
    npcs: dict[str, NpcInfo]
    prompts: dict[str, str]  # NPC id -> system prompt without game state (what training used)
    generation: int
    loaded_at: float = field(default_factory=time.time)
    retriever: Any = None  # lorekit.grounding.Retriever over this vault's notes; None: grounding off
    notes: dict[str, str] = field(default_factory=dict)  # NPC id -> digest of its notes (what a reload changed)

    def notes_for(self, npc: str, text: str, history: list[dict]) -> list | None:
        """The lore notes for one turn (lorekit.grounding.retrieve); None when grounding is off."""
        return self.retriever.retrieve(npc, text, history) if self.retriever is not None else None

    def state_block(self, npc: str, state: dict | None) -> str:
        """The game-state text ("Right now: ..."): see `lorekit.prompt.user_turn` for where it goes."""
        from lorekit.prompt import state_block

        return state_block(state)


@dataclass
class ReloadResult:
    ok: bool
    changed: list[str]  # NPC ids whose system prompt or lore notes changed, appeared or disappeared
    errors: list[str]
    notes_ms: float = 0.0  # time spent rebuilding the notes


class Lore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.current: LoreSnapshot | None = None
        self.errors: list[str] = []  # problems of the last failed reload; [] when the disk is good
        self.warnings: list[str] = []
        self._parsed: dict = {}  # content hash + path -> parsed page: a reload re-parses only edited pages
        self._notes: dict = {}  # fact signature -> rendered note: a reload re-renders only changed facts
        self.notes_ms = 0.0
        self._lock = threading.Lock()  # one load at a time: a save during a slow reload starts another

    def load(self) -> ReloadResult:
        with self._lock:
            return self._load()

    def _load(self) -> ReloadResult:
        try:
            snap, warnings = self._build((self.current.generation if self.current else 0) + 1)
        except LorekitError as e:
            self.errors = str(e).splitlines()
            return ReloadResult(False, [], self.errors)
        old = self.current
        changed = sorted(
            npc for npc in set(snap.prompts) | set(old.prompts if old else {})
            if old is None or old.prompts.get(npc) != snap.prompts.get(npc) or old.npcs.get(npc) != snap.npcs.get(npc)
            or old.notes.get(npc) != snap.notes.get(npc)
        )
        self.current, self.errors, self.warnings = snap, [], warnings
        return ReloadResult(True, changed, [], self.notes_ms)

    def _build(self, generation: int) -> tuple[LoreSnapshot, list[str]]:
        from lorekit.lore import load_vault
        from lorekit.prompt import persona, template_dir_of

        if not self.root.is_dir():
            raise LorekitError(f"{self.root}: lore folder not found")
        vault = load_vault(self.root, self._parsed)
        live = {id(page) for page in vault.pages}
        self._parsed = {key: page for key, page in self._parsed.items() if id(page) in live}
        if vault.errors:
            raise LorekitError("\n".join(str(p) for p in vault.errors))
        npcs, prompts = {}, {}
        template_dir = template_dir_of(self.root)  # the folder compile used, so serving sends the trained persona
        for npc_id, npc in sorted(vault.npcs.items()):
            try:
                prompts[npc_id] = persona(vault, npc_id, template_dir)
            except LorekitError as e:
                raise LorekitError(f"{npc.page}: persona of {npc_id}: {e}") from None
            npcs[npc_id] = NpcInfo(npc_id, npc.name, npc.greeting or "")
        if not npcs:
            raise LorekitError(f"{self.root}: no NPCs (give a character page an `npc:` table with a voice)")
        warnings = [str(p) for p in vault.problems if p.severity == "warning"]
        retriever, digests = self._notes_of(vault, prompts)
        return LoreSnapshot(vault, npcs, prompts, generation, retriever=retriever, notes=digests), warnings

    def _notes_of(self, vault: Any, prompts: dict[str, str]) -> tuple[Any, dict[str, str]]:
        """The retriever over the NPCs' lore notes, with the budget training used; (None, {}) when off."""
        from lorekit.compile import load_config
        from lorekit.compile.build import keep_fact
        from lorekit.compile.dataset import Builder
        from lorekit.grounding import Budget, Retriever, build_notes
        from lorekit.grounding.notes import keeper_statement
        from lorekit.lore import facts_of
        from lorekit.prompt import templates_for

        cfg = load_config(self.root)
        if not cfg.notes:
            return None, {}
        t0 = time.perf_counter()
        budget = Budget(cfg.notes_budget, cfg.notes_max)
        budget.check("[compile] notes_budget / notes_max")
        builder = Builder(vault, cfg, templates_for(vault, cfg.template_dir or None), prompts)
        facts = [f for f in facts_of(vault) if keep_fact(f, cfg)]
        book = build_notes(vault, keeper_statement(builder), self._notes, facts)
        retriever = Retriever(vault, book, budget)
        retriever.adopt(self.current.retriever if self.current else None)  # unchanged NPCs keep their index
        self.notes_ms = (time.perf_counter() - t0) * 1000
        return retriever, {npc: book.npc_digest(npc) for npc in prompts}
