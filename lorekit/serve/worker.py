"""A thread that runs turns: takes them from the fair queue, builds each prompt from the lore snapshot
and the history, streams the reply, saves the history, and lets a new model take over between turns.
While no turn waits, it pre-processes queued personas. The in-process model has one such thread; a
remote engine (`--engine`) has `[serve] engine_concurrency` of them, each waiting on its own stream."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lorekit.serve.engine_client import EngineError
from lorekit.serve.turnprompt import PromptError, persona_prefix, prompt_tokens

if TYPE_CHECKING:
    from lorekit.serve.engine import Generation
    from lorekit.serve.metrics import Metrics
    from lorekit.serve.personas import Lore
    from lorekit.serve.scheduler import Scheduler, Turn, WarmQueue
    from lorekit.serve.sessions import SessionStore
    from lorekit.serve.slot import EngineSlot

log = logging.getLogger(__name__)


class Worker(threading.Thread):
    """`between_turns()` runs before each turn (the runtime swaps in a pending model there)."""

    def __init__(self, lore: Lore, slot: EngineSlot, sessions: SessionStore, scheduler: Scheduler,
                 warm: WarmQueue, metrics: Metrics, between_turns: Callable[[], None], name: str = "lorekit-model"):
        super().__init__(name=name, daemon=True)
        self.lore, self.slot, self.sessions, self.scheduler = lore, slot, sessions, scheduler
        self.warm, self.metrics, self.between_turns = warm, metrics, between_turns
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.between_turns()
            except Exception:  # keep serving with whatever model is in place
                log.exception("swapping in the new model failed")
            turn = self.scheduler.next(timeout=0.02 if self.warm else 0.5)
            if turn is None:
                self.prewarm_one()
                continue
            try:
                self.run_turn(turn)
            except (PromptError, EngineError) as e:
                turn.sink.error(e.code, str(e))
            except Exception as e:  # a bug or a model failure must not kill the server
                log.exception("turn %r failed", turn.rid)
                turn.sink.error("internal", f"{type(e).__name__}: {e}")
            finally:
                self.scheduler.finished(turn)

    def prewarm_one(self) -> None:
        """While idle, process one NPC's persona ahead of its first turn (start-up, reloads, new model)."""
        npc = self.warm.take()
        if npc is None:
            return
        try:
            self._prewarm(npc)
        finally:
            self.warm.done()

    def _prewarm(self, npc: str) -> None:
        lore, engine = self.lore.current, self.slot.engine
        if npc not in lore.npcs:
            return
        text = persona_prefix(lore, npc, self.slot.format())
        t0 = time.perf_counter()
        try:
            done = engine.prewarm((npc, "*persona*"), engine.tokenize(text),
                                  stop=lambda: self.scheduler.depth() > 0 or self.stopping.is_set())
        except Exception:  # warming is an optimisation: never let it stop the server
            log.exception("pre-processing the persona of %s failed", npc)
            return
        if not done:  # a turn is waiting: serve it first, finish this persona later
            self.warm.add([npc], first=True)
            return
        log.debug("persona of %s ready (%.0f ms)", npc, (time.perf_counter() - t0) * 1000)

    def run_turn(self, turn: Turn) -> None:
        started = time.perf_counter()
        queue_ms = (started - turn.received) * 1000
        if turn.cancel.is_set():
            turn.sink.done(self._result(turn, None, "", queue_ms, started))
            return
        engine, fmt = self.slot.engine, self.slot.format()
        tokens, text, notes = prompt_tokens(self.lore.current, self.sessions, turn, engine, fmt)
        gen = engine.generate((turn.npc, turn.session), tokens, fmt, turn.sampling, turn.cancel, turn.sink.piece,
                              text=text)
        if turn.session is not None and gen.finish_reason in ("stop", "length"):
            self.sessions.append(turn.npc, turn.session, turn.text, gen.text)
        result = self._result(turn, gen, gen.text, queue_ms, started)
        result["sources"] = [n.source for n in notes]  # the notes this reply was given (page, heading)
        turn.sink.done(result)

    def _result(self, turn: Turn, gen, text: str, queue_ms: float, started: float) -> dict:
        result = turn_result(turn, gen, text, queue_ms, started)
        first = result["timings"]["first_token_ms"]
        self.metrics.turn_done(result["finish_reason"], result["tokens"]["prompt"], result["tokens"]["cached"],
                               result["tokens"]["completion"], result["timings"]["total_ms"] / 1000,
                               first / 1000 if first is not None else None)
        return result


def turn_result(turn: Turn, gen: Generation | None, text: str, queue_ms: float, started: float) -> dict:
    """The fields of a turn's `done` event; `gen` None: cancelled before the model started on it."""
    now = time.perf_counter()
    finish = gen.finish_reason if gen else "cancelled"
    first = (gen.first_piece_at - started) * 1000 if gen and gen.first_piece_at else None
    total_s = now - turn.received
    return {
        "npc": turn.npc, "session": turn.session, "text": text, "finish_reason": finish,
        "tokens": {"prompt": gen.prompt_tokens if gen else 0, "cached": gen.cached_tokens if gen else 0,
                   "completion": gen.completion_tokens if gen else 0},
        "timings": {"queue_ms": round(queue_ms, 1), "prompt_ms": round(gen.prompt_ms, 1) if gen else 0.0,
                    "first_token_ms": round(first, 1) if first is not None else None,
                    "total_ms": round(total_s * 1000, 1), "tokens_per_s": gen.tokens_per_s if gen else 0.0},
    }
