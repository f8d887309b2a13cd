"""Chat formats per model family: the one place that knows how a conversation becomes tokens-as-text.

Training (label masks), export (templates, stop tokens), the runtime (prompts) and evaluation all
render through here, so a model is always prompted the way it was trained.

Messages are dicts `{"role": "system" | "user" | "assistant", "content": str}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]
Message = dict[str, str]


@dataclass(frozen=True)
class ChatFormat:
    """One family's turn markup. `end_of_turn` must be a stop token everywhere the model runs."""

    name: str
    bos: str
    turn_open: str  # followed by the role name and "\n"
    end_of_turn: str
    model_role: str
    native_system: bool  # False: the system text is folded into the first user turn

    @property
    def stop(self) -> tuple[str, ...]:
        return (self.end_of_turn,)

    def segments(self, messages: list[Message], add_generation_prompt: bool = False) -> list[tuple[str, bool]]:
        """Render as (text, trainable) pieces: trainable pieces are the model's replies with their
        end-of-turn token, which is what the loss is computed on."""
        messages = self._fold_system(messages)
        out: list[tuple[str, bool]] = [(self.bos, False)]
        for msg in messages:
            role = self._role(msg["role"])
            if msg["role"] == "assistant":
                out.append((f"{self.turn_open}{role}\n", False))
                out.append((f"{msg['content']}{self.end_of_turn}", True))
                out.append(("\n", False))
            else:
                out.append((f"{self.turn_open}{role}\n{msg['content']}{self.end_of_turn}\n", False))
        if add_generation_prompt:
            out.append((f"{self.turn_open}{self.model_role}\n", False))
        return out

    def render(self, messages: list[Message], add_generation_prompt: bool = False) -> str:
        return "".join(text for text, _ in self.segments(messages, add_generation_prompt))

    def _role(self, role: str) -> str:
        return self.model_role if role == "assistant" else role

    def _fold_system(self, messages: list[Message]) -> list[Message]:
        if self.native_system or not messages or messages[0]["role"] != "system":
            return list(messages)
        system, rest = messages[0]["content"], list(messages[1:])
        if rest and rest[0]["role"] == "user":
            rest[0] = {"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}
        else:
            rest.insert(0, {"role": "user", "content": system})
        return rest


GEMMA3 = ChatFormat(
    name="gemma3",
    bos="<bos>",
    turn_open="<start_of_turn>",
    end_of_turn="<end_of_turn>",
    model_role="model",
    native_system=False,
)

# Gemma 4 with thinking off: no `<|think|>` in the system turn.
GEMMA4 = ChatFormat(
    name="gemma4",
    bos="<bos>",
    turn_open="<|turn>",
    end_of_turn="<turn|>",
    model_role="model",
    native_system=True,
)

FORMATS: dict[str, ChatFormat] = {f.name: f for f in (GEMMA3, GEMMA4)}


def get(name: str) -> ChatFormat:
    try:
        return FORMATS[name]
    except KeyError:
        from lorekit.errors import LorekitError

        raise LorekitError(f"unknown chat format {name!r} (known: {', '.join(FORMATS)})") from None

