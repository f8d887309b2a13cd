"""SillyTavern character cards, both ways.

    lorekit import-card CARD LORE_DIR [--force]   # a .json or .png card -> an NPC page and lore pages
    lorekit cards LORE_DIR --out DIR              # every NPC -> DIR/<npc-id>.json and DIR/<npc-id>.png

`card` reads and writes the card format (V2, V3 on import), `png` the PNG chunks, `importer` turns a
card into pages, `exporter` an NPC into a card. See docs/cards.md.
"""

from lorekit.cards.card import BookEntry, Card, card_json, parse_card, read_card

__all__ = ["BookEntry", "Card", "card_json", "parse_card", "read_card"]
