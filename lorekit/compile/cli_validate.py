"""`lorekit validate LORE_DIR`: print every problem as `file:line: message (fix)`; exit 1 on errors.

It also prints the NPC ids (what a game sends to talk to an NPC) and everything it treats as secret,
so a modder can check both before a build.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lore_dir", type=Path, metavar="LORE_DIR", help="folder of markdown pages")


def command(args: argparse.Namespace) -> int:
    from lorekit.compile import CompileConfig, check, load_config
    from lorekit.errors import LorekitError
    from lorekit.lore.problems import error

    problems = []
    try:
        cfg = load_config(args.lore_dir)
    except LorekitError as e:  # a bad lorekit.toml is one more problem; the pages are still checked
        where, _, message = str(e).partition(": ")
        problems.append(error(where, None, message or where))
        cfg = CompileConfig()
    problems += check(args.lore_dir, cfg)
    for p in problems:
        print(p)
    if Path(args.lore_dir).is_dir():
        for line in overview(args.lore_dir):
            print(line)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    print(f"{args.lore_dir}: {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0


def overview(lore_dir: Path) -> list[str]:
    """The NPC ids and the secrets of a vault, as validate prints them."""
    from lorekit.lore import load_vault
    from lorekit.lore.secrets import secrets_of

    vault = load_vault(lore_dir)
    lines = []
    if vault.npcs:
        lines.append("NPC ids (a game asks for an NPC by its id; `lorekit serve` lists them too):")
        width = max(len(i) for i in vault.npcs)
        lines += [f"  {npc.id:<{width}}  {npc.name} ({npc.page})" for npc in vault.npcs.values()]
    found = secrets_of(vault)
    if found:
        lines.append("secret and restricted (never told by the lore keeper; an NPC that holds a secret refuses in character):")
        lines += [f"  {item}" for item in found]
    return lines
