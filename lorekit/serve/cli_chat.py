"""`lorekit chat NPC`: talk to an NPC in the terminal, through a running `lorekit serve`.

It uses the reference client (`runtime/python/lorekit_client.py`), so it speaks exactly what a game
speaks. Commands: /reset forgets the conversation, /status shows reload errors, /quit leaves.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from lorekit.errors import LorekitError

CLIENT = Path(__file__).resolve().parents[2] / "runtime" / "python" / "lorekit_client.py"


def client_path() -> Path:
    """The reference client: shipped in the wheel as `lorekit/_runtime/`, else the checkout's copy."""
    from importlib.resources import files

    shipped = Path(str(files("lorekit") / "_runtime" / "lorekit_client.py"))
    return shipped if shipped.is_file() else CLIENT


def load_client():
    """The reference client module, loaded from the wheel or the repository's runtime/python folder."""
    path = client_path()
    if not path.is_file():
        raise LorekitError(f"{path}: reference client not found (reinstall LoreKit: pip install lorekit)")
    spec = importlib.util.spec_from_file_location("lorekit_client", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("lorekit_client", module)
    spec.loader.exec_module(module)
    return module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("npc", help="NPC id (see `lorekit chat --list`), e.g. mara-vell")
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=7861, help="server port (default 7861)")
    parser.add_argument("--token", help="the server's token, if it has one")
    parser.add_argument("--session", default="terminal", help="conversation to continue (default: terminal)")
    parser.add_argument("--state", help='game state as JSON, e.g. \'{"location": "Cinderfall"}\'')
    parser.add_argument("--say", action="append", help="say this and exit (repeatable; no prompt)")
    parser.add_argument("--max-tokens", type=int, help="reply length cap, 1-1024 (default: the server's)")
    parser.add_argument("--temperature", type=float, help="sampling temperature, 0-2 (default: the server's)")
    parser.add_argument("--why", action="store_true", help="after each reply, print the lore notes it was given "
                        "(page and heading)")


def turn_options(args: argparse.Namespace) -> tuple[dict | None, dict]:
    """(state, sampling options) from the flags, checked by the server's own request model, so a bad
    value is a one-line error here instead of an error event from the server."""
    from lorekit.serve.request import RequestError, check_sampling, game_state, parse_json

    fields = {k: v for k, v in (("max_tokens", args.max_tokens), ("temperature", args.temperature)) if v is not None}
    try:
        state = game_state(parse_json(args.state, "--state"), "--state") if args.state else None
        return state, check_sampling(fields)
    except RequestError as e:
        raise LorekitError(f"lorekit chat: {e} (fix --max-tokens, --temperature or --state)") from None


def check_line(line: str) -> str | None:
    """The error to show for a line the server would refuse, else None."""
    from lorekit.serve.request import RequestError, player_text

    try:
        player_text(line)
    except RequestError as e:
        return str(e)
    return None


def command(args: argparse.Namespace) -> int:
    import json

    lk = load_client()
    state, options = turn_options(args)
    for line in args.say or []:
        if (problem := check_line(line)) is not None:
            raise LorekitError(f"lorekit chat --say: {problem}")
    try:
        client = lk.LoreKitClient(args.host, args.port, token=args.token, client="lorekit chat").connect()
    except OSError as e:
        raise LorekitError(f"no server at {args.host}:{args.port} ({e}); start one with `lorekit serve LORE_DIR`") from None
    with client:
        npcs = {n["id"]: n for n in client.list_npcs()}
        if args.npc not in npcs:
            raise LorekitError(f"no NPC {args.npc!r} on this server (known: {', '.join(npcs)})")
        npc = npcs[args.npc]
        if args.say:
            for line in args.say:
                _turn(client, lk, args, line, state, options, npc["name"])
            return 0
        print(f"Talking to {npc['name']} (session {args.session}). /reset, /status, /quit.")
        if npc["greeting"]:
            print(f"{npc['name']}: {npc['greeting']}")
        while True:
            try:
                line = input("you> ").strip()
            except EOFError:
                print()
                return 0
            if line in ("/quit", "/exit"):
                return 0
            if line == "/reset":
                print(f"(forgot {client.reset(args.npc, args.session)} turns)")
            elif line == "/status":
                print(json.dumps(client.status(), indent=1))
            elif line and (problem := check_line(line)) is not None:
                print(f"({problem})")
            elif line:
                _turn(client, lk, args, line, state, options, npc["name"])


def _turn(client, lk, args, line: str, state, options: dict, name: str) -> None:
    print(f"{name}: ", end="", flush=True)
    try:
        done = client.turn(args.npc, line, session=args.session, state=state,
                           on_token=lambda t: print(t, end="", flush=True), **options)
    except lk.LoreKitError as e:
        print(f"\n(error {e.code}: {e.message})")
        return
    t = done["timings"]
    print(f"\n  [{done['tokens']['completion']} tokens, first token {t['first_token_ms']} ms, "
          f"{t['tokens_per_s']} tokens/s]", file=sys.stderr)
    if getattr(args, "why", False):
        print(why(done.get("sources") or []))


def why(sources: list[dict]) -> str:
    """The notes a reply was given, one `page > heading` a line (`--why`)."""
    if not sources:
        return "  why: no lore notes (nothing in the lore matched, or grounding is off)"
    return "\n".join(["  why: the lore notes given", *(f"    {s['page']} > {s['heading']}" for s in sources)])
