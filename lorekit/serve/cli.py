"""`lorekit serve LORE_DIR`: run the NPC dialogue server next to the game."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("lore_dir", type=Path, help="folder of markdown lore pages (watched for edits)")
    parser.add_argument("--out", type=Path, default=Path("build"), help="build folder (default: build)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1; others need --token)")
    parser.add_argument("--port", type=int, help="port for the game protocol and HTTP (default 7861)")
    parser.add_argument("--token", help="secret clients must send (required off loopback)")
    parser.add_argument("--model", help="GGUF to serve (default: OUT/export/model.gguf); with --engine, the GGUF "
                        "whose vocabulary and chat format LoreKit uses (the model the engine serves)")
    parser.add_argument("--engine", metavar="URL",
                        help="generate on an OpenAI-compatible inference engine (llama-server, vLLM, SGLang, Ollama) "
                             "at URL instead of in this process; see docs/scale.md")
    parser.add_argument("--ctx", dest="n_ctx", type=int, help="context window in tokens (default 4096)")
    parser.add_argument("--threads", dest="n_threads", type=int, help="CPU threads (default: half the cores, at least 1)")
    parser.add_argument("--no-watch", action="store_true", help="do not reload when lore or model files change")
    parser.add_argument("--retrain", action="store_true",
                        help="after lore edits, rebuild (compile, train, export) in the background and swap it in")


def command(args: argparse.Namespace) -> int:
    from lorekit import config
    from lorekit.serve import run
    from lorekit.serve.config import ServeConfig

    overrides = {"host": args.host, "port": args.port, "token": args.token, "model": args.model, "engine": args.engine,
                 "n_ctx": args.n_ctx, "n_threads": args.n_threads,
                 "watch": False if args.no_watch else None, "retrain": True if args.retrain else None}
    cfg = config.load(ServeConfig, "serve", args.lore_dir, overrides)

    def ready(server) -> None:
        npcs = [n.id for n in server.runtime.npcs()]
        print(f"LoreKit serving {len(npcs)} NPCs ({', '.join(npcs)})", flush=True)
        print(f"  model: {server.runtime.status()['model']['path']}", flush=True)
        engine = server.runtime.engine_report()
        if engine:
            state = "reachable" if engine["reachable"] else f"NOT reachable yet ({engine['error']})"
            print(f"  engine: {engine['url']} ({engine['model'] or 'model name unknown'}), {state}", flush=True)
        print(f"  game protocol and HTTP on {cfg.host}:{server.port}  (Ctrl+C to stop)", flush=True)
        print(f"  try: lorekit chat {npcs[0]} --port {server.port}", flush=True)

    run(args.lore_dir, args.out, cfg, on_ready=ready)
    return 0
