"""LoreKit game protocol client (protocol version 1), standard library only.

Copy this one file into your game or tool. It speaks runtime/PROTOCOL.md over a plain TCP socket:

    from lorekit_client import LoreKitClient

    with LoreKitClient(port=7861) as npc:
        print(npc.list_npcs())
        done = npc.turn("mara-vell", "Who leads the Ash Guild?", session="save-1",
                        on_sentence=lambda s: print("NPC says:", s))
        print(done["text"], done["timings"])

It is synchronous and single-threaded: events for other requests that arrive while you wait are
kept and handed out when you ask for them; server notifications (`reloaded`, `reload_error`, and
connection notices such as `shutting_down`) go to `on_notification` and to the `notifications` list.

Reconnecting (on by default, like the Godot, Unity and Lua clients): when the connection drops (the
server restarted, the player's game was paused for long), every request in flight ends exactly once
with an `error` event of code `disconnected`, `on_disconnected(reason)` is called, and the next call
that talks to the server connects again (back-off 0.5 s doubling to 5 s, for up to `timeout`
seconds), says hello and calls `on_connected(hello)`. Requests that change nothing (list_npcs, ping,
status, reset) are sent again once; a turn is not (the player's line may have reached the server).
`connect(retry_for=60)` waits for a server that is not up yet.
"""

from __future__ import annotations

import itertools
import json
import select
import socket
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from typing import Any

PROTOCOL_VERSION = 1
DEFAULT_PORT = 7861
FINAL = ("done", "error")
IDEMPOTENT = ("list_npcs", "ping", "status", "reset")  # safe to send again after a reconnect
NO_REPLY = ("cancel", "typing")  # answered by nothing (an error event only for bad input)
SocketTimeout = socket.timeout  # TimeoutError from Python 3.10 on; this file also runs on 3.8


class LoreKitError(Exception):
    """An `error` event: `code` is the machine-readable reason (see PROTOCOL.md), `message` for humans."""

    def __init__(self, code: str, message: str, event: dict | None = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.event = code, message, event or {}


class LoreKitClient:
    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
                 timeout: float = 120.0, client: str = "lorekit_client.py",
                 on_notification: Callable[[dict], None] | None = None, reconnect: bool = True,
                 reconnect_min: float = 0.5, reconnect_max: float = 5.0,
                 on_disconnected: Callable[[str], None] | None = None,
                 on_connected: Callable[[dict], None] | None = None):
        self.host, self.port, self.token, self.timeout, self.client = host, port, token, timeout, client
        self.on_notification, self.on_disconnected, self.on_connected = on_notification, on_disconnected, on_connected
        self.reconnect, self.reconnect_min, self.reconnect_max = reconnect, reconnect_min, reconnect_max
        self.notifications: list = []
        self.server_info: dict = {}
        self.reconnects = 0
        self._sock: socket.socket | None = None
        self._buf = b""
        self._pending: dict = defaultdict(deque)  # id -> events not yet consumed
        self._inflight: dict = {}  # id -> request type: sent, final event not received yet
        self._lost: list = []  # (id, reason): requests the dropped connection took down, not yet reported
        self._wanted = False  # connect() was called and close() was not: reconnect after a drop
        self._last_reason = ""
        self._ids = itertools.count(1)

    # -- connection ---------------------------------------------------------------------------

    def connect(self, retry_for: float = 0.0) -> LoreKitClient:
        """Connect and say hello; with `retry_for`, keep trying that many seconds (server not up yet).
        Raises OSError when no server answers, LoreKitError("unauthorized") for a wrong token."""
        self._wanted = True
        deadline, delay = time.monotonic() + retry_for, self.reconnect_min
        while True:
            try:
                self._open()
                return self
            except OSError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, self.reconnect_max)

    def _open(self) -> None:
        self._drop_socket()
        self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.server_info = self.hello()
        except LoreKitError as e:
            if e.code == "disconnected":  # closed during hello (the server is stopping): try again
                raise ConnectionError(e.message) from None
            if e.code == "unauthorized":
                self._wanted = False  # a wrong token will not get better: no reconnect loop
            self._drop_socket()
            raise
        except OSError:
            self._drop_socket()
            raise
        if self.on_connected:
            self.on_connected(self.server_info)

    def _reconnect(self) -> None:
        """Connect again after a drop, with back-off, for up to `timeout` seconds."""
        self.reconnects += 1
        try:
            self.connect(retry_for=self.timeout)
        except OSError as e:
            raise ConnectionError(f"could not reconnect to {self.host}:{self.port} ({e})") from None

    def _drop_socket(self) -> None:
        if self._sock:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def _connection_lost(self, reason: str) -> None:
        """The socket is gone: requests in flight end once each (after any events already received)."""
        self._drop_socket()
        self._buf = self._buf[: self._buf.rfind(b"\n") + 1]  # complete lines still count; a partial one not
        self._lost += [(rid, reason) for rid in self._inflight]
        self._inflight.clear()
        self._last_reason = reason
        if self.on_disconnected:
            self.on_disconnected(reason)

    def _check_alive(self) -> None:
        """Before sending: notice a connection the server closed meanwhile (read what is waiting)."""
        sock = self._sock
        if sock is None:
            return
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    self._connection_lost("the server closed the connection")
                else:
                    self._buf += chunk
        except (OSError, ValueError) as e:
            self._connection_lost(f"connection lost ({e})")

    def close(self) -> None:
        """Close for good (no reconnect)."""
        self._wanted = False
        self._drop_socket()

    def __enter__(self) -> LoreKitClient:
        return self.connect() if self._sock is None else self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- raw messages -------------------------------------------------------------------------

    def new_id(self) -> str:
        return f"r{next(self._ids)}"

    def send(self, message: dict) -> None:
        self._check_alive()
        if self._sock is None:
            if message.get("type") == "cancel":  # the turn already ended with `disconnected`
                return
            if not (self._wanted and self.reconnect):
                raise ConnectionError("not connected; call connect() first")
            self._reconnect()
        data = json.dumps(message, ensure_ascii=False).encode("utf-8") + b"\n"
        if message.get("type") not in NO_REPLY and "id" in message:  # owed a `disconnected` error on a drop
            self._inflight[message["id"]] = message.get("type")
        try:
            self._sock.sendall(data)
        except OSError as e:
            self._connection_lost(f"send failed ({e})")

    def recv(self, timeout: float | None = None) -> dict:
        """The next event from the server, whatever request it belongs to. After a drop: the events
        already received, then one `disconnected` error per request in flight, then ConnectionError."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self._buf:
            if self._lost:
                rid, reason = self._lost.pop(0)
                return {"type": "error", "id": rid, "code": "disconnected", "message": reason}
            if self._sock is None:
                raise ConnectionError(self._last_reason or "not connected")
            left = deadline - time.monotonic()
            if left <= 0:
                raise SocketTimeout("timed out")
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except SocketTimeout:
                raise
            except OSError as e:
                self._connection_lost(f"connection lost ({e})")
                continue
            if not chunk:
                self._connection_lost("the server closed the connection")
                continue
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        event = json.loads(line)
        rid = event.get("id")
        if rid in self._inflight and (self._inflight[rid] != "turn" or event.get("type") in FINAL):
            del self._inflight[rid]
        return event

    def next_event(self, rid: Any, timeout: float | None = None) -> dict:
        """The next event for request `rid`; events of other requests are kept for later."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._pending[rid]:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no event for request {rid!r}")
            try:
                event = self.recv(left)
            except SocketTimeout:
                continue
            if event.get("id") is None:  # notifications and connection notices (shutting_down, idle_timeout)
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
        """Send a request and return its single answer; an `error` answer raises LoreKitError. A request
        that changes nothing is sent once more if the connection dropped before its answer."""
        for attempt in (1, 2):
            message["id"] = message.get("id") if attempt == 1 and message.get("id") is not None else self.new_id()
            self.send(message)
            event = self.next_event(message["id"])
            if event["type"] != "error":
                return event
            if not (event["code"] == "disconnected" and attempt == 1 and self.reconnect
                    and message.get("type") in IDEMPOTENT):
                raise LoreKitError(event["code"], event["message"], event)
        raise AssertionError("unreachable")  # pragma: no cover

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

    def typing(self, npc: str, text: str, session: str = "default", state: dict | None = None) -> str:
        """The line the player has typed so far (send it as they type, say on each pause): the server
        processes it ahead, so the `turn` with the final line starts sooner. No reply; returns the id an
        `error` event for bad input would carry (`next_event(id)`)."""
        rid = self.new_id()
        msg = {"type": "typing", "id": rid, "npc": npc, "session": session, "text": text}
        if state is not None:
            msg["state"] = state
        self.send(msg)
        return rid

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
