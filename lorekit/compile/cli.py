"""`lorekit compile LORE_DIR --out OUT`: validate, then write the dataset and print a summary."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lore_dir", type=Path, metavar="LORE_DIR", help="folder of markdown pages")
    parser.add_argument("--out", type=Path, default=Path("build"), help="build folder (default: build)")
    parser.add_argument("--format", choices=["sharegpt", "openai"], help="row format (default: sharegpt)")
    parser.add_argument("--seed", type=int, help="seed for every choice (default from lorekit.toml, else 1234)")
    parser.add_argument("--phrasings-per-fact", type=int, help="train rows per fact (default 5)")
    parser.add_argument("--no-cache", action="store_true", help="ignore and do not write OUT/.cache")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only errors")


def command(args: argparse.Namespace) -> int:
    from lorekit.compile import ValidationFailed, load_config, run
    from lorekit.compile.report import summary

    overrides = {"format": args.format, "seed": args.seed, "phrasings_per_fact": args.phrasings_per_fact,
                 "cache": False if args.no_cache else None}
    cfg = load_config(args.lore_dir, overrides)
    try:
        result = run(args.lore_dir, args.out, cfg)
    except ValidationFailed as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        raise
    if not args.quiet:
        print(f"compiled {args.lore_dir} -> {result.out / 'dataset'}")
        print(summary(result.report, result.wall_s))
    return 0
