"""Watch the lore folder and the export folder; reload when a save has settled.

A lore edit is tried as soon as the save's burst of file events has settled (`SETTLE_S`); only if
the vault then has an error (an editor may still be writing) does the reload wait for `debounce`
seconds of quiet before it reports that error. A new `model.gguf` or `adapter.gguf` in `OUT/export/`
(or a new file at --model) is loaded beside the old model and swapped in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

MODEL_FILES = {"model.gguf", "adapter.gguf", "export.json"}
MODEL_DEBOUNCE = 1.0
# One save is a burst of events (truncate, write, close; or write a temporary file and rename it) a
# few milliseconds long; a reload tried this long after the last of them reads the finished file.
SETTLE_S = 0.03


class Debounced:
    """Run `fn` in its own thread once no call to `trigger` came for `delay` seconds."""

    def __init__(self, delay: float, fn):
        self.delay, self.fn, self._timer, self._lock = delay, fn, None, threading.Lock()

    def trigger(self) -> None:
        self._arm(self.delay, self._run)

    def _arm(self, delay: float, run) -> None:
        """(Re)start the one timer: a pending run is replaced by `run` in `delay` seconds."""
        with self._lock:
            if self._timer:
                self._timer.cancel()
            self._timer = threading.Timer(delay, run)
            self._timer.daemon = True
            self._timer.start()

    def _run(self, **kwargs) -> bool:
        """Call `fn`; a failure is logged, never raised into the timer thread. False if it raised."""
        try:
            return self.fn(**kwargs)
        except Exception:
            log.exception("reload failed")
            return False

    def cancel(self) -> None:
        with self._lock:
            if self._timer:
                self._timer.cancel()


class Eager(Debounced):
    """Try `fn(final=False)` once events have settled for `settle` seconds; if it fails (returns False),
    call `fn(final=True)` after `delay` seconds of quiet, so a failure is only reported for a file that
    stayed broken. A new event restarts the cycle."""

    def __init__(self, delay: float, fn, settle: float = SETTLE_S):
        super().__init__(delay, fn)
        self.settle = min(settle, delay)

    def trigger(self) -> None:
        self._arm(self.settle, self._try)

    def _try(self) -> None:
        timer = self._timer
        if self._run(final=False):
            return
        with self._lock:
            if self._timer is not timer:  # a newer event already re-armed: its cycle decides
                return
        self._arm(max(self.delay - self.settle, 0.0), self._final)

    def _final(self) -> None:
        self._run(final=True)


def lore_relevant(path: str, root: Path) -> bool:
    """Pages, `_templates/` and `lorekit.toml` count (`lorekit.lore.files`); hidden folders (.obsidian),
    `_drafts` and editor swap files do not."""
    from lorekit.lore.files import lore_kind

    try:
        rel = Path(path).resolve().relative_to(root)
    except ValueError:
        return False
    return lore_kind(rel.as_posix()) is not None


class Watcher:
    """Calls `on_lore(final)` (see `Eager`) after lore edits under `lore_dir`, and `on_model()` after a
    new model file in `export_dir` (or at `model`, a --model path)."""

    def __init__(self, lore_dir: Path, export_dir: Path, model: str, debounce: float,
                 on_lore: Callable[..., bool], on_model: Callable[[], bool]):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.lore_root = Path(lore_dir).resolve()
        self.lore = Eager(debounce, on_lore)
        self.model = Debounced(MODEL_DEBOUNCE, on_model)
        self.export_dir = Path(export_dir).resolve()
        self.model_dirs = {self.export_dir}
        if model:
            self.model_dirs.add(Path(model).resolve().parent)
        self.model_names = MODEL_FILES | {Path(model).name} if model else MODEL_FILES
        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                for path in (event.src_path, getattr(event, "dest_path", "") or ""):
                    if path:
                        watcher.changed(str(path))

        self.observer = Observer()
        self.observer.schedule(Handler(), str(self.lore_root), recursive=True)
        # The build folder, recursively: `lorekit export` replaces the whole export folder at once
        # (a rename), which a watch on the old folder would never see.
        self.export_dir.mkdir(parents=True, exist_ok=True)
        self.observer.schedule(Handler(), str(self.export_dir.parent), recursive=True)
        for folder in self.model_dirs - {self.export_dir}:
            self.observer.schedule(Handler(), str(folder), recursive=False)

    def changed(self, path: str) -> None:
        p = Path(path)
        if p == self.export_dir or p.name in self.model_names and p.parent.resolve() in self.model_dirs:
            log.info("model file changed: %s", p)
            self.model.trigger()
        elif lore_relevant(path, self.lore_root):
            log.debug("lore changed: %s", p)
            self.lore.trigger()

    def start(self) -> None:
        self.observer.daemon = True
        self.observer.start()

    def stop(self) -> None:
        self.lore.cancel()
        self.model.cancel()
        self.observer.stop()
        self.observer.join(5)
