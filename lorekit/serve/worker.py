"""The one thread that runs the model: takes turns from the fair queue, builds each prompt from the
lore snapshot and the history, streams the reply, saves the history, and swaps in new models
between turns."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import TYPE_CHECKING

from lorekit import chat_formats
from lorekit.serve.scheduler import Turn

if TYPE_CHECKING:
    from lorekit.serve.app import App

log = logging.getLogger(__name__)

# Text shaped like a control token (`<end_of_turn>`, `<|turn>`, `<unused0>`): the prompt is tokenized with
# special tokens parsed, so a player typing one could forge a turn. Such text gets a look-alike bracket.
CONTROL_LIKE = re.compile(r"<(?=\|?[A-Za-z0-9_/]{1,40}\|?>)")


def neutralize(text: str) -> str:
    return CONTROL_LIKE.sub("\u2039", text)


class PromptError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class Worker(threading.Thread):
    def __init__(self, app: App):
        super().__init__(name="lorekit-model", daemon=True)
        self.app = app
        self.stopping = threading.Event()

    def run(self) -> None:
        app = self.app
        while not self.stopping.is_set():
            try:
                app.swap_pending_engine()
            except Exception:  # keep serving with whatever model is in place
                log.exception("swapping in the new model failed")
            turn = app.scheduler.next(timeout=0.02 if app.to_warm else 0.5)
            if turn is None:
                self.prewarm_one()
                continue
            try:
                self.run_turn(turn)
            except PromptError as e:
                turn.sink.error(e.code, str(e))
            except Exception as e:  # a bug or a model failure must not kill the server
                log.exception("turn %r failed", turn.rid)
                turn.sink.error("internal", f"{type(e).__name__}: {e}")
            finally:
                app.scheduler.finished(turn)

    def prewarm_one(self) -> None:
        """While idle, process one NPC's persona ahead of its first turn (start-up, reloads, new model)."""
        npc = self.app.next_to_warm()
        if npc is None:
            return
        try:
            self._prewarm(npc)
        finally:
            self.app.warming = None

    def _prewarm(self, npc: str) -> None:
        app = self.app
        lore, engine = app.lore.current, app.engine
        if npc not in lore.npcs:
            return
        fmt = chat_formats.get(app.family or engine.family)
        marker = "\x00"
        text = fmt.render([{"role": "system", "content": lore.prompts[npc]}, {"role": "user", "content": marker}])
        t0 = time.perf_counter()
        try:
            done = engine.prewarm((npc, "*persona*"), engine.tokenize(text.split(marker)[0]),
                                  stop=lambda: app.scheduler.depth() > 0 or self.stopping.is_set())
        except Exception:  # warming is an optimisation: never let it stop the server
            log.exception("pre-processing the persona of %s failed", npc)
            return
        if not done:  # a turn is waiting: serve it first, finish this persona later
            app._warm([npc], first=True)
            return
        log.debug("persona of %s ready (%.0f ms)", npc, (time.perf_counter() - t0) * 1000)

    def run_turn(self, turn: Turn) -> None:
        app, started = self.app, time.perf_counter()
        queue_ms = (started - turn.received) * 1000
        if turn.cancel.is_set():
            turn.sink.done(self._result(turn, None, "", queue_ms, started))
            return
        engine = app.engine
        fmt = chat_formats.get(app.family or engine.family)
        tokens, history = self.prompt_tokens(turn, engine, fmt)
        gen = engine.generate((turn.npc, turn.session), tokens, fmt, turn.sampling, turn.cancel, turn.sink.piece)
        if turn.session is not None and gen.finish_reason in ("stop", "length"):
            app.sessions.append(turn.npc, turn.session, turn.text, gen.text)
        turn.sink.done(self._result(turn, gen, gen.text, queue_ms, started))

    def prompt_tokens(self, turn: Turn, engine, fmt) -> tuple[list[int], list[dict]]:
        lore = self.app.lore.current
        if turn.npc not in lore.npcs:
            known = ", ".join(lore.npcs)
            raise PromptError("unknown_npc", f"no NPC {turn.npc!r} (known: {known})")
        block = lore.state_block(turn.npc, turn.state)
        user = neutralize(f"{block}\n\n{turn.text}" if block else turn.text)
        if turn.messages is not None:
            history = [{"role": m["role"], "content": neutralize(m["content"])} for m in turn.messages
                       if m["role"] in ("user", "assistant")]
        else:
            history = []
            for t in self.app.sessions.history(turn.npc, turn.session):
                history += [{"role": "user", "content": neutralize(t["user"])},
                            {"role": "assistant", "content": neutralize(t["npc"])}]
        system = {"role": "system", "content": lore.prompts[turn.npc]}
        budget = engine.n_ctx - turn.sampling.max_tokens
        while True:
            messages = [system, *history, {"role": "user", "content": user}]
            tokens = engine.tokenize(fmt.render(messages, add_generation_prompt=True))
            if len(tokens) <= budget:
                return tokens, history
            if not history:
                raise PromptError("context_full", f"the system prompt and the player's line need {len(tokens)} "
                                  f"tokens; the context holds {engine.n_ctx} minus max_tokens {turn.sampling.max_tokens}")
            history = history[2:]  # drop the oldest exchange

    def _result(self, turn: Turn, gen, text: str, queue_ms: float, started: float) -> dict:
        now = time.perf_counter()
        finish = gen.finish_reason if gen else "cancelled"
        first = (gen.first_piece_at - started) * 1000 if gen and gen.first_piece_at else None
        total_s = now - turn.received
        result = {
            "npc": turn.npc, "session": turn.session, "text": text, "finish_reason": finish,
            "tokens": {"prompt": gen.prompt_tokens if gen else 0, "cached": gen.cached_tokens if gen else 0,
                       "completion": gen.completion_tokens if gen else 0},
            "timings": {"queue_ms": round(queue_ms, 1), "prompt_ms": round(gen.prompt_ms, 1) if gen else 0.0,
                        "first_token_ms": round(first, 1) if first is not None else None,
                        "total_ms": round(total_s * 1000, 1), "tokens_per_s": gen.tokens_per_s if gen else 0.0},
        }
        self.app.metrics.turn_done(finish, result["tokens"]["prompt"], result["tokens"]["cached"],
                                   result["tokens"]["completion"], total_s, first / 1000 if first is not None else None)
        return result
