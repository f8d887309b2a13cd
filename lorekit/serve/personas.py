"""The lore the server answers from: an immutable snapshot of the vault and every NPC's system prompt.

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

    def state_block(self, npc: str, state: dict | None) -> str:
        """The game-state text ("Right now: ..."): see `lorekit.prompt.user_turn` for where it goes."""
        from lorekit.prompt import state_block

        return state_block(state)


@dataclass
class ReloadResult:
    ok: bool
    changed: list[str]  # NPC ids whose system prompt changed, appeared or disappeared
    errors: list[str]


class Lore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.current: LoreSnapshot | None = None
        self.errors: list[str] = []  # problems of the last failed reload; [] when the disk is good
        self.warnings: list[str] = []
        self._parsed: dict = {}  # content hash + path -> parsed page: a reload re-parses only edited pages
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
        )
        self.current, self.errors, self.warnings = snap, [], warnings
        return ReloadResult(True, changed, [])

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
        return LoreSnapshot(vault, npcs, prompts, generation), warnings
