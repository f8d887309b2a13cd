"""`lorekit serve --engine`, the parts that need no model: the HTTP client against a tiny fake engine
that misbehaves on request (refused, 5xx, timeouts, malformed streams, hang-ups), the engine health
check, and the queue that hands turns to many engine streams at once."""

from __future__ import annotations

import threading
import time

import pytest

from lorekit.errors import LorekitError
from lorekit.serve.engine_client import EngineClient, EngineError, parse_url
from lorekit.serve.scheduler import Cancel, Scheduler, Turn, TurnSink
from tests.fake_engine import FakeEngine, free_port


@pytest.fixture
def fake():
    engine = FakeEngine()
    yield engine
    engine.close()


def collect(client: EngineClient, cancel: Cancel | None = None) -> list[dict]:
    return list(client.stream("/v1/completions", {"prompt": "hi", "max_tokens": 16}, cancel or Cancel()))


def failure(client: EngineClient) -> tuple[EngineError, float]:
    t0 = time.perf_counter()
    with pytest.raises(EngineError) as err:
        collect(client)
    return err.value, time.perf_counter() - t0


@pytest.mark.parametrize("url, prefix, port", [
    ("http://127.0.0.1:8080", "", 8080), ("http://127.0.0.1:8080/", "", 8080), ("http://gpu-1:8000/v1", "", 8000),
    ("http://gpu-1:8000/v1/", "", 8000), ("https://llm.example.org/team/v1", "/team", 443), ("http://box", "", 80),
])
def test_engine_urls(url, prefix, port):
    e = parse_url(url)
    assert (e.prefix, e.port) == (prefix, port)


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://box:21", "http://", "http://box:port"])
def test_a_bad_engine_url_is_a_one_line_error(url):
    with pytest.raises(LorekitError, match="--engine"):
        parse_url(url)


def test_a_stream_is_read_to_its_end(fake):
    events = collect(EngineClient(fake.url))
    text = "".join(c["text"] for e in events for c in e["choices"])
    assert text == "Mind the water, friend."
    assert events[-1]["usage"]["completion_tokens"] == 6


def test_an_engine_that_is_down_is_unavailable_at_once():
    err, took = failure(EngineClient(f"http://127.0.0.1:{free_port()}"))
    assert err.code == "engine_unavailable" and "not reachable" in str(err) and took < 2.0


@pytest.mark.parametrize("mode, code, words", [
    ("http500", "engine_error", "answered 500: CUDA error: out of memory"),
    ("http503", "engine_unavailable", "answered 503: Loading model"),
    ("http400", "engine_error", "answered 400: the request exceeds the available context size"),
    ("not_sse", "engine_error", "not a stream of events"),
    ("no_done", "engine_unavailable", "closed the stream before it ended"),
    ("malformed", "engine_error", "not a JSON object"),
    ("error_event", "engine_error", "reported: prompt too long"),
])
def test_engine_failures_have_codes(fake, mode, code, words):
    fake.mode = mode
    err, took = failure(EngineClient(fake.url, timeout=5.0))
    assert err.code == code and words in str(err) and fake.url in str(err), str(err)
    assert "\n" not in str(err) and took < 3.0


@pytest.mark.parametrize("mode", ["silent", "silent_head"])
def test_a_stuck_engine_times_out(fake, mode):
    fake.mode = mode
    err, took = failure(EngineClient(fake.url, timeout=0.5))
    assert err.code == "engine_timeout" and "0.5 s" in str(err)
    assert took < 2.0, took


def test_cancel_closes_the_engine_stream_at_once(fake):
    fake.mode, fake.delay = "long", 0.01
    cancel, got, ended = Cancel(), [], threading.Event()

    def read() -> None:
        for event in EngineClient(fake.url).stream("/v1/completions", {"max_tokens": 10**6}, cancel):
            got.append(event)
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 5
    while not got and time.monotonic() < deadline:
        time.sleep(0.01)
    assert got, "the stream started"
    t0 = time.perf_counter()
    cancel.set()
    assert ended.wait(1.0), "the reader returned quietly, without waiting for another event"
    assert fake.hung_up.wait(2.0), "the engine saw the connection close (so it stops generating)"
    assert time.perf_counter() - t0 < 2.0


def test_health_probe_says_up_down_and_learns_the_model(fake):
    from lorekit.serve.remote import EngineHealth

    health = EngineHealth(EngineClient(fake.url, connect_timeout=0.5))
    health.probe()
    assert health.report()["reachable"] and health.model == "fake-model"
    fake.mode = "down_health"
    health.probe()
    report = health.report()
    assert not report["reachable"] and "503" in report["error"]
    down = EngineHealth(EngineClient(f"http://127.0.0.1:{free_port()}", connect_timeout=0.5))
    t0 = time.perf_counter()
    down.probe()
    assert not down.report()["reachable"] and time.perf_counter() - t0 < 1.5


# -- the queue in front of many engine streams ---------------------------------------------------

def turn(client, rid, session="s", npc="n") -> Turn:
    return Turn(client=client, rid=rid, npc=npc, text="t", sink=TurnSink(), session=session)


def test_many_turns_run_at_once_in_client_rotation():
    sched = Scheduler()
    for c in "ABC":
        for i in range(2):
            sched.submit(turn(c, f"{c}{i}", session=f"{c}{i}"))
    taken = [sched.next(0).rid for _ in range(4)]
    assert taken == ["A0", "B0", "C0", "A1"]
    assert len(sched.running_turns()) == 4


def test_two_turns_of_one_conversation_never_run_at_once():
    sched = Scheduler()
    first, second, other = turn("A", 1), turn("A", 2), turn("B", 3, session="other")
    for t in (first, second, other):
        sched.submit(t)
    assert sched.next(0) is first
    assert sched.next(0) is other, "A's next turn continues the running conversation: B goes first"
    assert sched.next(0.01) is None
    sched.finished(first)
    assert sched.next(0) is second, "once the first turn has ended (and saved its history), the second runs"


def test_stateless_turns_are_not_held_back():
    sched = Scheduler()
    a, b = turn("A", 1, session=None), turn("A", 2, session=None)
    sched.submit(a)
    sched.submit(b)
    assert [sched.next(0), sched.next(0)] == [a, b]


def test_cancel_calls_its_hooks_once_and_late_hooks_at_once():
    cancel, calls = Cancel(), []
    forget = cancel.on_set(lambda: calls.append("a"))
    cancel.on_set(lambda: calls.append("b"))
    forget()
    cancel.set()
    cancel.set()
    assert calls == ["b"]
    cancel.on_set(lambda: calls.append("late"))
    assert calls == ["b", "late"] and cancel.is_set()


def test_the_command_line_refuses_retrain_with_an_engine(tmp_path):
    from tests.test_serve_cli import REPO, serve

    proc = serve([str(REPO / "sample_lore"), "--out", str(tmp_path), "--engine", "http://127.0.0.1:9", "--retrain"])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert "--retrain" in err and "engine holds the weights" in err and "Traceback" not in err
