"""The game protocol (runtime/PROTOCOL.md): newline-delimited JSON requests in, events out."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import TYPE_CHECKING, Any

from lorekit.serve.engine import Sampling
from lorekit.serve.scheduler import Turn, TurnSink
from lorekit.serve.textstream import SentenceSplitter

if TYPE_CHECKING:
    from lorekit.serve.app import App

log = logging.getLogger(__name__)

REQUESTS = ("hello", "list_npcs", "turn", "cancel", "reset", "ping", "status")
SESSION_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
MAX_TEXT, MAX_STATE, MAX_ID = 4000, 8000, 64
TOO_LONG = object()


class BadRequest(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


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
        raise BadRequest("bad_request", f"`{key}` must be {what}")
    return value


class GameTurn(TurnSink):
    """Turns worker output into token/sentence/done events on the loop thread."""

    def __init__(self, conn: GameConnection, rid: Any, stream: str):
        self.conn, self.rid, self.stream, self.splitter = conn, rid, stream, SentenceSplitter()
        self.call = conn.app.loop.call_soon_threadsafe

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
        self.conn.app.metrics.error(code)
        self.conn.send({"type": "error", "id": self.rid, "code": code, "message": message})
        self.conn.turn_ended(self.rid)


class GameConnection:
    def __init__(self, app: App, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, initial: bytes):
        self.app, self.writer, self.cfg = app, writer, app.cfg
        self.lines = LineReader(reader, initial, app.cfg.max_line)
        self.out: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.turns: dict[Any, Turn] = {}
        self.authorized = not app.cfg.token
        self.closed = False
        self.last_activity = time.monotonic()

    @staticmethod
    async def refuse(writer: asyncio.StreamWriter, code: str, message: str) -> None:
        try:
            writer.write(json.dumps({"type": "error", "id": None, "code": code, "message": message}).encode() + b"\n")
            await writer.drain()
            writer.close()
        except (ConnectionError, RuntimeError):
            pass

    # -- output -------------------------------------------------------------------------------

    def send(self, event: dict) -> None:
        if not self.closed:
            self.out.put_nowait(json.dumps(event, ensure_ascii=False).encode("utf-8") + b"\n")

    def notify(self, event: dict) -> None:
        if self.authorized:
            self.send(event)

    def error(self, rid: Any, code: str, message: str) -> None:
        self.app.metrics.error(code)
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
        if code == "shutting_down":
            for rid, turn in list(self.turns.items()):
                turn.cancel.set()
                self.app.scheduler.remove(turn)
                self.send({"type": "error", "id": rid, "code": code, "message": message})
            self.turns.clear()
        self.send({"type": "error", "id": None, "code": code, "message": message})
        self.out.put_nowait(None)
        self.closed = True

    # -- input --------------------------------------------------------------------------------

    async def serve(self) -> None:
        self.app.clients.add(self)
        writer_task = asyncio.create_task(self._write_loop())
        try:
            await self._read_loop()
        finally:
            self.app.clients.discard(self)
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
                self._handle_line(line)

    def _handle_line(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except (ValueError, UnicodeDecodeError) as e:
            self.error(None, "bad_json", f"not valid JSON: {e}")
            return
        if not isinstance(msg, dict):
            self.error(None, "bad_json", "a request must be a JSON object")
            return
        rid = msg.get("id")
        try:
            self._dispatch(msg, rid)
        except BadRequest as e:
            if e.code == "unauthorized":
                self.error(rid, e.code, str(e))
                self.shutdown("unauthorized", "closing the connection")
                return
            self.error(rid if self._valid_id(rid) else None, e.code, str(e))

    @staticmethod
    def _valid_id(rid: Any) -> bool:
        return isinstance(rid, (str, int)) and not isinstance(rid, bool) and len(str(rid)) <= MAX_ID

    def _dispatch(self, msg: dict, rid: Any) -> None:
        kind = msg.get("type")
        if not self.authorized and kind != "hello":
            raise BadRequest("unauthorized", "this server needs a token: send hello with \"token\" first")
        if not self._valid_id(rid):
            raise BadRequest("bad_request", f"`id` must be a string or an integer of at most {MAX_ID} characters")
        if kind not in REQUESTS:
            raise BadRequest("unknown_type", f"unknown request type {kind!r} (known: {', '.join(REQUESTS)})")
        getattr(self, f"_on_{kind}")(msg, rid)

    # -- requests -----------------------------------------------------------------------------

    def _on_hello(self, msg: dict, rid: Any) -> None:
        from lorekit.serve.app import PROTOCOL_VERSION, SERVER

        if self.cfg.token and msg.get("token") != self.cfg.token:
            raise BadRequest("unauthorized", "wrong or missing token")
        self.authorized = True
        version = msg.get("version", PROTOCOL_VERSION)
        if version != PROTOCOL_VERSION:
            raise BadRequest("unsupported_version", f"protocol version {version!r} is not spoken here "
                                                    f"(this server speaks: {PROTOCOL_VERSION})")
        self.send({"type": "hello", "id": rid, "protocol": PROTOCOL_VERSION, "server": SERVER,
                   "model": self.app.engine.path.name, "npcs": len(self.app.lore.current.npcs)})

    def _on_list_npcs(self, msg: dict, rid: Any) -> None:
        npcs = [{"id": n.id, "name": n.name, "greeting": n.greeting} for n in self.app.lore.current.npcs.values()]
        self.send({"type": "npcs", "id": rid, "npcs": npcs})

    def _on_ping(self, msg: dict, rid: Any) -> None:
        self.send({"type": "pong", "id": rid, "time": round(time.time(), 3)})

    def _on_status(self, msg: dict, rid: Any) -> None:
        self.send({"type": "status", "id": rid, **self.app.status()})

    def _on_reset(self, msg: dict, rid: Any) -> None:
        npc = _require(msg, "npc", str, "an NPC id or \"*\"")
        session = self._session(msg)
        if npc != "*":
            self._check_npc(npc)
        turns = self.app.sessions.reset(npc, session)
        self.send({"type": "reset", "id": rid, "npc": npc, "session": session, "turns": turns})

    def _on_cancel(self, msg: dict, rid: Any) -> None:
        turn = self.turns.get(rid)
        if turn is None:
            return
        turn.cancel.set()
        if self.app.scheduler.remove(turn):
            queue_ms = round((time.perf_counter() - turn.received) * 1000, 1)
            turn.sink._done({"npc": turn.npc, "session": turn.session, "text": "", "finish_reason": "cancelled",
                             "tokens": {"prompt": 0, "cached": 0, "completion": 0},
                             "timings": {"queue_ms": queue_ms, "prompt_ms": 0.0, "first_token_ms": None,
                                         "total_ms": queue_ms, "tokens_per_s": 0.0}})

    def _on_turn(self, msg: dict, rid: Any) -> None:
        if rid in self.turns:
            raise BadRequest("duplicate_id", f"request {rid!r} is still being answered; use a new id")
        if len(self.turns) >= self.cfg.max_turns_per_client:
            raise BadRequest("busy", f"{len(self.turns)} turns already in flight on this connection")
        npc = _require(msg, "npc", str, "an NPC id (see list_npcs)")
        text = _require(msg, "text", str, "the player's line (text)")
        if not 1 <= len(text) <= MAX_TEXT:
            raise BadRequest("bad_request", f"`text` must be 1-{MAX_TEXT} characters, got {len(text)}")
        state = msg.get("state")
        if state is not None and (not isinstance(state, dict) or len(json.dumps(state)) > MAX_STATE):
            raise BadRequest("bad_request", f"`state` must be a JSON object of at most {MAX_STATE} characters")
        stream = msg.get("stream", "tokens")
        if stream not in ("tokens", "sentences", "none"):
            raise BadRequest("bad_request", "`stream` must be \"tokens\", \"sentences\" or \"none\"")
        self._check_npc(npc)
        turn = Turn(client=self, rid=rid, npc=npc, text=text, sink=GameTurn(self, rid, stream),
                    session=self._session(msg), state=state or None, sampling=self._sampling(msg))
        self.turns[rid] = turn
        self.app.scheduler.submit(turn)

    # -- helpers ------------------------------------------------------------------------------

    def _session(self, msg: dict) -> str:
        session = msg.get("session", "default")
        if not isinstance(session, str) or not SESSION_RE.match(session):
            raise BadRequest("bad_request", "`session` must be 1-128 characters of A-Z a-z 0-9 _ . - :")
        return session

    def _check_npc(self, npc: str) -> None:
        npcs = self.app.lore.current.npcs
        if npc not in npcs:
            raise BadRequest("unknown_npc", f"no NPC {npc!r} (known: {', '.join(npcs)})")

    def _sampling(self, msg: dict) -> Sampling:
        c = self.cfg
        max_tokens = msg.get("max_tokens", c.max_tokens)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= 1024:
            raise BadRequest("bad_request", "`max_tokens` must be an integer from 1 to 1024")
        temperature = msg.get("temperature", c.temperature)
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 <= temperature <= 2:
            raise BadRequest("bad_request", "`temperature` must be a number from 0 to 2")
        return Sampling(max_tokens, float(temperature), c.top_p, c.top_k, c.repeat_penalty)

    def turn_ended(self, rid: Any) -> None:
        self.turns.pop(rid, None)
        self.last_activity = time.monotonic()

    def _cancel_all(self) -> None:
        for turn in list(self.turns.values()):
            turn.cancel.set()
            self.app.scheduler.remove(turn)
        self.turns.clear()
