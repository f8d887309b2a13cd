"""Invented names for "I don't know" rows: seeded syllables, checked to appear nowhere in the vault."""

from __future__ import annotations

import random
from collections.abc import Callable

_START = ["br", "c", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "qu", "r", "s", "st", "t", "th", "v", "w", "z"]
_VOWEL = ["a", "e", "i", "o", "u", "ae", "ei", "ou", "y"]
_END = ["", "n", "r", "l", "s", "th", "nd", "rk", "m", "x", "sh"]
_PLACES = ["Hollow", "Reach", "Keep", "Ford", "Spire", "Marsh", "Vale", "Crossing"]
_GROUPS = ["Order", "Circle", "Company", "Brotherhood", "House"]
_FIXED = {"the", "of", *_PLACES, *_GROUPS}


def _word(rng: random.Random, syllables: int) -> str:
    word = "".join(rng.choice(_START) + rng.choice(_VOWEL) for _ in range(syllables)) + rng.choice(_END)
    return word.capitalize()


def invent(count: int, seed: str, taken: Callable[[str], bool]) -> list[str]:
    """`count` distinct names such as "Drelmor Vask", "Thaun Hollow" or "the Order of Quem"."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()  # `out` as a set: a whole world asks for tens of thousands of names
    tries = 0
    while len(out) < count and tries < count * 50:
        tries += 1
        shape = rng.randrange(4)
        if shape == 0:
            name = f"{_word(rng, 2)} {_word(rng, rng.choice([1, 2]))}"
        elif shape == 1:
            name = f"{_word(rng, 2)} {rng.choice(_PLACES)}"
        elif shape == 2:
            name = f"the {rng.choice(_GROUPS)} of {_word(rng, 2)}"
        else:
            name = _word(rng, 3)
        if name not in seen and not taken(name) and not any(taken(w) for w in name.split() if w not in _FIXED):
            out.append(name)
            seen.add(name)
    return out
