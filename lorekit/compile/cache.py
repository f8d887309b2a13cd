"""The incremental cache in OUT/.cache: parsed pages by content hash, rendered rows by input hash.

Entries not used by the last compile are dropped on save, so the cache does not grow forever.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

from lorekit import atomic

log = logging.getLogger(__name__)
VERSION = 2


class Cache:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.pages: dict[str, Any] = self._load("pages")
        self.units: dict[str, Any] = self._load("units")
        self.used: set[str] = set()
        self._sizes = (len(self.pages), len(self.units))

    def _load(self, name: str) -> dict[str, Any]:
        path = self.folder / f"{name}.pickle"
        try:
            with open(path, "rb") as f:
                version, data = pickle.load(f)
            return data if version == VERSION else {}
        except FileNotFoundError:
            return {}
        except Exception as e:  # a damaged cache costs a full rebuild, never a failure
            log.warning("ignoring unreadable cache %s: %s", path, e)
            return {}

    def save(self) -> None:
        self.units = {k: v for k, v in self.units.items() if k in self.used}
        for name, data in (("pages", self.pages), ("units", self.units)):
            atomic.write_bytes(self.folder / f"{name}.pickle", pickle.dumps((VERSION, data), protocol=5))
