"""`lorekit serve --engine` in front of a fake engine that misbehaves on request: what the engine is
sent, how its failures reach a game (error events) and an OpenAI client (502/504), `/health` while it
is down, and turns going to it many at once. The real server and protocol on loopback; the prompt is
counted with the real 270M GGUF's vocabulary (no weights are loaded)."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import time

import pytest

pytest.importorskip("llama_cpp")

from lorekit.errors import LorekitError  # noqa: E402
from lorekit.serve.config import ServeConfig  # noqa: E402
from lorekit.serve.core import Runtime  # noqa: E402
from tests.conftest import SAMPLE_LORE  # noqa: E402
from tests.fake_engine import REPLY, FakeEngine, free_port  # noqa: E402
from tests.test_serve_server import MARKUP, NPC, client, lk, make_app  # noqa: E402

pytestmark = [pytest.mark.llama, pytest.mark.real_model]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine-fake")
    shutil.copytree(SAMPLE_LORE, root / "lore")
    return root


@pytest.fixture(scope="module")
def fake():
    engine = FakeEngine()
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def server(world, fake):
    app = make_app(world / "lore", world / "out", engine=fake.url, engine_timeout=0.5, engine_connect_timeout=0.5,
                   engine_concurrency=3, watch=False)
    yield app
    app.stop_background()


@pytest.fixture
def mode(fake):
    """Set the fake engine's behaviour for one test; it is well-behaved again afterwards."""
    def set_mode(name: str, delay: float = 0.0) -> None:
        fake.mode, fake.delay = name, delay

    yield set_mode
    fake.mode, fake.delay = "ok", 0.0


def http_request(app, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=30)
    conn.request(method, path, body=json.dumps(body).encode() if body else None,
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    return resp.status, resp.read()


def test_the_engine_gets_the_exact_rendered_turn_and_its_stop_strings(server, fake):
    with client(server) as c:
        rid = c.start_turn(NPC, "Is the ferry running?", session="exact")
        events = list(c.events(rid))
    done = events[-1]
    assert done["type"] == "done" and done["finish_reason"] == "stop", done
    assert "".join(e["text"] for e in events if e["type"] == "token") == "".join(REPLY)
    assert done["text"] == "".join(REPLY) and done["tokens"]["completion"] == len(REPLY)
    body = fake.bodies[-1]
    prompt = body["prompt"]
    # the engine adds <bos> itself (the GGUF's tokenizer says so): sending it would double it
    assert not prompt.startswith("<bos>") and prompt.startswith("<start_of_turn>user\n")
    assert prompt.endswith("Is the ferry running?<end_of_turn>\n<start_of_turn>model\n")
    assert server.runtime.lore.current.prompts[NPC] in prompt
    assert body["stop"] == ["<end_of_turn>", "<start_of_turn>"] and body["stream"] is True
    # engines send special tokens as no text: the same markers as token ids, the next turn's opener banned
    assert body["stop_token_ids"] == [106, 105] and body["logit_bias"] == {"105": -100}
    assert body["model"] == "fake-model" and body["max_tokens"] == 12 and body["temperature"] == 0.0
    assert done["tokens"]["prompt"] == len(server.runtime.engine.tokenize("<bos>" + prompt))
    assert [t["npc"] for t in server.runtime.sessions.history(NPC, "exact")] == ["".join(REPLY)]


def test_markup_from_an_engine_that_ignores_stop_strings_never_reaches_the_game(server, mode):
    mode("markup")
    with client(server) as c:
        done = c.turn(NPC, "Hello.", session="markup")
    assert done["text"] == "Aye." and done["finish_reason"] == "stop"
    assert not any(m in done["text"] for m in MARKUP)


@pytest.mark.parametrize("name, code, status", [
    ("http500", "engine_error", 502), ("http503", "engine_unavailable", 502), ("malformed", "engine_error", 502),
    ("no_done", "engine_unavailable", 502), ("silent", "engine_timeout", 504), ("silent_head", "engine_timeout", 504),
])
def test_engine_failures_end_the_turn_with_their_code(server, mode, name, code, status):
    mode(name)
    t0 = time.perf_counter()
    with client(server) as c:
        rid = c.start_turn(NPC, "Hello.", session=f"fail-{name}")
        final = list(c.events(rid))[-1]
        assert final["type"] == "error" and final["code"] == code and final["message"], final
        assert "\n" not in final["message"]
        assert c.ping() < 1.0, "the connection lives"
    assert time.perf_counter() - t0 < 5.0, "never a hang: engine_timeout is 0.5 s here"
    assert not server.runtime.sessions.history(NPC, f"fail-{name}"), "a failed turn is not added to history"
    got, body = http_request(server, "POST", "/v1/chat/completions",
                             {"model": NPC, "messages": [{"role": "user", "content": "Hello."}]})
    error = json.loads(body)["error"]
    assert got == status and error["code"] == code and error["type"] == "server_error", body


def test_an_engine_error_mid_stream_over_openai_sse(server, mode):
    mode("malformed")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", json.dumps(
        {"model": NPC, "stream": True, "messages": [{"role": "user", "content": "Hello."}]}).encode())
    lines = [ln for ln in conn.getresponse().read().decode().splitlines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["error"]["code"] == "engine_error"
    assert json.loads(lines[1][6:])["choices"][0]["delta"]["content"] == "Mind", "what came before the error was sent"


def test_cancel_hangs_up_on_the_engine(server, fake, mode):
    mode("long", delay=0.01)
    fake.hung_up.clear()
    with client(server) as c:
        rid = c.start_turn(NPC, "Talk.", session="cancel", max_tokens=1000)
        assert c.next_event(rid)["type"] == "token"
        c.cancel(rid)
        done = list(c.events(rid))[-1]
    assert done["type"] == "done" and done["finish_reason"] == "cancelled"
    assert fake.hung_up.wait(2.0), "the engine's stream was closed, so it stops generating"


def test_turns_go_to_the_engine_at_once_up_to_engine_concurrency(server, fake, mode):
    mode("ok", delay=0.1)
    fake.max_streams = 0
    ends, lock = [], threading.Lock()

    def player(i: int) -> None:
        with client(server) as c:
            done = c.turn(NPC, "Hello.", session=f"crowd-{i}")
        with lock:
            ends.append(done["finish_reason"])

    t0 = time.perf_counter()
    threads = [threading.Thread(target=player, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    took = time.perf_counter() - t0
    assert ends == ["stop"] * 6
    assert fake.max_streams == 3, "engine_concurrency = 3 streams at once, no more"
    assert took < 6 * len(REPLY) * 0.1, f"the turns overlapped ({took:.1f} s)"


def test_turns_of_one_conversation_still_run_one_after_the_other(server, fake, mode):
    mode("ok", delay=0.05)
    fake.max_streams = 0
    with client(server) as c:
        c.reset(NPC, "one")
        ids = [c.start_turn(NPC, f"Line {i}.", session="one") for i in range(3)]
        assert all(list(c.events(rid))[-1]["type"] == "done" for rid in ids)
    assert fake.max_streams == 1
    history = server.runtime.sessions.history(NPC, "one")
    assert [t["user"] for t in history] == ["Line 0.", "Line 1.", "Line 2."]
    assert "Line 0." in fake.bodies[-1]["prompt"], "the last turn saw the history of the first"


def test_health_and_status_report_the_engine(server, mode):
    with client(server) as c:
        c.turn(NPC, "Hello.", session="health")  # a turn that works: the engine is up, whatever came before
    got, body = http_request(server, "GET", "/health")
    health = json.loads(body)
    assert got == 200 and health["status"] == "ok" and health["engine"]["reachable"] is True
    assert health["engine"]["model"] == "fake-model" and health["engine"]["url"] == server.cfg.engine
    mode("down_health")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and got == 200:
        time.sleep(0.1)
        got, body = http_request(server, "GET", "/health")
    assert got == 503 and json.loads(body)["status"] == "engine_unavailable", body
    with client(server) as c:
        status = c.status()
    assert status["engine"]["reachable"] is False and "503" in status["engine"]["error"]


def test_an_engine_that_is_down_gives_errors_then_comes_back(world):
    port = free_port()
    app = make_app(world / "lore", world / "out-down", engine=f"http://127.0.0.1:{port}", engine_timeout=1.0,
                   engine_connect_timeout=0.5, watch=False)
    engine = None
    try:
        got, body = http_request(app, "GET", "/health")
        assert got == 503 and json.loads(body)["engine"]["reachable"] is False
        with client(app) as c:
            t0 = time.perf_counter()
            final = list(c.events(c.start_turn(NPC, "Hello.", session="down")))[-1]
            assert final["type"] == "error" and final["code"] == "engine_unavailable", final
            assert f"127.0.0.1:{port}" in final["message"] and time.perf_counter() - t0 < 2.0
            engine = FakeEngine(port=port)
            deadline = time.monotonic() + 6
            while time.monotonic() < deadline and http_request(app, "GET", "/health")[0] != 200:
                time.sleep(0.1)
            assert http_request(app, "GET", "/health")[0] == 200, "the engine came back"
            assert c.turn(NPC, "Hello.", session="down")["text"] == "".join(REPLY)
    finally:
        app.stop_background()
        if engine:
            engine.close()


@pytest.mark.parametrize("settings, words", [
    (dict(retrain=True), "--retrain"), (dict(adapter="x.gguf"), "adapter"),
    (dict(engine_concurrency=0), "engine_concurrency"), (dict(engine="localhost:8080"), "--engine"),
])
def test_settings_that_cannot_go_with_an_engine(world, settings, words):
    cfg = ServeConfig(**{"engine": "http://127.0.0.1:8080", **settings})
    with pytest.raises(LorekitError, match=words):
        Runtime(world / "lore", world / "out", cfg)


def test_the_reference_client_sees_engine_errors_as_errors(server, mode):
    mode("http500")
    with client(server) as c, pytest.raises(lk.LoreKitError) as err:
        c.turn(NPC, "Hello.", session="client-error")
    assert err.value.code == "engine_error"


def test_lorekit_serve_engine_from_the_command_line(tmp_path, fake):
    import re

    from tests.test_serve_cli import REPO, serve
    from tests.test_serve_server import gguf

    proc = serve([str(REPO / "sample_lore"), "--out", str(tmp_path / "out"), "--model", gguf(), "--port", "0",
                  "--no-watch", "--engine", fake.url])
    try:
        said = ""
        while "try: lorekit chat" not in said:  # the lines it prints once it listens
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            said += line
        assert f"engine: {fake.url} (fake-model), reachable" in said, said
        port = int(re.search(r"HTTP on 127\.0\.0\.1:(\d+)", said).group(1))
        with lk.LoreKitClient(port=port, timeout=30) as c:
            assert c.turn(NPC, "Hello.", session="cli")["text"] == "".join(REPLY)
    finally:
        proc.terminate()
        proc.wait(30)
