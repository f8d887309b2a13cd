"""Conversation history per (NPC, session), kept on disk so a restart keeps every conversation.

One small JSON file per pair under `OUT/serve/sessions/`, rewritten atomically after each turn.
The server holds them in memory once read; the files are the truth across restarts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from urllib.parse import quote, unquote

from lorekit.atomic import write_text

log = logging.getLogger(__name__)


def file_name(npc: str, session: str) -> str:
    # Percent-encoding keeps every session name a valid file name on every OS (':' included).
    return f"{quote(npc, safe='-_.')}__{quote(session, safe='-_.')}.json"


class SessionStore:
    def __init__(self, folder: Path, max_turns: int = 200):
        self.folder = Path(folder)
        self.max_turns = max_turns
        self._cache: dict[tuple[str, str], list[dict]] = {}
        self._lock = threading.Lock()

    def history(self, npc: str, session: str) -> list[dict]:
        """The turns so far, oldest first: [{"user": str, "npc": str, "time": float}]."""
        with self._lock:
            return list(self._load(npc, session))

    def append(self, npc: str, session: str, user: str, reply: str) -> None:
        with self._lock:
            turns = self._load(npc, session)
            turns.append({"user": user, "npc": reply, "time": round(time.time(), 3)})
            del turns[: max(0, len(turns) - self.max_turns)]
            data = {"npc": npc, "session": session, "turns": turns}
            # not fsynced: every turn rewrites it, and 64 players' turns would queue behind the disk
            write_text(self.folder / file_name(npc, session), json.dumps(data, ensure_ascii=False, indent=1),
                       durable=False)

    def reset(self, npc: str, session: str) -> int:
        """Forget one conversation (npc "*": every NPC of that session); returns the turns deleted."""
        with self._lock:
            pairs = self._pairs_of(session) if npc == "*" else [(npc, session)]
            deleted = 0
            for key in pairs:
                deleted += len(self._load(*key))
                self._cache[key] = []
                (self.folder / file_name(*key)).unlink(missing_ok=True)
            return deleted

    def _pairs_of(self, session: str) -> list[tuple[str, str]]:
        pairs = {key for key in self._cache if key[1] == session}
        suffix = f"__{quote(session, safe='-_.')}.json"
        for path in self.folder.glob(f"*{suffix}"):
            pairs.add((unquote(path.name[: -len(suffix)]), session))
        return sorted(pairs)

    def _load(self, npc: str, session: str) -> list[dict]:
        key = (npc, session)
        if key not in self._cache:
            self._cache[key] = self._read(self.folder / file_name(npc, session))
        return self._cache[key]

    @staticmethod
    def _read(path: Path) -> list[dict]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            turns = data["turns"]
            return [t for t in turns if isinstance(t.get("user"), str) and isinstance(t.get("npc"), str)]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            # A damaged history must not take the NPC down: start over and keep the bad file aside.
            log.warning("%s: unreadable history (%s); starting a new conversation", path, e)
            path.replace(path.with_suffix(".json.bad"))
            return []
