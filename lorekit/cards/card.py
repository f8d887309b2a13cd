"""Character cards (SillyTavern's Character Card V2 and V3): read from JSON or PNG, written as V2.

`read_card(path)` returns a `Card` or raises `LorekitError` with one line naming the file and the
fix: a PNG without a card chunk, a V1 card (no `spec`), broken base64 or JSON, a card over 5 MB,
a field of the wrong type. It never raises anything else, whatever the bytes (a property test feeds
it hostile input).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorekit.cards import png
from lorekit.errors import LorekitError

MAX_BYTES = 5 * 1024 * 1024
V2, V3 = "chara_card_v2", "chara_card_v3"
_TEXT = ("name", "description", "personality", "scenario", "first_mes", "mes_example", "creator_notes",
         "system_prompt", "post_history_instructions", "creator", "character_version", "nickname")


@dataclass
class BookEntry:
    keys: list[str]
    content: str
    name: str = ""  # `name`, else `comment`: how the entry is shown in the card editor
    enabled: bool = True
    regex: bool = False  # V3 `use_regex`: the keys are patterns, not names
    secondary_keys: list[str] = field(default_factory=list)


@dataclass
class Card:
    spec: str
    name: str
    description: str = ""
    personality: str = ""
    scenario: str = ""
    first_mes: str = ""
    mes_example: str = ""
    creator_notes: str = ""
    system_prompt: str = ""
    post_history_instructions: str = ""
    creator: str = ""
    character_version: str = ""
    nickname: str = ""  # V3
    alternate_greetings: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    book_name: str = ""
    book: list[BookEntry] = field(default_factory=list)
    extensions: dict[str, Any] = field(default_factory=dict)

    @property
    def lorekit(self) -> dict[str, Any]:
        """What a LoreKit export stored beyond the card fields (style, refuse, dont_know, openers)."""
        value = self.extensions.get("lorekit")
        return value if isinstance(value, dict) else {}


def read_card(path: Path | str) -> Card:
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as e:
        raise LorekitError(f"{path}: cannot read the card ({e.strerror or e}) (fix: pass the path of a .json or .png card)") from None
    if size > MAX_BYTES:
        raise LorekitError(f"{path}: the card is {size / 1024 / 1024:.1f} MB, over the 5 MB limit "
                           "(fix: save the portrait smaller, or export the card as .json)")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LorekitError(f"{path}: cannot read the card ({e.strerror or e})") from None
    return parse_card(data, str(path))


def parse_card(data: bytes, source: str) -> Card:
    """A card from the bytes of a .json or .png file; `source` names the file in messages."""
    if len(data) > MAX_BYTES:
        raise LorekitError(f"{source}: the card is over the 5 MB limit (fix: save the portrait smaller, or export it as .json)")
    if data.startswith(png.SIGNATURE):
        text = _png_json(data, source)
    elif source.lower().endswith(".png"):
        raise LorekitError(f"{source}: not a PNG file (fix: pass a PNG card, or rename a JSON card to .json)")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise LorekitError(f"{source}: not UTF-8 text, so not a JSON card (fix: pass a .json or .png card)") from None
    return card_from_json(text, source)


def _png_json(data: bytes, source: str) -> str:
    try:
        texts = png.text_chunks(data)
    except png.PngError as e:
        raise LorekitError(f"{source}: {e} (fix: export the card from SillyTavern again)") from None
    keyword = "ccv3" if "ccv3" in texts else "chara" if "chara" in texts else None
    if keyword is None:
        raise LorekitError(f"{source}: this PNG has no `chara` tEXt chunk, so it holds no character card "
                           "(fix: export the character from SillyTavern as a PNG card, or pass its .json)")
    try:
        raw = base64.b64decode("".join(texts[keyword].split()), validate=True)
        return raw.decode("utf-8-sig")
    except (binascii.Error, ValueError):
        raise LorekitError(f"{source}: the `{keyword}` chunk is not valid base64 of UTF-8 JSON "
                           "(fix: export the card from SillyTavern again)") from None


def card_from_json(text: str, source: str) -> Card:
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as e:
        where = f" at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else ""
        raise LorekitError(f"{source}: broken JSON{where} (fix: export the card again, or repair the JSON)") from None
    if not isinstance(raw, dict):
        raise LorekitError(f"{source}: a card is a JSON object with `spec` and `data` (fix: pass a V2 or V3 card)")
    spec = raw.get("spec")
    if spec is None:
        raise LorekitError(f"{source}: a V1 card (no `spec`); LoreKit reads V2 and V3 cards "
                           "(fix: import it into SillyTavern and export it again, which writes V2)")
    if spec not in (V2, V3):
        raise LorekitError(f"{source}: unknown card spec `{spec[:40] if isinstance(spec, str) else type(spec).__name__}` (fix: pass a `{V2}` or `{V3}` card)")
    data = raw.get("data")
    if not isinstance(data, dict):
        raise LorekitError(f"{source}: the card has no `data` object (fix: export the card again)")
    card = Card(spec=spec, name="")
    for key in _TEXT:
        setattr(card, key, _text(data, key, source))
    card.name = " ".join(card.name.replace("[", "(").replace("]", ")").replace("|", "/").replace("#", "").split())
    if not card.name:
        raise LorekitError(f"{source}: the card has no `data.name` (fix: give the character a name)")
    card.alternate_greetings = _texts(data, "alternate_greetings", source)
    card.tags = [t.strip() for t in _texts(data, "tags", source) if t.strip()]
    extensions = data.get("extensions")
    card.extensions = extensions if isinstance(extensions, dict) else {}
    _read_book(card, data.get("character_book"), source)
    return card


def _read_book(card: Card, book: Any, source: str) -> None:
    if book is None:
        return
    if not isinstance(book, dict):
        raise LorekitError(f"{source}: `data.character_book` must be an object with `entries` (fix: repair the card)")
    card.book_name = _text(book, "name", source, "data.character_book.")
    entries = book.get("entries", [])
    if not isinstance(entries, list):
        raise LorekitError(f"{source}: `data.character_book.entries` must be a list (fix: repair the card)")
    for i, item in enumerate(entries):
        where = f"data.character_book.entries[{i}]."
        if not isinstance(item, dict):
            raise LorekitError(f"{source}: `{where[:-1]}` must be an object with `keys` and `content` (fix: repair the card)")
        name = _text(item, "name", source, where) or _text(item, "comment", source, where)
        card.book.append(BookEntry(
            keys=[k.strip() for k in _texts(item, "keys", source, where) if k.strip()],
            content=_text(item, "content", source, where), name=name.strip(),
            enabled=item.get("enabled", True) is not False, regex=item.get("use_regex") is True,
            secondary_keys=[k.strip() for k in _texts(item, "secondary_keys", source, where) if k.strip()]))


def _text(obj: dict, key: str, source: str, where: str = "data.") -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise LorekitError(f"{source}: `{where}{key}` must be text, not {type(value).__name__} (fix: repair the card)")
    return value


def _texts(obj: dict, key: str, source: str, where: str = "data.") -> list[str]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise LorekitError(f"{source}: `{where}{key}` must be a list of texts (fix: repair the card)")
    return list(value)


def card_json(card: Card) -> dict[str, Any]:
    """The card as Character Card V2 JSON."""
    entries = []
    for i, entry in enumerate(card.book):
        entries.append({"keys": entry.keys, "content": entry.content, "extensions": {}, "enabled": entry.enabled,
                        "insertion_order": i, "case_sensitive": False, "name": entry.name, "priority": 10,
                        "id": i, "comment": entry.name, "selective": bool(entry.secondary_keys),
                        "secondary_keys": entry.secondary_keys, "constant": False, "position": "before_char"})
    data = {key: getattr(card, key) for key in _TEXT if key != "nickname"}
    data.update(alternate_greetings=card.alternate_greetings, tags=card.tags, extensions=card.extensions)
    if entries:
        data["character_book"] = {"name": card.book_name, "description": "", "scan_depth": 4, "token_budget": 1024,
                                  "recursive_scanning": False, "extensions": {}, "entries": entries}
    return {"spec": V2, "spec_version": "2.0", "data": data}
