"""The text the model sees for a turn: persona, history, game state and the player's line, as tokens.

These two functions are the server's whole prompt assembly; `lorekit/prompt.py` (shared with
compile, export and eval) is meant to take their bodies over, so their signatures are the seam.
The game state goes in the LAST user turn, in front of the player's line (never in the system
turn, never in the stored history).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lorekit.chat_formats import ChatFormat
    from lorekit.serve.engine import Engine
    from lorekit.serve.personas import LoreSnapshot
    from lorekit.serve.scheduler import Turn
    from lorekit.serve.sessions import SessionStore

# Text shaped like a control token (`<end_of_turn>`, `<|turn>`, `<unused0>`): the prompt is tokenized with
# special tokens parsed, so a player typing one could forge a turn. Such text gets a look-alike bracket.
CONTROL_LIKE = re.compile(r"<(?=\|?[A-Za-z0-9_/]{1,40}\|?>)")


def neutralize(text: str) -> str:
    return CONTROL_LIKE.sub("\u2039", text)


class PromptError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def prompt_tokens(lore: LoreSnapshot, sessions: SessionStore, turn: Turn, engine: Engine,
                  fmt: ChatFormat) -> tuple[list[int], list[dict]]:
    """(prompt tokens, the history messages that fit): system turn, history (the turn's own `messages`
    over HTTP, else the stored session), then the state block and the player's line in one user turn.
    The oldest exchanges are left out until the prompt and `max_tokens` fit the context."""
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
        for t in sessions.history(turn.npc, turn.session):
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


def persona_prefix(lore: LoreSnapshot, npc: str, fmt: ChatFormat) -> str:
    """The text every prompt of `npc` starts with (up to where the first user text would go): what the
    worker pre-processes while idle, so that a first turn only processes the player's line."""
    marker = "\x00"
    text = fmt.render([{"role": "system", "content": lore.prompts[npc]}, {"role": "user", "content": marker}])
    return text.split(marker)[0]
