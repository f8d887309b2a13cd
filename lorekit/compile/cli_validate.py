"""`lorekit validate LORE_DIR`: print every problem as `file:line: message (fix)`; exit 1 on errors."""

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
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    print(f"{args.lore_dir}: {errors} error(s), {warnings} warning(s)")
    return 1 if errors else 0
