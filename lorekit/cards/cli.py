"""`lorekit cards LORE_DIR --out DIR`: every NPC as a SillyTavern character card (.json and .png)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lore_dir", type=Path, metavar="LORE_DIR", help="folder of markdown pages")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write the cards to")


def command(args: argparse.Namespace) -> int:
    from lorekit.cards.exporter import export_cards

    result = export_cards(args.lore_dir, args.out)
    for c in result.cards:
        image = f"portrait {c.portrait}" if c.portrait else "plain card image"
        print(f"wrote {c.json_path} and {c.png_path} ({c.entries} book entries, {image})")
    return 0
