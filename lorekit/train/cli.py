"""`lorekit train OUT`: the CLI edge of lorekit.train (argument parsing, progress bar, printing)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", nargs="?", default="build", type=Path,
                        help="build folder holding dataset/ (default: build)")
    parser.add_argument("--model", help="profile name (gemma3-270m, gemma-4-e2b, ...), model folder or hub id")
    parser.add_argument("--backend", choices=["auto", "unsloth", "transformers"])
    parser.add_argument("--epochs", type=float)
    parser.add_argument("--max-steps", type=int, dest="max_steps", help="stop after this many optimizer steps")
    parser.add_argument("--lr", type=float, help="peak learning rate (default 2e-4)")
    parser.add_argument("--batch-size", type=int, dest="batch_size")
    parser.add_argument("--grad-accum", type=int, dest="grad_accum")
    parser.add_argument("--lora-r", type=int, dest="lora_r")
    parser.add_argument("--max-length", type=int, dest="max_length")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--parallel", choices=["ddp", "fsdp"],
                        help="under torchrun: ddp (a model copy per GPU, default) or fsdp (the model sharded)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint a stopped run saved")
    parser.add_argument("--lore", type=Path, help="lore folder whose lorekit.toml to read "
                        "(default: the one recorded in OUT/dataset/report.json)")


FLAGS = ("model", "backend", "epochs", "max_steps", "lr", "batch_size", "grad_accum", "lora_r", "max_length", "seed",
         "parallel")


def command(args: argparse.Namespace) -> int:
    import logging

    from tqdm import tqdm

    from lorekit import config
    from lorekit.train import distributed
    from lorekit.train.config import TrainConfig

    world = distributed.from_env()
    if not world.main:  # under torchrun, rank 0 speaks for all
        logging.getLogger().setLevel(logging.WARNING)

    lore = args.lore or config.lore_dir_of(args.out)
    cfg = config.load(TrainConfig, "train", lore, {k: getattr(args, k) for k in FLAGS})
    bar = None
    last_eval = ["-"]

    def on_step(rec: dict) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=rec["total_steps"], initial=rec["step"] - 1, unit="step", dynamic_ncols=True)
        bar.set_postfix_str(f"loss {rec['loss']:.3f} eval {last_eval[0]} {rec['tokens_per_s']:.0f} tok/s")
        bar.update(1)

    def on_log(rec: dict) -> None:
        if "eval_loss" in rec:
            last_eval[0] = f"{rec['eval_loss']:.3f}"

    from lorekit.train import loop, recipe

    on_choice = print_choice if args.verbose else None
    try:
        result = recipe.run(args.out, cfg, resume=args.resume, on_log=on_log, on_step=on_step, on_choice=on_choice)
    except loop.Interrupted as stopped:
        if bar:
            bar.close()
        if world.main:
            print(f"{stopped}; checkpoint saved. Continue with: lorekit train {args.out} --resume"
                  + (" (under torchrun with any number of processes, or in one)" if world.size > 1 else ""))
        return 130
    if bar:
        bar.close()
    if not world.main:
        return 0
    eval_txt = f", best eval loss {result.eval_loss:.3f}" if result.eval_loss is not None else ""
    print(f"trained {result.steps} steps in {result.wall_s:.0f} s ({result.backend}){eval_txt}; "
          f"adapter in {result.adapter}, curves in {args.out / 'train' / 'loss.png'}")
    return 0


def print_choice(choice) -> None:
    """The backend choice and each candidate's estimate (`lorekit train -v`)."""
    print(f"backend: {choice.candidate} ({choice.reason})")
    print(f"  {choice.tokens:,} tokens to train; figures for {choice.key}")
    for e in choice.estimates:
        if e.wall_s is None:
            figures = "no measurement"
        else:
            figures = f"~{e.wall_s:.0f} s = {e.startup_s:.0f} s start-up + {e.tokens_per_s:,.0f} tokens/s"
        note = f" [cannot run: {e.why_not}]" if not e.available else ""
        print(f"  {e.candidate:<17} {figures}{note}")
        if e.measured:
            print(f"  {'':<17} measured: {e.measured}")
