"""The one request model: what a client may ask of a turn, checked once for every transport.

The game protocol, HTTP and `lorekit chat` all read JSON and sampling fields through here, so the
same input gets the same answer (code and wording) whichever way it arrives. Errors carry a
protocol error code (`runtime/PROTOCOL.md`); each transport only decides how to send them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

MAX_TEXT, MAX_STATE, MAX_TOKENS, MAX_DEPTH = 4000, 8000, 1024, 64


class RequestError(Exception):
    """A request the server will not run: `code` is the protocol's error code, the message one line."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Sampling:
    max_tokens: int = 200
    temperature: float = 0.3  # the `[serve]` defaults (lorekit/serve/config.py)
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.0


# -- JSON --------------------------------------------------------------------------------------

def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def parse_json(data: bytes | str, what: str = "the line") -> Any:
    """Strict JSON: valid UTF-8, no NaN/Infinity, nested at most MAX_DEPTH deep; else `bad_json`."""
    try:
        value = json.loads(data, parse_constant=_no_constant)
    except UnicodeDecodeError as e:
        raise RequestError("bad_json", f"{what} is not UTF-8 ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise RequestError("bad_json", f"{what} is nested more than {MAX_DEPTH} levels deep") from None
    except ValueError as e:
        raise RequestError("bad_json", f"{what} is not valid JSON: {e}") from None
    if depth(value) > MAX_DEPTH:
        raise RequestError("bad_json", f"{what} is nested more than {MAX_DEPTH} levels deep")
    return value


def depth(value: Any) -> int:
    """How deeply arrays and objects nest (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def is_unicode(text: str) -> bool:
    """False for a string holding a lone surrogate (JSON lets `"\\ud800"` through; UTF-8 cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def dumps(event: Any) -> bytes:
    """An event as one line of UTF-8 JSON; never fails on text a client sent (escaped if need be)."""
    try:
        return json.dumps(event, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(event).encode("ascii")


# -- fields ------------------------------------------------------------------------------------

def check_sampling(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The sampling fields present in `fields` (`max_tokens`, `temperature`), checked."""
    out: dict[str, Any] = {}
    if "max_tokens" in fields:
        value = fields["max_tokens"]
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TOKENS:
            raise RequestError("bad_request", f"`max_tokens` must be an integer from 1 to {MAX_TOKENS}")
        out["max_tokens"] = value
    if "temperature" in fields:
        value = fields["temperature"]
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 2:
            raise RequestError("bad_request", "`temperature` must be a number from 0 to 2")
        out["temperature"] = float(value)
    return out


def sampling(fields: Mapping[str, Any], cfg: Any) -> Sampling:
    """A turn's sampling: the server's `[serve]` defaults, overridden by the checked request fields."""
    base = Sampling(cfg.max_tokens, float(cfg.temperature), cfg.top_p, cfg.top_k, cfg.repeat_penalty)
    return replace(base, **check_sampling(fields))


def player_text(value: Any, field: str = "text") -> str:
    """The player's line: a string of 1-MAX_TEXT characters of valid Unicode."""
    if not isinstance(value, str):
        raise RequestError("bad_request", f"`{field}` must be the player's line (a string)")
    if not 1 <= len(value) <= MAX_TEXT:
        raise RequestError("bad_request", f"`{field}` must be 1-{MAX_TEXT} characters, got {len(value)}")
    if not is_unicode(value):
        raise RequestError("bad_request", f"`{field}` holds a lone surrogate escape (\\ud800-\\udfff); "
                                          "send valid Unicode")
    return value


def game_state(value: Any, field: str = "state") -> dict | None:
    """This turn's game state: absent, or a JSON object of at most MAX_STATE characters."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RequestError("bad_request", f"`{field}` must be a JSON object of at most {MAX_STATE} characters")
    if len(json.dumps(value)) > MAX_STATE:  # counted as re-encoded with ASCII escapes, as documented
        raise RequestError("bad_request", f"`{field}` must be a JSON object of at most {MAX_STATE} characters")
    if not is_unicode(json.dumps(value, ensure_ascii=False)):
        raise RequestError("bad_request", f"`{field}` holds a lone surrogate escape (\\ud800-\\udfff); "
                                          "send valid Unicode")
    return value or None
