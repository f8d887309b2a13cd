"""`lorekit import-card CARD LORE_DIR [--force]`: a SillyTavern card (.json or .png) -> NPC and lore pages."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("card", type=Path, metavar="CARD", help="a Character Card V2/V3: .json, or .png with a `chara` chunk")
    parser.add_argument("lore_dir", type=Path, metavar="LORE_DIR", help="folder of markdown pages to write into")
    parser.add_argument("--force", action="store_true", help="overwrite pages that exist already")


def command(args: argparse.Namespace) -> int:
    from lorekit.cards.importer import import_card

    result = import_card(args.card, args.lore_dir, force=args.force)
    for w in result.writes:
        print(w.what)
    for note in result.notes:
        print(f"note: {note}")
    print(f"next: lorekit validate {args.lore_dir}")
    return 0
