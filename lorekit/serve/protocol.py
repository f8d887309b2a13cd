"""The game protocol (runtime/PROTOCOL.md): newline-delimited JSON requests in, events out.

A thin transport over `core.Runtime`: it parses and checks requests (through `request`), keeps the
turns of one connection, and turns the runtime's output into events on its own event loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from lorekit import __version__
from lorekit.serve.request import (
    RequestError,
    dumps,
    game_state,
    is_unicode,
    parse_json,
    player_text,
    sampling,
)
from lorekit.serve.scheduler import Turn, TurnSink
from lorekit.serve.textstream import SentenceSplitter

if TYPE_CHECKING:
    from lorekit.serve.core import Runtime

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
SERVER = f"lorekit {__version__}"
REQUESTS = ("hello", "list_npcs", "turn", "typing", "cancel", "reset", "ping", "status")
SESSION_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
MAX_ID = 64
TOO_LONG = object()


class LineReader:
    """Lines of at most `limit` bytes; a longer line is skipped and reported once as TOO_LONG."""

    def __init__(self, reader: asyncio.StreamReader, initial: bytes, limit: int):
        self.reader, self.buf, self.limit, self.skipping = reader, bytearray(initial), limit, False

    async def next(self) -> bytes | object | None:
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, skipped = bytes(self.buf[:nl]), self.skipping
                del self.buf[: nl + 1]
                self.skipping = False
                if skipped:
                    continue
                if nl + 1 > self.limit:
                    return TOO_LONG
                return line
            if len(self.buf) >= self.limit and not self.skipping:
                self.buf.clear()
                self.skipping = True
                return TOO_LONG
            if self.skipping:
                self.buf.clear()
            chunk = await self.reader.read(65536)
            if not chunk:
                return None
            self.buf += chunk


def _require(msg: dict, key: str, kind: type | tuple, what: str) -> Any:
    value = msg.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise RequestError("bad_request", f"`{key}` must be {what}")
    return value


def valid_id(rid: Any) -> bool:
    if isinstance(rid, str):
        return len(rid) <= MAX_ID and is_unicode(rid)
    return isinstance(rid, int) and not isinstance(rid, bool) and len(str(rid)) <= MAX_ID


def notification(event: dict) -> dict:
    """A runtime event as a notification: `"id": null` right after the type."""
    return {"type": event["type"], "id": None, **{k: v for k, v in event.items() if k != "type"}}


class GameTurn(TurnSink):
    """Turns worker output into token/sentence/done events on the loop thread."""

    def __init__(self, conn: GameConnection, rid: Any, stream: str):
        self.conn, self.rid, self.stream, self.splitter = conn, rid, stream, SentenceSplitter()
        self.call = conn.call

    def piece(self, text: str) -> None:
        self.call(self._piece, text)

    def done(self, result: dict) -> None:
        self.call(self._done, result)

    def error(self, code: str, message: str) -> None:
        self.call(self._error, code, message)

    def _piece(self, text: str) -> None:
        if self.stream == "tokens":
            self.conn.send({"type": "token", "id": self.rid, "text": text})
        if self.stream != "none":
            self._sentences(self.splitter.feed(text))

    def _sentences(self, sentences: list[str]) -> None:
        base = self.splitter.count - len(sentences)
        for i, s in enumerate(sentences):
            self.conn.send({"type": "sentence", "id": self.rid, "index": base + i, "text": s})

    def _done(self, result: dict) -> None:
        if self.stream != "none" and result["finish_reason"] != "cancelled":
            self._sentences(self.splitter.flush())
        self.conn.send({"type": "done", "id": self.rid, **result})
        self.conn.turn_ended(self.rid)

    def _error(self, code: str, message: str) -> None:
        self.conn.error(self.rid, code, message)
        self.conn.turn_ended(self.rid)


class GameConnection:
    def __init__(self, runtime: Runtime, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, initial: bytes):
        self.runtime, self.writer, self.cfg = runtime, writer, runtime.cfg
        self.lines = LineReader(reader, initial, self.cfg.max_line)
        self.loop = asyncio.get_running_loop()
        self.out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.turns: dict[Any, Turn] = {}
        self.authorized = not self.cfg.token
        self.closed = False
        self.last_activity = time.monotonic()

    @staticmethod
    async def refuse(writer: asyncio.StreamWriter, code: str, message: str) -> None:
        try:
            writer.write(dumps({"type": "error", "id": None, "code": code, "message": message}) + b"\n")
            await writer.drain()
            writer.close()
        except (ConnectionError, RuntimeError):
            pass

    def call(self, fn, *args) -> None:
        """Run `fn(*args)` on this connection's loop (from the model or a watcher thread)."""
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the server is gone, and so is this client
            pass

    # -- output -------------------------------------------------------------------------------

    def send(self, event: dict) -> None:
        if not self.closed:
            self.out.put_nowait(dumps(event) + b"\n")

    def notify(self, event: dict) -> None:
        if self.authorized:
            self.send(notification(event))

    def error(self, rid: Any, code: str, message: str) -> None:
        self.runtime.count_error(code)
        self.send({"type": "error", "id": rid, "code": code, "message": message})

    async def _write_loop(self) -> None:
        try:
            while (data := await self.out.get()) is not None:
                self.writer.write(data)
                await self.writer.drain()
        except (ConnectionError, RuntimeError):
            pass
        finally:
            self.closed = True
            self.writer.close()  # after the last event: the client reads it, then end of stream

    def shutdown(self, code: str = "shutting_down", message: str = "the server is stopping") -> None:
        """Close after telling the client: each turn in flight ends with this error (its last event,
        whatever the worker still emits is dropped), then a notice without id, then end of stream."""
        if self.closed:
            return
        if code == "shutting_down":
            for rid, turn in list(self.turns.items()):
                self.runtime.cancel(turn)
                self.send({"type": "error", "id": rid, "code": code, "message": message})
            self.turns.clear()
        self.send({"type": "error", "id": None, "code": code, "message": message})
        self.out.put_nowait(None)
        self.closed = True

    # -- input --------------------------------------------------------------------------------

    async def serve(self) -> None:
        unsubscribe = self.runtime.subscribe(lambda event: self.call(self.notify, event))
        writer_task = asyncio.create_task(self._write_loop())
        try:
            await self._read_loop()
        finally:
            unsubscribe()
            self._cancel_all()
            if not self.closed:
                self.out.put_nowait(None)
            self.closed = True
            try:
                await asyncio.wait_for(writer_task, 5)
            except asyncio.TimeoutError:
                writer_task.cancel()
            self.writer.close()

    async def _read_loop(self) -> None:
        got_first = False
        while not self.closed:
            timeout = self.cfg.idle_timeout if got_first else self.cfg.handshake_timeout
            try:
                line = await asyncio.wait_for(self.lines.next(), timeout)
            except asyncio.TimeoutError:
                if self.turns or time.monotonic() - self.last_activity < timeout:
                    continue
                self.shutdown("idle_timeout", f"nothing received for {timeout:g} s; closing (send ping to stay connected)")
                return
            except ConnectionError:
                return
            if line is None:
                return
            got_first = True
            self.last_activity = time.monotonic()
            if line is TOO_LONG:
                self.error(None, "line_too_long", f"request line longer than {self.cfg.max_line} bytes; skipped")
                continue
            if line.strip():
                self.handle_line(line)

    def handle_line(self, line: bytes) -> None:
        """Answer one request line; whatever it holds, the connection stays usable (but `unauthorized`)."""
        try:
            msg = parse_json(line)
        except RequestError as e:
            self.error(None, e.code, str(e))
            return
        if not isinstance(msg, dict):
            self.error(None, "bad_json", "a request must be a JSON object")
            return
        rid = msg.get("id")
        try:
            self._dispatch(msg, rid)
        except RequestError as e:
            if e.code == "unauthorized":
                self.error(rid if valid_id(rid) else None, e.code, str(e))
                self.shutdown("unauthorized", "closing the connection")
                return
            self.error(rid if valid_id(rid) else None, e.code, str(e))
        except Exception as e:  # a bug must cost one request, not the connection
            log.exception("request %r failed", msg.get("type"))
            self.error(rid if valid_id(rid) else None, "internal", f"{type(e).__name__}: {e}")

    def _dispatch(self, msg: dict, rid: Any) -> None:
        kind = msg.get("type")
        if not self.authorized and kind != "hello":
            raise RequestError("unauthorized", "this server needs a token: send hello with \"token\" first")
        if not valid_id(rid):
            raise RequestError("bad_request", f"`id` must be a string or an integer of at most {MAX_ID} characters")
        if kind not in REQUESTS:
            raise RequestError("unknown_type", f"unknown request type {kind!r} (known: {', '.join(REQUESTS)})")
        if kind != "cancel" and rid in self.turns:  # a cancel names its turn by that turn's id
            raise RequestError("duplicate_id", f"request {rid!r} is still being answered; use a new id")
        getattr(self, f"_on_{kind}")(msg, rid)

    # -- requests -----------------------------------------------------------------------------

    def _on_hello(self, msg: dict, rid: Any) -> None:
        if self.cfg.token and msg.get("token") != self.cfg.token:
            raise RequestError("unauthorized", "wrong or missing token")
        self.authorized = True
        version = msg.get("version", PROTOCOL_VERSION)
        if version != PROTOCOL_VERSION:
            raise RequestError("unsupported_version", f"protocol version {version!r} is not spoken here "
                                                      f"(this server speaks: {PROTOCOL_VERSION})")
        model = self.runtime.health()["model"]
        self.send({"type": "hello", "id": rid, "protocol": PROTOCOL_VERSION, "server": SERVER,
                   "model": model["name"] if model else None, "npcs": len(self.runtime.npcs())})

    def _on_list_npcs(self, msg: dict, rid: Any) -> None:
        npcs = [{"id": n.id, "name": n.name, "greeting": n.greeting, "farewell": n.farewell} for n in self.runtime.npcs()]
        self.send({"type": "npcs", "id": rid, "npcs": npcs})

    def _on_ping(self, msg: dict, rid: Any) -> None:
        self.send({"type": "pong", "id": rid, "time": round(time.time(), 3)})

    def _on_status(self, msg: dict, rid: Any) -> None:
        self.send({"type": "status", "id": rid, "protocol": PROTOCOL_VERSION, "server": SERVER,
                   **self.runtime.status()})

    def _on_reset(self, msg: dict, rid: Any) -> None:
        npc = _require(msg, "npc", str, "an NPC id or \"*\"")
        session = self._session(msg)
        turns = self.runtime.reset(npc, session)
        self.send({"type": "reset", "id": rid, "npc": npc, "session": session, "turns": turns})

    def _on_cancel(self, msg: dict, rid: Any) -> None:
        turn = self.turns.get(rid)
        if turn is not None:
            self.runtime.cancel(turn)  # its `done` (cancelled) comes through the turn's sink

    def _on_turn(self, msg: dict, rid: Any) -> None:
        if len(self.turns) >= self.cfg.max_turns_per_client:
            raise RequestError("busy", f"{len(self.turns)} turns already in flight on this connection")
        npc = _require(msg, "npc", str, "an NPC id (see list_npcs)")
        text = player_text(msg.get("text"))
        state = game_state(msg.get("state"))
        stream = msg.get("stream", "tokens")
        if stream not in ("tokens", "sentences", "none"):
            raise RequestError("bad_request", "`stream` must be \"tokens\", \"sentences\" or \"none\"")
        self.runtime.check_npc(npc)
        turn = Turn(client=self, rid=rid, npc=npc, text=text, sink=GameTurn(self, rid, stream),
                    session=self._session(msg), state=state, sampling=sampling(msg, self.cfg))
        self.runtime.submit(turn)
        self.turns[rid] = turn

    def _on_typing(self, msg: dict, rid: Any) -> None:
        """The line the player is typing so far: no reply (bad input gets its error event); the server
        processes its prompt while idle, so the `turn` that follows starts sooner."""
        npc = _require(msg, "npc", str, "an NPC id (see list_npcs)")
        self.runtime.typing(npc, self._session(msg), player_text(msg.get("text")), game_state(msg.get("state")))

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def _session(msg: dict) -> str:
        session = msg.get("session", "default")
        if not isinstance(session, str) or not SESSION_RE.match(session):
            raise RequestError("bad_request", "`session` must be 1-128 characters of A-Z a-z 0-9 _ . - :")
        return session

    def turn_ended(self, rid: Any) -> None:
        self.turns.pop(rid, None)
        self.last_activity = time.monotonic()

    def _cancel_all(self) -> None:
        for turn in list(self.turns.values()):
            self.runtime.cancel(turn)
        self.turns.clear()
