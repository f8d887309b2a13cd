"""The incremental cache in OUT/.cache: parsed pages by content hash, rendered rows by input hash.

Rows are sharded by key into 16 files and only shards that changed are rewritten. A page whose
size and modification time match the last compile (and which was not modified in the two seconds
before that compile finished) is not even read again. Entries the last compile did not use are
dropped on save, so the cache does not grow forever. Deleting the folder is always safe.
"""

from __future__ import annotations

import logging
import pickle
import time
from pathlib import Path
from typing import Any

from lorekit import atomic

log = logging.getLogger(__name__)
VERSION = 3
SHARDS = "0123456789abcdef"


class Cache:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        meta = self._load("pages") or {}
        self.pages: dict[str, Any] = meta.get("pages", {})
        self.stats: dict[str, tuple[int, int, str]] = meta.get("stats", {})  # rel -> (mtime_ns, size, key)
        self.trusted_before: int = meta.get("saved_ns", 0) - 2_000_000_000
        self.units: dict[str, Any] = {}
        for shard in SHARDS:
            self.units.update(self._load(f"units-{shard}") or {})
        self.used: set[str] = set()
        self.used_pages: set[str] = set()
        self.new_stats: dict[str, tuple[int, int, str]] = {}
        self.dirty: set[str] = set()

    def _load(self, name: str) -> Any:
        path = self.folder / f"{name}.pickle"
        try:
            with open(path, "rb") as f:
                version, data = pickle.load(f)
            return data if version == VERSION else None
        except FileNotFoundError:
            return None
        except Exception as e:  # a damaged cache costs a full rebuild, never a failure
            log.warning("ignoring unreadable cache %s: %s", path, e)
            return None

    def add_unit(self, key: str, value: Any) -> None:
        self.units[key] = value
        self.dirty.add(key[0])

    def save(self) -> None:
        for key in [k for k in self.units if k not in self.used]:
            del self.units[key]
            self.dirty.add(key[0])
        pages_changed = set(self.pages) != self.used_pages or self.new_stats != self.stats
        self.pages = {k: v for k, v in self.pages.items() if k in self.used_pages}
        if pages_changed or not (self.folder / "pages.pickle").exists():
            data = {"pages": self.pages, "stats": self.new_stats, "saved_ns": time.time_ns()}
            self._write("pages", data)
        for shard in SHARDS:
            if shard in self.dirty or not (self.folder / f"units-{shard}.pickle").exists():
                self._write(f"units-{shard}", {k: v for k, v in self.units.items() if k[0] == shard})

    def _write(self, name: str, data: Any) -> None:
        atomic.write_bytes(self.folder / f"{name}.pickle", pickle.dumps((VERSION, data), protocol=5))
