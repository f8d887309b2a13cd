"""HTTP on the game port: OpenAI-compatible chat completions (with SSE), models, health, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from lorekit.serve.engine import Sampling
from lorekit.serve.scheduler import Turn, TurnSink

if TYPE_CHECKING:
    from lorekit.serve.app import App

log = logging.getLogger(__name__)

MAX_HEAD, MAX_BODY = 16384, 1024 * 1024
STATUS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
          408: "Request Timeout", 413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error"}
CODE_STATUS = {"unknown_npc": 404, "context_full": 400, "busy": 429, "internal": 500, "shutting_down": 500}


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


class Request:
    def __init__(self, method: str, path: str, version: str, headers: dict[str, str], body: bytes):
        self.method, self.path, self.version, self.headers, self.body = method, path, version, headers, body

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        return conn != "close" and (self.version == "HTTP/1.1" or conn == "keep-alive")


async def read_request(reader: asyncio.StreamReader, buf: bytearray, timeout: float) -> Request | None:
    while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
        if len(buf) > MAX_HEAD:
            raise HttpError(413, "line_too_long", "request head too large")
        chunk = await asyncio.wait_for(reader.read(65536), timeout)
        if not chunk:
            return None
        buf += chunk
    sep = b"\r\n\r\n" if b"\r\n\r\n" in buf else b"\n\n"
    head, _, rest = bytes(buf).partition(sep)
    buf[:] = rest
    lines = head.decode("latin-1").splitlines()
    parts = lines[0].split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise HttpError(400, "bad_request", f"not an HTTP request line: {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpError(400, "bad_request", "bad Content-Length") from None
    if length > MAX_BODY:
        raise HttpError(413, "bad_request", f"request body over {MAX_BODY} bytes")
    while len(buf) < length:
        chunk = await asyncio.wait_for(reader.read(65536), timeout)
        if not chunk:
            return None
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return Request(parts[0].upper(), parts[1].split("?")[0], parts[2], headers, body)


def response(status: int, body: bytes, content_type: str, keep_alive: bool) -> bytes:
    head = [f"HTTP/1.1 {status} {STATUS.get(status, '')}", f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}", f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def json_response(status: int, data: Any, keep_alive: bool) -> bytes:
    return response(status, json.dumps(data, ensure_ascii=False).encode("utf-8"), "application/json", keep_alive)


def error_body(code: str, message: str) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error" if code != "internal" else "server_error",
                      "code": code}}


async def serve_http(app: App, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes) -> None:
    buf = bytearray(first)
    try:
        while True:
            try:
                req = await read_request(reader, buf, app.cfg.idle_timeout)
            except HttpError as e:
                writer.write(json_response(e.status, error_body(e.code, str(e)), False))
                break
            if req is None:
                break
            keep = await handle(app, req, writer)
            if not keep:
                break
        await writer.drain()
    except (asyncio.TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


async def handle(app: App, req: Request, writer: asyncio.StreamWriter) -> bool:
    """Answer one request; returns whether the connection stays open."""
    keep = req.keep_alive
    try:
        if app.cfg.token and req.path != "/health" and req.headers.get("authorization") != f"Bearer {app.cfg.token}":
            raise HttpError(401, "unauthorized", "send `Authorization: Bearer <token>`")
        route = ROUTES.get((req.method, req.path))
        if route is None:
            known = any(path == req.path for _, path in ROUTES)
            raise HttpError(405 if known else 404, "bad_request", f"no route {req.method} {req.path}")
        return await route(app, req, writer)
    except HttpError as e:
        app.metrics.error(e.code)
        writer.write(json_response(e.status, error_body(e.code, str(e)), keep))
        await writer.drain()
        return keep


async def health(app: App, req: Request, writer: asyncio.StreamWriter) -> bool:
    engine = app.engine
    model = {"name": engine.path.name, "sha256": engine.sha256, "generation": app.model_generation} if engine else None
    data = {"status": "ok", "model_loaded": engine is not None, "model": model, "lore_errors": len(app.lore.errors)}
    writer.write(json_response(200, data, req.keep_alive))
    return req.keep_alive


async def metrics(app: App, req: Request, writer: asyncio.StreamWriter) -> bool:
    text = app.metrics.render(app.scheduler.depth(), len(app.clients))
    writer.write(response(200, text.encode(), "text/plain; version=0.0.4", req.keep_alive))
    return req.keep_alive


async def models(app: App, req: Request, writer: asyncio.StreamWriter) -> bool:
    created = int(app.lore.current.loaded_at)
    data = [{"id": n.id, "object": "model", "created": created, "owned_by": "lorekit", "name": n.name,
             "greeting": n.greeting} for n in app.lore.current.npcs.values()]
    writer.write(json_response(200, {"object": "list", "data": data}, req.keep_alive))
    return req.keep_alive


class HttpSink(TurnSink):
    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.queue = loop, asyncio.Queue()

    def piece(self, text: str) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("piece", text))

    def done(self, result: dict) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("done", result))

    def error(self, code: str, message: str) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ("error", (code, message)))


def _content(msg: Any) -> str:
    content = msg.get("content") if isinstance(msg, dict) else None
    if isinstance(content, list):  # OpenAI content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    if not isinstance(content, str):
        raise HttpError(400, "bad_request", "each message needs a string `content`")
    return content


def parse_chat(app: App, body: bytes) -> tuple[Turn, bool, HttpSink]:
    try:
        data = json.loads(body)
    except ValueError as e:
        raise HttpError(400, "bad_json", f"body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise HttpError(400, "bad_json", "body must be a JSON object")
    npc = data.get("model")
    if not isinstance(npc, str) or npc not in app.lore.current.npcs:
        raise HttpError(404, "unknown_npc", f"model must be an NPC id (known: {', '.join(app.lore.current.npcs)})")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise HttpError(400, "bad_request", "`messages` must be a non-empty list")
    convo = [{"role": m.get("role"), "content": _content(m)} for m in messages if isinstance(m, dict)]
    convo = [m for m in convo if m["role"] in ("user", "assistant")]  # the server writes the system turn
    if not convo or convo[-1]["role"] != "user":
        raise HttpError(400, "bad_request", "the last message must be the player's (role user)")
    max_tokens = data.get("max_completion_tokens") or data.get("max_tokens") or app.cfg.max_tokens
    temperature = data.get("temperature", app.cfg.temperature)
    if not isinstance(max_tokens, int) or not 1 <= max_tokens <= 1024:
        raise HttpError(400, "bad_request", "`max_tokens` must be an integer from 1 to 1024")
    if not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
        raise HttpError(400, "bad_request", "`temperature` must be a number from 0 to 2")
    state = data.get("lorekit_state")
    if state is not None and not isinstance(state, dict):
        raise HttpError(400, "bad_request", "`lorekit_state` must be an object")
    c = app.cfg
    sink = HttpSink(app.loop)
    turn = Turn(client=object(), rid=f"chatcmpl-{uuid.uuid4().hex[:16]}", npc=npc, text=convo[-1]["content"],
                sink=sink, session=None, state=state, messages=convo[:-1],
                sampling=Sampling(max_tokens, float(temperature), c.top_p, c.top_k, c.repeat_penalty))
    return turn, bool(data.get("stream")), sink


async def chat_completions(app: App, req: Request, writer: asyncio.StreamWriter) -> bool:
    turn, stream, sink = parse_chat(app, req.body)
    app.scheduler.submit(turn)
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
                "usage": _usage(value)}
        writer.write(json_response(200, body, req.keep_alive))
        await writer.drain()
        return req.keep_alive
    finally:
        if not app.scheduler.remove(turn):
            turn.cancel.set()  # no-op once done; stops generation if the client went away


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
        return b"data: " + json.dumps(data, ensure_ascii=False).encode("utf-8") + b"\n\n"

    writer.write(chunk({"role": "assistant", "content": ""}))
    while True:
        kind, value = await sink.queue.get()
        if kind == "piece":
            writer.write(chunk({"content": value}))
        elif kind == "error":
            err = error_body(*value)
            writer.write(b"data: " + json.dumps(err).encode() + b"\n\n")
            break
        else:
            writer.write(chunk({}, _finish(value["finish_reason"]), usage=_usage(value)))
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
