"""`lorekit` command line: a thin dispatcher.

Each subcommand lives in its stage's `cli` module, which provides `add_arguments(parser)` and
`command(args) -> int`. Only the chosen command's module is imported, so `lorekit --help` and
`lorekit compile` never import torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings

from lorekit import __version__
from lorekit.errors import LorekitError

# name -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("lorekit.compile.cli_validate", "check a lore folder and report every problem at once"),
    "compile": ("lorekit.compile.cli", "compile a lore folder into a question/answer dataset"),
    "train": ("lorekit.train.cli", "fine-tune a Gemma model with LoRA on the compiled dataset"),
    "export": ("lorekit.export.cli", "write GGUF files (adapter, merged model) and an Ollama Modelfile"),
    "eval": ("lorekit.evaluate.cli", "compare the base model with the tuned model"),
    "build": ("lorekit.build.cli", "validate, compile, train, evaluate and export, incrementally"),
    "serve": ("lorekit.serve.cli", "run the NPC dialogue server for a game"),
    "chat": ("lorekit.serve.cli_chat", "talk to an NPC through a running server"),
    "import-card": ("lorekit.cards.cli_import", "write an NPC page from a SillyTavern character card"),
    "cards": ("lorekit.cards.cli", "write every NPC as a SillyTavern character card (.json, .png)"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<12} {summary}" for name, (_, summary) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="lorekit",
        description="Turn wiki-style markdown lore into NPCs that know it.",
        epilog=f"commands:\n{lines}\n\nRun `lorekit COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lorekit {__version__}")
    parser.add_argument("command", nargs="?", choices=list(COMMANDS), metavar="COMMAND")
    return parser


def _command_parser(name: str, module) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"lorekit {name}", description=COMMANDS[name][1])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    module.add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") or argv[0] not in COMMANDS:
        top = _top_parser()
        args = top.parse_args(argv[:1])
        if args.command is None:
            top.print_help()
            return 0 if argv[:1] in ([], ["-h"], ["--help"]) else 2
    name = argv[0]
    module = importlib.import_module(COMMANDS[name][0])
    args = _command_parser(name, module).parse_args(argv[1:])
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not args.verbose:  # peft 0.21 asks transformers 5 a deprecated question on every adapter load
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    try:
        return int(module.command(args) or 0)
    except LorekitError as err:
        if args.verbose:
            raise
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
