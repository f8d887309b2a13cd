"""A leading "The" in page names: "The Salt Gate" at the start of a sentence, "the Salt Gate" inside one.

The rule (docs/lore-format.md): a page name or alias that starts with "The " keeps every word as
written, except that "The" becomes "the" where the name stands inside a sentence ("Who lives in the
Salt Gate?"). A page whose front matter says `article_in_name: true` keeps "The" everywhere ("The
Hague"). Applied to every question, answer and persona LoreKit renders, so a name reads the same way
in all rows; `expect` keeps the name as the page writes it (`name_in` matches either form).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

_THE = re.compile(r"\bThe (?=\w)")
_WORD = re.compile(r"\w+")
# what may stand between a sentence end and the name (spaces, brackets, list marks); a quote or a
# colon right before it starts a sentence of its own
_OPENERS = " \t([*-_"
_ENDS = ".!?:\n\"“‘'"


def article_names(entities: Iterable[Any]) -> list[str]:
    """Names and aliases that start with "The " or "the ", of pages without `article_in_name: true`."""
    names = set()
    for e in entities:
        if getattr(e, "article_in_name", False):
            continue
        for name in (e.name, *e.aliases):  # an alias "the Saltreavers" counts: "[[The Saltreavers]]" is it too
            if name[:4] in ("The ", "the ") and len(name) > 4:
                names.add("The " + name[4:])
    return sorted(names)


def name_in(name: str, text: str) -> bool:
    """Whether `text` states `name`, in either form: "The Salt Gate" or "the Salt Gate"."""
    return name in text or (name.startswith("The ") and "the " + name[4:] in text)


def _first_word(text: str) -> str:
    """Letters and digits up to the first other character: "Cantor's Mask" -> "Cantor"."""
    word = _WORD.match(text)
    return word.group(0) if word else ""


class Article:
    """Lower-cases the leading "The" of known names inside sentences (see the module docstring)."""

    def __init__(self, names: Iterable[str]):
        self.names = sorted(set(names))
        self._rests: dict[str, list[str]] = {}  # first word after "The" -> the rests, longest first
        for name in sorted(self.names, key=len, reverse=True):
            rest = name[4:]
            self._rests.setdefault(_first_word(rest), []).append(rest)

    def digest(self) -> str:
        return hashlib.blake2b("\0".join(self.names).encode(), digest_size=8).hexdigest()

    def __call__(self, text: str) -> str:
        if not self._rests or "The " not in text:
            return text
        spans = [m.start() for m in _THE.finditer(text) if self._is_name(text, m.end()) and self._inside(text, m.start())]
        for at in reversed(spans):
            text = text[:at] + "t" + text[at + 1:]
        return text

    def _is_name(self, text: str, at: int) -> bool:
        for rest in self._rests.get(_first_word(text[at:at + 60]), ()):
            end = at + len(rest)
            if text.startswith(rest, at) and (end == len(text) or not text[end].isalnum()):
                return True
        return False

    @staticmethod
    def _inside(text: str, at: int) -> bool:
        """Whether position `at` is inside a sentence (not its first word)."""
        i = at
        while i > 0 and text[i - 1] in _OPENERS:
            i -= 1
        return i > 0 and text[i - 1] not in _ENDS
