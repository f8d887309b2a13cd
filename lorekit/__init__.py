"""LoreKit: wiki-style markdown lore in, in-character NPCs on llama.cpp out."""

__version__ = "0.1.0"
