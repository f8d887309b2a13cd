"""The threads that run turns: each takes turns from the fair queue, builds the prompt from the lore
snapshot and the history, streams the reply, saves the history, and lets a new model take over between
turns. The in-process model has one such thread; a remote engine (`--engine`) has `[serve]
engine_concurrency` of them, each waiting on its own stream. While no turn waits, the in-process thread
works ahead: after a turn, it keeps that turn's state (a later turn with the same lore notes reuses them)
and processes the conversation so far (the next turn then processes only its own notes and line, not the
history again); it processes the line a player is still typing (protocol `typing`) with its notes; and it
pre-processes queued personas. All of it is exact: a turn reuses only saved
states whose tokens are a prefix of its own prompt."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from lorekit.grounding.notes import note_pairs
from lorekit.serve.engine import common_prefix
from lorekit.serve.engine_client import EngineError
from lorekit.serve.scheduler import Turn, TurnSink
from lorekit.serve.turnprompt import (
    PromptError,
    persona_prefix,
    prompt_prefix,
    prompt_tokens,
    session_history,
)

if TYPE_CHECKING:
    from lorekit.serve.engine import Generation
    from lorekit.serve.metrics import Metrics
    from lorekit.serve.personas import Lore
    from lorekit.serve.scheduler import Scheduler, WarmQueue
    from lorekit.serve.sessions import SessionStore
    from lorekit.serve.slot import EngineSlot

log = logging.getLogger(__name__)

TYPED_KEPT = 256  # lines being typed whose notes are remembered (one per conversation; the oldest dropped)


@dataclass
class AfterTurn:
    """What a finished turn leaves for the idle worker: its conversation, and its notes and history."""

    npc: str
    session: str
    lore: Any  # the LoreSnapshot the turn's prompt was built from
    history: list[dict]
    notes: list[tuple[str, bool]] | None  # the turn's notes as (text, secret); None: grounding off


@dataclass
class Typing:
    """A line the player is still typing (protocol `typing`): its prompt is processed ahead, so that when
    the line is sent only what changed since is left (llama.cpp reuses the common prefix)."""

    npc: str
    session: str
    text: str
    state: dict | None = None


class Worker(threading.Thread):
    """`between_turns()` runs before each turn (the runtime swaps in a pending model there)."""

    def __init__(self, lore: Lore, slot: EngineSlot, sessions: SessionStore, scheduler: Scheduler,
                 warm: WarmQueue, metrics: Metrics, between_turns: Callable[[], None], name: str = "lorekit-model"):
        super().__init__(name=name, daemon=True)
        self.lore, self.slot, self.sessions, self.scheduler = lore, slot, sessions, scheduler
        self.warm, self.metrics, self.between_turns = warm, metrics, between_turns
        self.stopping = threading.Event()
        # (npc, session) -> (lore snapshot, notes) of the line being typed there (protocol `typing`)
        self._typed: dict[tuple[str, str], tuple[Any, list]] = {}

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
        """While idle, do one job ahead of turns: a conversation that just had a turn, else one NPC's
        persona (start-up, reloads, new model)."""
        job = self.warm.take()
        if job is None:
            return
        try:
            if isinstance(job, AfterTurn):
                self._after_turn(job)
            elif isinstance(job, Typing):
                self._typing(job)
            else:
                self._prewarm(job)
        except Exception:  # warming is an optimisation: never let it stop the server
            log.exception("working ahead (%r) failed", job if isinstance(job, str) else (job.npc, job.session))
        finally:
            self.warm.done()

    def _busy(self) -> bool:
        return self.scheduler.depth() > 0 or self.stopping.is_set()

    def _prewarm(self, npc: str) -> None:
        """The NPC's persona, then the notes of `[serve] prewarm_lines` (the likeliest first lines)."""
        lore, engine, fmt = self.lore.current, self.slot.engine, self.slot.format()
        if npc not in lore.npcs:
            return
        t0 = time.perf_counter()
        texts = {persona_prefix(lore, npc, fmt): (npc, "*persona*")}
        if lore.retriever is not None:
            lore.retriever.warm(npc)  # its first turn need not build the NPC's search index
            for line in self.slot.cfg.prewarm_lines:
                notes = note_pairs(lore.notes_for(npc, line, []))
                texts.setdefault(prompt_prefix(lore, npc, fmt, [], notes), ("*notes*", npc, line))
        for text, key in texts.items():
            if not engine.prewarm(key, engine.tokenize(text), stop=self._busy):
                self.warm.add([npc], first=True)  # a turn is waiting: serve it first, finish this NPC later
                return
        log.debug("persona of %s ready (%.0f ms)", npc, (time.perf_counter() - t0) * 1000)

    def _after_turn(self, job: AfterTurn) -> None:
        """Keep the last turn's state (its notes serve a later turn on the same topic, in any session),
        then process the conversation so far, up to where the next turn's notes go."""
        engine, fmt, key = self.slot.engine, self.slot.format(), (job.npc, job.session)
        if job.notes is not None and engine.live_key == key:
            notes = engine.tokenize(prompt_prefix(job.lore, job.npc, fmt, job.history, job.notes))
            live = engine.llm.input_ids[: engine.llm.n_tokens]
            n = common_prefix(live, np.asarray(notes, dtype=np.intc))
            if n >= len(notes) - 1:  # the last token may merge with the text after the notes
                engine.keep(("*notes*", job.npc, hashlib.blake2b(live.tobytes(), digest_size=12).hexdigest()))
        lore = self.lore.current
        if job.npc not in lore.npcs:
            return
        history = session_history(self.sessions, job.npc, job.session)
        if not engine.prewarm(key, engine.tokenize(prompt_prefix(lore, job.npc, fmt, history)), stop=self._busy):
            self.warm.add_turn(key, job, replace=False)  # a turn is waiting: serve it first, finish later

    def _typing(self, job: Typing) -> None:
        """The prompt of the line being typed (persona, history, its notes, the line so far), processed
        into the conversation's state: the turn that follows shares all of it up to where the final
        line differs."""
        lore, engine, fmt = self.lore.current, self.slot.engine, self.slot.format()
        if job.npc not in lore.npcs:
            return
        turn = Turn(client=None, rid=None, npc=job.npc, text=job.text, sink=TurnSink(), session=job.session,
                    state=job.state)
        try:
            prompt = prompt_tokens(lore, self.sessions, turn, engine, fmt)
        except PromptError:  # too long for the context: the turn itself will say so
            return
        self._typed.pop((job.npc, job.session), None)  # the newest line last: the oldest goes first
        self._typed[(job.npc, job.session)] = (lore, prompt.notes)
        while len(self._typed) > TYPED_KEPT:
            self._typed.pop(next(iter(self._typed)))
        engine.prewarm((job.npc, job.session), prompt.tokens, stop=self._busy)

    def run_turn(self, turn: Turn) -> None:
        started = time.perf_counter()
        queue_ms = (started - turn.received) * 1000
        if turn.cancel.is_set():
            turn.sink.done(self._result(turn, None, "", queue_ms, started))
            return
        engine, fmt, lore = self.slot.engine, self.slot.format(), self.lore.current
        typed_lore, typed = self._typed.pop((turn.npc, turn.session), (None, None))
        tokens, text, history, notes = prompt_tokens(lore, self.sessions, turn, engine, fmt,
                                                     typed if typed_lore is lore else None)
        gen = engine.generate((turn.npc, turn.session), tokens, fmt, turn.sampling, turn.cancel, turn.sink.piece,
                              text=text)
        if turn.session is not None and gen.finish_reason in ("stop", "length"):
            self.sessions.append(turn.npc, turn.session, turn.text, gen.text)
            pairs = note_pairs(notes) if lore.retriever is not None else None
            self.warm.add_turn((turn.npc, turn.session), AfterTurn(turn.npc, turn.session, lore, history, pairs))
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
