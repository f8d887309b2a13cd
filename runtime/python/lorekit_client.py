"""LoreKit game protocol client (protocol version 1), standard library only.

Copy this one file into your game or tool. It speaks runtime/PROTOCOL.md over a plain TCP socket:

    from lorekit_client import LoreKitClient

    with LoreKitClient(port=7861) as npc:
        print(npc.list_npcs())
        done = npc.turn("mara-vell", "Who leads the Ash Guild?", session="save-1",
                        on_sentence=lambda s: print("NPC says:", s))
        print(done["text"], done["timings"])

It is synchronous and single-threaded: events for other requests that arrive while you wait are
kept and handed out when you ask for them; server notifications (`reloaded`, `reload_error`) go to
`on_notification` and to the `notifications` list.
"""

from __future__ import annotations

import itertools
import json
import socket
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from typing import Any

PROTOCOL_VERSION = 1
DEFAULT_PORT = 7861
FINAL = ("done", "error")


class LoreKitError(Exception):
    """An `error` event: `code` is the machine-readable reason (see PROTOCOL.md), `message` for humans."""

    def __init__(self, code: str, message: str, event: dict | None = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.event = code, message, event or {}


class LoreKitClient:
    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
                 timeout: float = 120.0, client: str = "lorekit_client.py",
                 on_notification: Callable[[dict], None] | None = None):
        self.host, self.port, self.token, self.timeout, self.client = host, port, token, timeout, client
        self.on_notification = on_notification
        self.notifications: list = []
        self.server_info: dict = {}
        self._sock: socket.socket | None = None
        self._buf = b""
        self._pending: dict = defaultdict(deque)  # id -> events not yet consumed
        self._ids = itertools.count(1)

    # -- connection ---------------------------------------------------------------------------

    def connect(self) -> LoreKitClient:
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server_info = self.hello()
        return self

    def close(self) -> None:
        if self._sock:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self) -> LoreKitClient:
        return self.connect() if self._sock is None else self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- raw messages -------------------------------------------------------------------------

    def new_id(self) -> str:
        return f"r{next(self._ids)}"

    def send(self, message: dict) -> None:
        if self._sock is None:
            raise ConnectionError("not connected; call connect() first")
        self._sock.sendall(json.dumps(message, ensure_ascii=False).encode("utf-8") + b"\n")

    def recv(self, timeout: float | None = None) -> dict:
        """The next event from the server, whatever request it belongs to."""
        assert self._sock is not None, "not connected"
        self._sock.settimeout(self.timeout if timeout is None else timeout)
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def next_event(self, rid: Any, timeout: float | None = None) -> dict:
        """The next event for request `rid`; events of other requests are kept for later."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._pending[rid]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no event for request {rid!r}")
            event = self.recv(left)
            if event.get("id") is None and event.get("type") != "error":
                self.notifications.append(event)
                if self.on_notification:
                    self.on_notification(event)
                continue
            self._pending[event.get("id")].append(event)
        event = self._pending[rid].popleft()
        if not self._pending[rid]:
            del self._pending[rid]
        return event

    def request(self, message: dict) -> dict:
        """Send a request and return its single answer; an `error` answer raises LoreKitError."""
        message.setdefault("id", self.new_id())
        self.send(message)
        event = self.next_event(message["id"])
        if event["type"] == "error":
            raise LoreKitError(event["code"], event["message"], event)
        return event

    # -- requests -----------------------------------------------------------------------------

    def hello(self) -> dict:
        msg: dict = {"type": "hello", "version": PROTOCOL_VERSION, "client": self.client}
        if self.token:
            msg["token"] = self.token
        return self.request(msg)

    def list_npcs(self) -> list:
        return self.request({"type": "list_npcs"})["npcs"]

    def ping(self) -> float:
        """Round-trip time in seconds."""
        t0 = time.perf_counter()
        self.request({"type": "ping"})
        return time.perf_counter() - t0

    def status(self) -> dict:
        return self.request({"type": "status"})

    def reset(self, npc: str, session: str = "default") -> int:
        return self.request({"type": "reset", "npc": npc, "session": session})["turns"]

    def start_turn(self, npc: str, text: str, session: str = "default", state: dict | None = None,
                   rid: str | None = None, **options: Any) -> str:
        """Send a turn and return its id; read its events with `events(id)`. Options: max_tokens,
        temperature, stream ("tokens", "sentences", "none")."""
        rid = rid or self.new_id()
        msg = {"type": "turn", "id": rid, "npc": npc, "session": session, "text": text, **options}
        if state is not None:
            msg["state"] = state
        self.send(msg)
        return rid

    def events(self, rid: Any) -> Iterator[dict]:
        """Events of one turn up to and including its final `done` or `error`."""
        while True:
            event = self.next_event(rid)
            yield event
            if event["type"] in FINAL:
                return

    def cancel(self, rid: Any) -> None:
        self.send({"type": "cancel", "id": rid})

    def turn(self, npc: str, text: str, session: str = "default", state: dict | None = None,
             on_token: Callable[[str], None] | None = None,
             on_sentence: Callable[[str], None] | None = None, **options: Any) -> dict:
        """Say `text` to `npc` and wait for the reply; returns the `done` event (raises on `error`)."""
        rid = self.start_turn(npc, text, session, state, **options)
        for event in self.events(rid):
            kind = event["type"]
            if kind == "token" and on_token:
                on_token(event["text"])
            elif kind == "sentence" and on_sentence:
                on_sentence(event["text"])
            elif kind == "error":
                raise LoreKitError(event["code"], event["message"], event)
            elif kind == "done":
                return event
        raise ConnectionError("turn ended without a final event")  # pragma: no cover


if __name__ == "__main__":  # a tiny smoke test: python lorekit_client.py [port]
    import sys

    port = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PORT
    with LoreKitClient(port=port) as c:
        npcs = c.list_npcs()
        print("NPCs:", ", ".join(n["id"] for n in npcs))
        done = c.turn(npcs[0]["id"], "Hello there.", on_token=lambda t: print(t, end="", flush=True))
        print(f"\n[{done['finish_reason']}, {done['tokens']['completion']} tokens, {done['timings']['total_ms']} ms]")
