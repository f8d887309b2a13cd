"""The dataset row contract: one home for reading and writing rows in both formats.

A row is one JSON object per line of `train.jsonl` / `eval.jsonl`, in one of two formats:

    sharegpt: {"conversations": [{"from": "system"|"human"|"gpt", "value": str}, ...], "meta": {...}}
    openai:   {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...], "meta": {...}}

The turns hold the exact text the model sees (retrieved lore notes and game state included, laid out
by `lorekit.prompt`); `meta` says what the row teaches: npc, kind, entities, facts, expect, template,
and for grounded rows the plain `question` and the `notes` given. Train, eval, build keys and any
outside tool read rows through `messages()`, whatever the format.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lorekit.errors import LorekitError

FORMATS = ("sharegpt", "openai")
SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}  # ShareGPT `from` -> chat role
CHAT_ROLES = {v: k for k, v in SHAREGPT_ROLES.items()}
Message = dict[str, str]


def turns_key(row: dict[str, Any]) -> str:
    """The key that holds a row's turns: `conversations` (ShareGPT) or `messages` (OpenAI)."""
    if isinstance(row.get("conversations"), list):
        return "conversations"
    if isinstance(row.get("messages"), list):
        return "messages"
    raise ValueError("a row needs a `conversations` (ShareGPT) or `messages` (OpenAI) list")


def as_messages(turns: list[dict[str, Any]]) -> list[Message]:
    """Turns of either format -> chat messages `{"role", "content"}`."""
    out = []
    for t in turns:
        if "from" in t:
            out.append({"role": SHAREGPT_ROLES[t["from"]], "content": _text(t["value"])})
        elif t.get("role") in CHAT_ROLES:
            out.append({"role": t["role"], "content": _text(t["content"])})
        else:
            raise ValueError(f"a turn needs `from`/`value` or `role`/`content`, got {sorted(t)}")
    return out


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"turn text must be a string, got {type(value).__name__}")
    return value


def messages(row: dict[str, Any]) -> list[Message]:
    """A row's conversation as chat messages, whatever its format."""
    return as_messages(row[turns_key(row)])


def to_row(msgs: list[Message], meta: dict[str, Any], fmt: str = "sharegpt") -> dict[str, Any]:
    """Chat messages + meta -> a row in `fmt`."""
    if fmt == "openai":
        return {"messages": [dict(m) for m in msgs], "meta": meta}
    return {"conversations": [{"from": CHAT_ROLES[m["role"]], "value": m["content"]} for m in msgs], "meta": meta}


def read(path: Path | str, need_answer: bool = True) -> list[tuple[int, dict[str, Any]]]:
    """(line number, row) of every row of a jsonl file, either format; a broken line is a one-line
    error naming the file and line. With `need_answer`, a row must have an assistant turn."""
    path = Path(path)
    if not path.is_file():
        raise LorekitError(f"{path}: missing; run `lorekit compile LORE_DIR --out {path.parent.parent}` first")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LorekitError(f"{path}:{n}: not a dataset row (not JSON: {e.msg}); rebuild it with `lorekit compile`") from None
        try:
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
            msgs = messages(row)
            if need_answer and not any(m["role"] == "assistant" for m in msgs):
                raise ValueError("no assistant (`gpt`) turn to learn from")
        except (ValueError, KeyError, TypeError) as e:
            raise LorekitError(f"{path}:{n}: not a dataset row ({e}); rebuild it with `lorekit compile`") from None
        rows.append((n, row))
    return rows


def system_text(row: dict[str, Any]) -> str:
    """The row's system turn ("" when it has none)."""
    msgs = messages(row)
    return msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
