"""The lore the server answers from: an immutable snapshot of the vault, every NPC's system prompt
and, with grounding on (`[compile] notes`), every NPC's lore notes and the retriever over them.

`Lore.load()` builds a new snapshot and swaps it in only if the vault has no errors, so broken lore
keeps the last good state. A turn takes `lore.current` once when it starts: turns already streaming
finish on the snapshot they started with.
"""

from __future__ import annotations

import gc
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lorekit.errors import LorekitError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NpcInfo:
    id: str
    name: str
    greeting: str
    farewell: str = ""  # what the NPC says when the player leaves (the game may show it without a turn)


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
        self._parsed = PageCache()  # a reload reads only pages saved since the last, parses only edited ones
        self._notes: Any = None  # lorekit.grounding.reload.NoteCache: a reload rebuilds only notes an edit touched
        self._templates: tuple[str, Any] | None = None  # (digest, templates) the last notes were rendered with
        self.notes_ms = 0.0
        self.notes_rebuilt: list[str] = []  # NPCs whose note lists the last reload built again (the rest kept)
        self._lock = threading.Lock()  # one load at a time: a save during a slow reload starts another

    def load(self) -> ReloadResult:
        """Build a new snapshot; swap it in if the vault has no errors. The cyclic garbage collector
        is paused meanwhile: a reload makes and drops ~10^6 objects at 10,000 pages, and the full
        collections that triggers walked the whole heap (0.6 s of a 2 s reload; compile/fast.py
        does the same)."""
        with self._lock:
            enabled = gc.isenabled()
            gc.disable()
            try:
                return self._load()
            finally:
                if enabled:
                    gc.enable()

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
        from lorekit.prompt import persona, template_dir_of

        if not self.root.is_dir():
            raise LorekitError(f"{self.root}: lore folder not found")
        vault = self._parsed.load(self.root)
        if vault.errors:
            raise LorekitError("\n".join(str(p) for p in vault.errors))
        npcs, prompts = {}, {}
        template_dir = template_dir_of(self.root)  # the folder compile used, so serving sends the trained persona
        for npc_id, npc in sorted(vault.npcs.items()):
            try:
                prompts[npc_id] = persona(vault, npc_id, template_dir)
            except LorekitError as e:
                raise LorekitError(f"{npc.page}: persona of {npc_id}: {e}") from None
            npcs[npc_id] = NpcInfo(npc_id, npc.name, npc.greeting or "", npc.farewell or "")
        if not npcs:
            raise LorekitError(f"{self.root}: no NPCs (give a character page an `npc:` table with a voice)")
        warnings = [str(p) for p in vault.problems if p.severity == "warning"]
        retriever, digests = self._notes_of(vault, prompts)
        return LoreSnapshot(vault, npcs, prompts, generation, retriever=retriever, notes=digests), warnings

    def _notes_of(self, vault: Any, prompts: dict[str, str]) -> tuple[Any, dict[str, str]]:
        """The retriever over the NPCs' lore notes, with the budget training used; (None, {}) when off.
        Only the notes an edit could change are built again (lorekit.grounding.reload)."""
        from lorekit.compile import load_config
        from lorekit.compile.build import keep_fact
        from lorekit.compile.dataset import Builder
        from lorekit.grounding import Budget, Retriever
        from lorekit.grounding.notes import keeper_statement
        from lorekit.grounding.reload import NoteCache
        from lorekit.prompt import templates_for

        cfg = load_config(self.root)
        if not cfg.notes:
            return None, {}
        t0 = time.perf_counter()
        budget = Budget(cfg.notes_budget, cfg.notes_max)
        budget.check("[compile] notes_budget / notes_max")
        templates = templates_for(vault, cfg.template_dir or None)
        digest = templates.digest()  # every template's text, and the page names "The" is lower-cased in
        if self._templates is not None and self._templates[0] == digest:
            templates = self._templates[1]  # the same templates, already compiled (jinja: ~10 ms each)
        self._templates = (digest, templates)
        builder = Builder(vault, cfg, templates, prompts)
        settings = json.dumps(asdict(cfg), sort_keys=True, default=str) + digest
        old = self.current.retriever if self.current else None
        self._notes = self._notes or NoteCache()
        book, rebuilt = self._notes.build(vault, keeper_statement(builder), lambda f: keep_fact(f, cfg), settings,
                                          old.book if old else None)
        retriever = Retriever(vault, book, budget, old)
        retriever.adopt(old)  # unchanged NPCs keep their index
        self.notes_ms, self.notes_rebuilt = (time.perf_counter() - t0) * 1000, sorted(rebuilt)
        log.debug("notes of %d of %d NPCs rebuilt in %.0f ms", len(rebuilt), len(prompts), self.notes_ms)
        return retriever, {npc: book.npc_digest(npc) for npc in prompts}


class PageCache:
    """`lorekit.lore.load_vault`'s page cache, in memory (the compiler keeps one on disk,
    lorekit.compile.cache): a page whose size and modification time are those of the last load, and
    that was not modified in the 2 s before it, is not read again; one whose bytes are unchanged is
    not parsed again, nor is its entity made again. Pages the last load did not see are dropped."""

    def __init__(self) -> None:
        self.pages: dict[str, Any] = {}  # content hash:parser:path -> parsed page
        self.stats: dict[str, tuple[int, int, str]] = {}  # path -> (mtime_ns, size, key), as of the last load
        self.trusted_before = 0
        self.used_pages: set[str] = set()
        self.new_stats: dict[str, tuple[int, int, str]] = {}
        self.entities: dict[int, tuple] = {}  # the entity each page defines (see load_vault)

    def __len__(self) -> int:
        return len(self.pages)

    def load(self, root: Path) -> Any:
        from lorekit.lore import load_vault

        started = time.time_ns()
        self.used_pages, self.new_stats = set(), {}
        vault = load_vault(root, self)
        self.pages = {k: v for k, v in self.pages.items() if k in self.used_pages}
        self.stats, self.trusted_before = self.new_stats, started - 2_000_000_000
        return vault
