"""A turn's prompt as tokens: the layout comes from `lorekit/prompt.py` (shared with compile, train,
export and eval); this module adds what only a server has: the session's history, the retrieved lore
notes, control-token neutralizing and the context budget. Notes and game state go in the LAST user
turn, in front of the player's line (never in the system turn, never in the stored history).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

from lorekit.grounding.notes import note_pairs
from lorekit.prompt import conversation

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


class Prompt(NamedTuple):
    tokens: list[int]
    text: str  # what `tokens` are the tokens of (a remote engine is sent this)
    history: list[dict]  # the exchanges that fit
    notes: list  # the lore notes given


def prompt_tokens(lore: LoreSnapshot, sessions: SessionStore, turn: Turn, engine: Engine,
                  fmt: ChatFormat, typed: list | None = None) -> Prompt:
    """The prompt of a turn (tokens, text, the history that fits, the lore notes): the system turn, the
    history (the turn's own `messages` over HTTP, else the stored session), then the notes, the state
    block and the player's line in one user turn, laid out by `lorekit.prompt`. The oldest exchanges
    are left out until the prompt and `max_tokens` fit the context.

    `typed`: the notes the same NPC's retrieval gave the line while it was being typed (protocol
    `typing`, same lore snapshot). When the whole line's notes start with the same note (the one the
    model reads most), those are kept: their tokens were processed while the player typed, so only the
    rest of the line is left. On the sample world's 307 eval questions with a last word missing, the
    first note stayed the same for 304, all notes for 253."""
    if turn.npc not in lore.npcs:
        known = ", ".join(lore.npcs)
        raise PromptError("unknown_npc", f"no NPC {turn.npc!r} (known: {known})")
    if turn.messages is not None:
        history = [{"role": m["role"], "content": neutralize(m["content"])} for m in turn.messages
                   if m["role"] in ("user", "assistant")]
    else:
        history = session_history(sessions, turn.npc, turn.session)
    notes = lore.notes_for(turn.npc, turn.text, history)
    if typed and notes and typed[0].id == notes[0].id:
        notes = typed
    pairs = note_pairs(notes) if notes is not None else None
    budget = engine.n_ctx - turn.sampling.max_tokens
    while True:
        messages = conversation(lore.prompts[turn.npc], history, turn.text, turn.state, pairs)
        messages[-1]["content"] = neutralize(messages[-1]["content"])  # player text, state and notes alike
        text = fmt.render(messages, add_generation_prompt=True)
        tokens = engine.tokenize(text)
        if len(tokens) <= budget:
            return Prompt(tokens, text, history, notes or [])
        if not history:
            raise PromptError("context_full", f"the system prompt, the lore notes and the player's line need "
                              f"{len(tokens)} tokens; the context holds {engine.n_ctx} minus max_tokens "
                              f"{turn.sampling.max_tokens}")
        history = history[2:]  # drop the oldest exchange


def session_history(sessions: SessionStore, npc: str, session: str) -> list[dict]:
    """A stored conversation as chat messages, player and NPC text neutralized."""
    history = []
    for t in sessions.history(npc, session):
        history += [{"role": "user", "content": neutralize(t["user"])},
                    {"role": "assistant", "content": neutralize(t["npc"])}]
    return history


MARK = "\x00"  # where the player's words would go (never in a prompt: tokenized text holds no NUL)


def prompt_prefix(lore: LoreSnapshot, npc: str, fmt: ChatFormat, history: list[dict] | tuple = (),
                  notes: list[tuple[str, bool]] | None = None) -> str:
    """The text a prompt of `npc` after `history` starts with, through the lore notes `notes` ((text,
    secret) pairs); what the worker processes ahead of a turn. Without `notes` (and grounding on): through
    the block of a line that asks about nothing (greetings), whose header every other block shares."""
    if notes is None and lore.retriever is not None:
        notes = []
    messages = conversation(lore.prompts[npc], list(history), MARK, None, notes)
    messages[-1]["content"] = neutralize(messages[-1]["content"])  # as `prompt_tokens` does
    return fmt.render(messages).split(MARK)[0].rstrip(" ")


def persona_prefix(lore: LoreSnapshot, npc: str, fmt: ChatFormat) -> str:
    """What the worker pre-processes for `npc` while idle: the persona (and, with grounding on, the notes
    header), so that a first turn processes only its own notes and line."""
    return prompt_prefix(lore, npc, fmt)
