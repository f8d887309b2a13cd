"""HTTP on the game port: OpenAI-compatible chat completions (with SSE), models, health, metrics.

A thin transport over `core.Runtime`, like the game protocol: the same request model (`request`)
checks the body, the same fair queue runs the turn. A request must arrive in full within
`[serve] read_timeout` seconds of its first byte, else the answer is 408 and the connection closes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from lorekit.serve.core import Runtime

log = logging.getLogger(__name__)

MAX_HEAD, MAX_BODY = 16384, 1024 * 1024
STATUS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
          408: "Request Timeout", 413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error",
          502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}
CODE_STATUS = {"unknown_npc": 404, "context_full": 400, "busy": 429, "internal": 500, "shutting_down": 500,
               "engine_unavailable": 502, "engine_error": 502, "engine_timeout": 504}
SERVER_ERRORS = {"internal", "engine_unavailable", "engine_error", "engine_timeout"}


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code

    @classmethod
    def of(cls, e: RequestError) -> HttpError:
        return cls(CODE_STATUS.get(e.code, 400), e.code, str(e))


class Request:
    def __init__(self, method: str, path: str, version: str, headers: dict[str, str], body: bytes):
        self.method, self.path, self.version, self.headers, self.body = method, path, version, headers, body

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        return conn != "close" and (self.version == "HTTP/1.1" or conn == "keep-alive")


def parse_head(head: bytes) -> tuple[str, str, str, dict[str, str], int]:
    """(method, path, version, headers, content length) of a request head (without its blank line)."""
    lines = head.decode("latin-1").splitlines()
    parts = lines[0].split() if lines else []
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise HttpError(400, "bad_request", f"not an HTTP request line: {(lines or [''])[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpError(400, "bad_request", "bad Content-Length") from None
    if length < 0:
        raise HttpError(400, "bad_request", "bad Content-Length")
    if length > MAX_BODY:
        raise HttpError(413, "bad_request", f"request body over {MAX_BODY} bytes")
    return parts[0].upper(), parts[1].split("?")[0], parts[2], headers, length


async def read_request(reader: asyncio.StreamReader, buf: bytearray, idle: float, deadline_s: float) -> Request | None:
    """The next request, or None when the client closed (or stayed silent `idle` seconds between
    requests). Once its first byte is in, the whole request must arrive within `deadline_s` (408)."""
    if not buf:
        chunk = await asyncio.wait_for(reader.read(65536), idle)
        if not chunk:
            return None
        buf += chunk
    loop = asyncio.get_running_loop()
    deadline = loop.time() + deadline_s

    async def more(what: str) -> bool:
        try:
            chunk = await asyncio.wait_for(reader.read(65536), max(deadline - loop.time(), 0.0))
        except asyncio.TimeoutError:
            raise HttpError(408, "idle_timeout", f"{what} did not arrive within {deadline_s:g} s; closing") from None
        buf.extend(chunk)
        return bool(chunk)

    while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
        if len(buf) > MAX_HEAD:
            raise HttpError(413, "line_too_long", "request head too large")
        if not await more("the request head"):
            return None
    sep = b"\r\n\r\n" if b"\r\n\r\n" in buf else b"\n\n"
    head, _, rest = bytes(buf).partition(sep)
    buf[:] = rest
    method, path, version, headers, length = parse_head(head)
    while len(buf) < length:
        if not await more(f"the body ({length} bytes by Content-Length, {len(buf)} received)"):
            return None
    body = bytes(buf[:length])
    del buf[:length]
    return Request(method, path, version, headers, body)


def response(status: int, body: bytes, content_type: str, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {status} {STATUS.get(status, '')}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}", f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def json_response(status: int, data: Any, keep_alive: bool) -> bytes:
    return response(status, dumps(data), "application/json", keep_alive)


def error_body(code: str, message: str) -> dict:
    return {"error": {"message": message, "type": "server_error" if code in SERVER_ERRORS else "invalid_request_error",
                      "code": code}}


class HttpConnection:
    """One HTTP/1.1 connection (keep-alive): requests answered one after the other until it closes."""

    def __init__(self, runtime: Runtime, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, initial: bytes):
        self.runtime, self.reader, self.writer = runtime, reader, writer
        self.buf = bytearray(initial)
        self.busy = False  # answering a request (its turn ends through the runtime when it stops)
        self.closing = False

    async def serve(self) -> None:
        cfg = self.runtime.cfg
        try:
            while not self.closing:
                try:
                    req = await read_request(self.reader, self.buf, cfg.idle_timeout, cfg.read_timeout)
                except HttpError as e:
                    self.runtime.count_error(e.code)
                    self.writer.write(json_response(e.status, error_body(e.code, str(e)), False))
                    break
                if req is None:
                    break
                self.busy = True
                keep = await handle(self.runtime, req, self.writer)
                self.busy = False
                if not keep:
                    break
            await self.writer.drain()
        except (asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            self.writer.close()

    def shutdown(self) -> None:
        """The server is stopping: close now if waiting for a request, else after this answer."""
        self.closing = True
        if not self.busy:
            self.writer.close()


async def handle(runtime: Runtime, req: Request, writer: asyncio.StreamWriter) -> bool:
    """Answer one request; returns whether the connection stays open."""
    keep, token = req.keep_alive, runtime.cfg.token
    try:
        if token and req.path != "/health" and req.headers.get("authorization") != f"Bearer {token}":
            raise HttpError(401, "unauthorized", "send `Authorization: Bearer <token>`")
        route = ROUTES.get((req.method, req.path))
        if route is None:
            known = any(path == req.path for _, path in ROUTES)
            raise HttpError(405 if known else 404, "bad_request", f"no route {req.method} {req.path}")
        return await route(runtime, req, writer)
    except HttpError as e:
        runtime.count_error(e.code)
        writer.write(json_response(e.status, error_body(e.code, str(e)), keep))
        await writer.drain()
        return keep
    except (ConnectionError, asyncio.TimeoutError):
        raise
    except Exception as e:  # a bug costs this one request a 500, the server goes on
        log.exception("%s %s failed", req.method, req.path)
        runtime.count_error("internal")
        writer.write(json_response(500, error_body("internal", f"{type(e).__name__}: {e}"), False))
        await writer.drain()
        return False


async def health(runtime: Runtime, req: Request, writer: asyncio.StreamWriter) -> bool:
    """200 while turns can be answered; 503 while the engine behind `--engine` does not answer."""
    body = runtime.health()
    writer.write(json_response(200 if body["status"] == "ok" else 503, body, req.keep_alive))
    return req.keep_alive


async def metrics(runtime: Runtime, req: Request, writer: asyncio.StreamWriter) -> bool:
    writer.write(response(200, runtime.metrics_text().encode(), "text/plain; version=0.0.4", req.keep_alive))
    return req.keep_alive


async def models(runtime: Runtime, req: Request, writer: asyncio.StreamWriter) -> bool:
    created = int(runtime.status()["lore"]["loaded_at"])
    data = [{"id": n.id, "object": "model", "created": created, "owned_by": "lorekit", "name": n.name,
             "greeting": n.greeting, "farewell": n.farewell} for n in runtime.npcs()]
    writer.write(json_response(200, {"object": "list", "data": data}, req.keep_alive))
    return req.keep_alive


class HttpSink(TurnSink):
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.queue = loop, asyncio.Queue()

    def _put(self, item: tuple) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is waiting for this answer any more
            pass

    def piece(self, text: str) -> None:
        self._put(("piece", text))

    def done(self, result: dict) -> None:
        self._put(("done", result))

    def error(self, code: str, message: str) -> None:
        self._put(("error", (code, message)))


def _content(msg: Any) -> str:
    content = msg.get("content") if isinstance(msg, dict) else None
    if isinstance(content, list):  # OpenAI content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
                          and isinstance(p.get("text", ""), str))
    if not isinstance(content, str):
        raise HttpError(400, "bad_request", "each message needs a string `content`")
    if not is_unicode(content):
        raise HttpError(400, "bad_request", "a message `content` holds a lone surrogate escape (\\ud800-\\udfff); "
                                            "send valid Unicode")
    return content


def sampling_fields(data: dict) -> dict:
    """The body's sampling fields under the request model's names: `max_completion_tokens` (OpenAI's
    newer name) wins over `max_tokens`; a null field means the server's default."""
    fields = {key: data[key] for key in ("max_tokens", "temperature") if data.get(key) is not None}
    if data.get("max_completion_tokens") is not None:
        fields["max_tokens"] = data["max_completion_tokens"]
    return fields


def client_key(data: dict, peer: str) -> tuple:
    """Who the turn counts against in the fair queue: the client's address (with OpenAI's `user` field
    when given), so a tool that opens many connections at once takes one place in the rotation."""
    user = data.get("user")
    return ("http", peer, user if isinstance(user, str) else "")


def parse_chat(runtime: Runtime, body: bytes, peer: str = "") -> tuple[Turn, bool, HttpSink]:
    try:
        data = parse_json(body, "the body")
        if not isinstance(data, dict):
            raise HttpError(400, "bad_json", "body must be a JSON object")
        npc = data.get("model")
        if not isinstance(npc, str) or npc not in {n.id for n in runtime.npcs()}:
            known = ", ".join(n.id for n in runtime.npcs())
            raise HttpError(404, "unknown_npc", f"model must be an NPC id (known: {known})")
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HttpError(400, "bad_request", "`messages` must be a non-empty list")
        convo = [{"role": m.get("role"), "content": _content(m)} for m in messages if isinstance(m, dict)]
        convo = [m for m in convo if m["role"] in ("user", "assistant")]  # the server writes the system turn
        if not convo or convo[-1]["role"] != "user":
            raise HttpError(400, "bad_request", "the last message must be the player's (role user)")
        text = player_text(convo[-1]["content"], "content")
        state = game_state(data.get("lorekit_state"), "lorekit_state")
        params = sampling(sampling_fields(data), runtime.cfg)
    except RequestError as e:
        raise HttpError.of(e) from None
    sink = HttpSink(asyncio.get_running_loop())
    turn = Turn(client=client_key(data, peer), rid=f"chatcmpl-{uuid.uuid4().hex[:16]}", npc=npc, text=text,
                sink=sink, session=None, state=state, messages=convo[:-1], sampling=params)
    return turn, bool(data.get("stream")), sink


async def chat_completions(runtime: Runtime, req: Request, writer: asyncio.StreamWriter) -> bool:
    peer = writer.get_extra_info("peername")
    turn, stream, sink = parse_chat(runtime, req.body, str(peer[0]) if peer else "")
    try:
        runtime.submit(turn)
    except RequestError as e:
        raise HttpError.of(e) from None
    created = int(time.time())
    try:
        if stream:
            await _stream(turn, sink, created, writer)
            return False
        pieces = []
        while True:
            kind, value = await sink.queue.get()
            if kind == "piece":
                pieces.append(value)
            elif kind == "error":
                raise HttpError(CODE_STATUS.get(value[0], 500), value[0], value[1])
            else:
                break
        body = {"id": turn.rid, "object": "chat.completion", "created": created, "model": turn.npc,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": value["text"]},
                             "finish_reason": _finish(value["finish_reason"])}],
                "usage": _usage(value), "sources": value.get("sources", [])}  # LoreKit's: the notes used
        writer.write(json_response(200, body, req.keep_alive))
        await writer.drain()
        return req.keep_alive
    finally:
        runtime.cancel(turn)  # no-op once done; drops it or stops generation if the client went away


def _finish(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def _usage(result: dict) -> dict:
    t = result["tokens"]
    return {"prompt_tokens": t["prompt"], "completion_tokens": t["completion"],
            "total_tokens": t["prompt"] + t["completion"]}


async def _stream(turn: Turn, sink: HttpSink, created: int, writer: asyncio.StreamWriter) -> None:
    head = ("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            "Connection: close\r\n\r\n")
    writer.write(head.encode())

    def chunk(delta: dict, finish: str | None = None, **extra: Any) -> bytes:
        data = {"id": turn.rid, "object": "chat.completion.chunk", "created": created, "model": turn.npc,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return b"data: " + dumps(data) + b"\n\n"

    writer.write(chunk({"role": "assistant", "content": ""}))
    while True:
        kind, value = await sink.queue.get()
        if kind == "piece":
            writer.write(chunk({"content": value}))
        elif kind == "error":
            writer.write(b"data: " + dumps(error_body(*value)) + b"\n\n")
            break
        else:
            writer.write(chunk({}, _finish(value["finish_reason"]), usage=_usage(value),
                               sources=value.get("sources", [])))
            break
        await writer.drain()
    writer.write(b"data: [DONE]\n\n")
    await writer.drain()


ROUTES = {
    ("GET", "/health"): health,
    ("GET", "/metrics"): metrics,
    ("GET", "/v1/models"): models,
    ("POST", "/v1/chat/completions"): chat_completions,
}
