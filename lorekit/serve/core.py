"""The runtime core: everything the server knows, and no transport.

`Runtime` holds the lore snapshot, the model slot (with a model waiting to be swapped in), the
conversations, the fair turn queue, the personas to warm and the metrics, and runs the model
thread, the file watcher and the retrainer. A transport (the game protocol, HTTP, or a new one)
talks to it only through:

- `submit(turn)` / `cancel(turn)`: queue a `scheduler.Turn`; its `sink` gets the pieces and the
  end (`done` or `error`), called from the model thread;
- `check_npc(npc)`, `npcs()`, `status()`, `reset(npc, session)`, `health()`, `metrics_text()`,
  `count_error(code)`, and the settings `cfg`;
- `subscribe(fn)`: `fn(event)` for every reload and reload error (from a background thread).

It is thread-based and loop-free: transports hop to their own event loop in their sinks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lorekit.errors import LorekitError
from lorekit.serve.config import ServeConfig
from lorekit.serve.metrics import Metrics
from lorekit.serve.personas import Lore, NpcInfo
from lorekit.serve.request import RequestError
from lorekit.serve.scheduler import Scheduler, Turn, WarmQueue
from lorekit.serve.sessions import SessionStore
from lorekit.serve.slot import EngineSlot
from lorekit.serve.worker import Typing, Worker, turn_result

log = logging.getLogger(__name__)

Event = dict[str, Any]


class Runtime:
    def __init__(self, lore_dir: Path, out: Path, cfg: ServeConfig):
        if cfg.engine:
            from lorekit.serve.remote import check_settings

            check_settings(cfg)
        if cfg.retrain and cfg.model:
            raise LorekitError(f"--retrain writes OUT/export/model.gguf, but --model {cfg.model} would be served "
                               "instead of it: drop --model (or [serve] model)")
        self.cfg, self.lore_dir, self.out = cfg, Path(lore_dir), Path(out)
        self.lore = Lore(self.lore_dir)
        self.slot = EngineSlot(cfg, self.out)
        self.sessions = SessionStore(self.out / "serve" / "sessions", cfg.history_max_turns)
        self.scheduler = Scheduler()
        self.warm = WarmQueue(cfg.prewarm and not cfg.engine, self.scheduler.wake)  # an engine caches prefixes itself
        self.metrics = Metrics()
        self.started = time.time()
        self.watcher: Any = None
        self.retrainer: Any = None
        self._subscribers: list[Callable[[Event], None]] = []
        self._subscribers_lock = threading.Lock()
        self._workers: list[Worker] = []

    @property
    def engine(self) -> Any:
        return self.slot.engine

    # -- lifecycle ----------------------------------------------------------------------------

    def load(self) -> None:
        """Load lore and model (blocking); a broken vault or model at start-up is a user error."""
        result = self.lore.load()
        if not result.ok:
            raise LorekitError("the lore has errors; fix them and start again:\n" + "\n".join(result.errors))
        self.slot.load()
        self.warm.add(self.lore.current.npcs)
        self._index_notes()
        log.info("model %s (%s), %d NPCs%s", self.slot.engine.path, self.slot.family or self.slot.engine.family,
                 len(self.lore.current.npcs), f", generating on {self.cfg.engine}" if self.cfg.engine else "")

    def start(self) -> None:
        """Start the model thread (with an engine: `engine_concurrency` of them, so that many turns
        stream at once), and the watcher and retrainer when the settings ask for them."""
        n = self.cfg.engine_concurrency if self.cfg.engine else 1
        self._workers = [Worker(self.lore, self.slot, self.sessions, self.scheduler, self.warm, self.metrics,
                                between_turns=self.swap_pending_engine, name=f"lorekit-model-{i}") for i in range(n)]
        for worker in self._workers:
            worker.start()
        if self.cfg.watch:
            from lorekit.serve.watcher import Watcher

            self.watcher = Watcher(self.lore_dir, self.out / "export", self.cfg.model, self.cfg.debounce,
                                   on_lore=self.reload_lore, on_model=self.reload_model)
            self.watcher.start()
        if self.cfg.retrain:
            from lorekit.serve.retrain import Retrainer

            self.retrainer = Retrainer(self.lore_dir, self.out, self.cfg.retrain_debounce,
                                       on_built=self.reload_model, on_failed=self._build_failed)

    def _index_notes(self) -> None:
        """With --engine no worker is ever idle to work ahead (the engine caches prompts itself), so the
        NPCs' search indexes are built by a thread of their own now, not by the first turns to each NPC
        (a wave of 64 players' first turns built the same index dozens of times over)."""
        lore = self.lore.current
        if not self.cfg.engine or lore.retriever is None:
            return

        def build() -> None:
            for npc in lore.npcs:
                try:
                    lore.retriever.warm(npc)  # kept from the previous lore when the NPC's notes did not change
                except Exception:  # an optimisation: a turn builds what is missing
                    log.exception("building the notes index of %s failed", npc)

        threading.Thread(target=build, name="lorekit-notes-index", daemon=True).start()

    def stop_turns(self) -> None:
        """End every queued turn with `shutting_down` and stop the running ones at their next token."""
        self.scheduler.drain(lambda t: t.sink.error("shutting_down", "the server is stopping"))
        for running in self.scheduler.running_turns():
            running.cancel.set()  # stops at the next token or prompt chunk (~0.2 s), or closes the engine's stream
        self.scheduler.close()
        for worker in self._workers:
            worker.stopping.set()

    def close(self) -> None:
        """Blocking: stop turns, background work and the model thread, then free the model."""
        self.stop_turns()
        if self.watcher:
            self.watcher.stop()
        if self.retrainer:
            self.retrainer.stop()
        deadline = time.monotonic() + 60
        for worker in self._workers:
            worker.join(max(deadline - time.monotonic(), 0.1))
            if worker.is_alive():
                log.error("the model thread did not stop; leaving the model loaded")
                return
        self.slot.close()

    # -- what transports call -----------------------------------------------------------------

    def submit(self, turn: Turn) -> None:
        """Queue a turn; `unknown_npc` if the current lore has no such NPC."""
        self.check_npc(turn.npc)
        self.scheduler.submit(turn)

    def cancel(self, turn: Turn) -> None:
        """Stop a turn: a queued one ends now with `done` (finish_reason `cancelled`), a running one at
        its next token or prompt chunk; one that already ended is left alone."""
        turn.cancel.set()
        if self.scheduler.remove(turn):
            now = time.perf_counter()
            turn.sink.done(turn_result(turn, None, "", (now - turn.received) * 1000, now))

    def typing(self, npc: str, session: str, text: str, state: dict | None = None) -> None:
        """The player is typing `text` to `npc`: process its prompt while the model is idle (the newest
        line of a conversation replaces the one before). Nothing is done ahead with --engine (the engine
        caches prompts itself) or `prewarm = false`: the work-ahead queue is off then."""
        self.check_npc(npc)
        self.warm.add_turn((npc, session), Typing(npc, session, text, state))

    def check_npc(self, npc: str) -> None:
        npcs = self.lore.current.npcs
        if npc not in npcs:
            raise RequestError("unknown_npc", f"no NPC {npc!r} (known: {', '.join(npcs)})")

    def npcs(self) -> list[NpcInfo]:
        return list(self.lore.current.npcs.values())

    def reset(self, npc: str, session: str) -> int:
        """Forget one conversation (npc "*": that session with every NPC); the number of turns deleted."""
        if npc != "*":
            self.check_npc(npc)
        return self.sessions.reset(npc, session)

    def subscribe(self, fn: Callable[[Event], None]) -> Callable[[], None]:
        """Call `fn(event)` for every reload notification; returns the function that unsubscribes."""
        with self._subscribers_lock:
            self._subscribers.append(fn)

        def unsubscribe() -> None:
            with self._subscribers_lock:
                if fn in self._subscribers:
                    self._subscribers.remove(fn)

        return unsubscribe

    def publish(self, event: Event) -> None:
        with self._subscribers_lock:
            subscribers = list(self._subscribers)
        for fn in subscribers:
            try:
                fn(event)
            except Exception:  # one broken subscriber must not stop the others hearing of a reload
                log.exception("a subscriber failed on %s", event.get("type"))

    def count_error(self, code: str) -> None:
        self.metrics.error(code)

    def metrics_text(self) -> str:
        return self.metrics.render(self.scheduler.depth(), self.clients())

    def clients(self) -> int:
        """Connections listening for notifications (the game protocol's)."""
        with self._subscribers_lock:
            return len(self._subscribers)

    def status(self) -> dict[str, Any]:
        lore, engine, slot = self.lore.current, self.slot.engine, self.slot
        return {
            "model": {"path": str(engine.path), "adapter": str(engine.adapter) if engine.adapter else None,
                      "sha256": engine.sha256, "family": slot.family or engine.family, "loaded_at": round(engine.loaded_at, 3),
                      "generation": slot.generation, "errors": slot.errors},
            "lore": {"dir": str(self.lore_dir.resolve()), "npcs": len(lore.npcs), "loaded_at": round(lore.loaded_at, 3),
                     "generation": lore.generation, "errors": self.lore.errors, "warnings": self.lore.warnings},
            "retrain": self.retrainer.status() if self.retrainer else {"enabled": False, "state": "idle",
                                                                        "last_error": None},
            "prewarm_pending": self.warm.pending(), "queue": self.scheduler.depth(), "clients": self.clients(),
            "uptime_s": round(time.time() - self.started, 1), "engine": self.engine_report(),
        }

    def engine_report(self) -> dict[str, Any] | None:
        """With --engine: its URL, whether it answers (checked every ~2 s, and by every turn), its model."""
        health = getattr(self.slot.engine, "health", None)
        return health.report() if health else None

    def health(self) -> dict[str, Any]:
        engine, remote = self.slot.engine, self.engine_report()
        model = {"name": engine.path.name, "sha256": engine.sha256, "generation": self.slot.generation} \
            if engine else None
        out = {"status": "ok", "model_loaded": engine is not None, "model": model, "lore_errors": len(self.lore.errors)}
        if remote is not None:
            out["engine"] = remote
            out["status"] = "ok" if remote["reachable"] else "engine_unavailable"
        return out

    # -- reload -------------------------------------------------------------------------------

    def reload_lore(self, final: bool = True) -> bool:
        """Re-read the vault (watcher thread); the next turn of a changed NPC uses the new persona.
        A failure keeps the last good lore; it is reported only when `final` (the watcher first tries
        right after a save, when an editor may not have finished writing, and retries after the debounce)."""
        t0 = time.perf_counter()
        result = self.lore.load()
        if result.ok:
            self.metrics.reloaded("lore")
            log.info("lore reloaded in %.0f ms (generation %d, changed: %s)", (time.perf_counter() - t0) * 1000,
                     self.lore.current.generation, ", ".join(result.changed) or "no persona")
            # The changed personas first, before any other warming, and before clients hear of the reload:
            # the worker starts on them now, from each NPC's previous state (only the tokens from the
            # first changed one on are processed), so the next turn of that NPC finds them ready.
            self.warm.add(result.changed, first=True)
            self._index_notes()
            self.publish({"type": "reloaded", "what": "lore", "generation": self.lore.current.generation,
                          "npcs": result.changed})
            if self.retrainer:
                self.retrainer.lore_changed()
        elif final:
            self.metrics.error("reload_lore")
            log.error("lore reload failed, keeping the last good lore:\n%s", "\n".join(result.errors))
            self.publish({"type": "reload_error", "what": "lore", "errors": result.errors})
        else:
            log.debug("lore has errors right after a save; trying again after the debounce")
        return result.ok

    def reload_model(self) -> bool:
        """Load the newest exported model beside the old one (loader thread); the worker swaps it in.
        With --engine the weights are the engine's: a new export is for the engine to load."""
        if self.cfg.engine:
            log.warning("a new model was exported; with --engine the engine holds the weights: restart %s on it "
                        "(lore, notes and personas reload here as usual)", self.cfg.engine)
            return True
        if self.slot.load_pending():
            return True
        self.metrics.error("reload_model")
        log.error("new model failed to load, keeping the old one: %s", self.slot.errors[0])
        self.publish({"type": "reload_error", "what": "model", "errors": list(self.slot.errors)})
        return False

    def _build_failed(self, message: str) -> None:
        self.publish({"type": "reload_error", "what": "model", "errors": [message]})

    def swap_pending_engine(self) -> None:
        """The worker, between turns: a model loaded beside the old one takes over."""
        if not self.slot.swap():
            return
        self.warm.add(self.lore.current.npcs)
        self.metrics.reloaded("model")
        log.info("model swapped in: %s", self.slot.engine.path)
        self.publish({"type": "reloaded", "what": "model", "generation": self.slot.generation,
                      "path": str(self.slot.engine.path)})
