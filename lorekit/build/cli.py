"""`lorekit build LORE_DIR`: the whole pipeline, incremental."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lorekit.build.config import STAGES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lore_dir", type=Path, help="folder of markdown lore pages")
    parser.add_argument("--out", help="build folder (default: build)")
    parser.add_argument("--from", dest="from_stage", choices=STAGES, help="redo this stage and all after it")
    parser.add_argument("--to", dest="to_stage", choices=STAGES, help="stop after this stage")
    parser.add_argument("--force", action="store_true", help="redo every stage, even if up to date")
    parser.add_argument("--no-eval", action="store_true", help="skip the evaluation stage")
    parser.add_argument("--model", help="model profile, local folder or hub id (default: gemma3-270m)")
    parser.add_argument("--epochs", type=float, help="training epochs (overrides lorekit.toml [train])")


def command(args: argparse.Namespace) -> int:
    from lorekit import build
    from lorekit.build.config import BuildConfig
    from lorekit.config import load

    cfg = load(BuildConfig, "build", args.lore_dir, {"out": args.out, "eval": False if args.no_eval else None})
    started = time.perf_counter()
    result = build.run(
        args.lore_dir,
        cfg,
        from_stage=args.from_stage,
        to_stage=args.to_stage,
        force=args.force,
        overrides={"train": {"model": args.model, "epochs": args.epochs}},
        on_stage=_progress,
    )
    total = time.perf_counter() - started
    _summary(result, args.lore_dir, total)
    return 0


def _progress(name: str, event: str) -> None:
    if event == "start":
        print(f"==> {name}", file=sys.stderr, flush=True)
    elif event == "skip":
        print(f"==> {name}: up to date", file=sys.stderr, flush=True)


def _summary(result, lore_dir: Path, total: float) -> None:
    print()
    if not result.built:
        print(f"Nothing to do: every stage is up to date ({total:.1f} s).")
    print(f"{'stage':<8} {'status':<11} {'time':>8}  outputs")
    for s in result.stages:
        took = f"{s.seconds:.1f} s" if s.status == "built" else "-"
        print(f"{s.name:<8} {s.status:<11} {took:>8}  {', '.join(str(result.out / o) for o in s.outputs)}")
    print(f"total {total:.1f} s; build folder: {result.out}")
    report = result.out / "eval" / "report.html"
    if report.exists():
        _verdict(result.out / "eval" / "report.json")
        print(f"evaluation report: {report}")
    print(f"\nNext: lorekit serve {lore_dir} --out {result.out}")


def _verdict(path: Path) -> None:
    """The evaluation's verdict and advice, so a modder sees what training achieved without opening the report."""
    import json

    try:
        verdict = json.loads(path.read_text(encoding="utf-8"))["verdict"]
    except (OSError, ValueError, KeyError):
        return
    print(f"evaluation: {verdict['status']} ({verdict['headline']})")
    for line in verdict.get("advice", []):
        print(f"  - {line}")
