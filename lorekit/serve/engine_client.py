"""HTTP to an OpenAI-compatible inference engine (llama.cpp's `llama-server`, vLLM, SGLang, Ollama,
llama-cpp-python's server), standard library only: is it up, which model it serves, and a streamed
raw completion read as server-sent events.

Every failure is an `EngineError` whose code is the game protocol's (`runtime/PROTOCOL.md`):
`engine_unavailable` (no connection, the connection dropped, or a 502/503/504 answer),
`engine_timeout` (nothing from the engine for `timeout` seconds) and `engine_error` (it answered,
but not with a stream of completion events). A cancel closes the socket, which is also how the
engine learns to stop generating.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from lorekit.errors import LorekitError

if TYPE_CHECKING:
    from lorekit.serve.scheduler import Cancel

MAX_EVENT = 1 << 20  # bytes of one SSE line; a completion chunk is a few hundred


class EngineError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Endpoint:
    url: str  # as given, for messages
    https: bool
    host: str
    port: int
    prefix: str  # the path in front of /v1 ("" for http://host:port)


def parse_url(url: str) -> Endpoint:
    """`http://HOST:PORT`, with or without a path prefix and a trailing `/v1`."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LorekitError(f"--engine {url!r}: give the engine's base URL, e.g. http://127.0.0.1:8080 "
                           "(an OpenAI-compatible server: llama-server, vLLM, SGLang, Ollama)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise LorekitError(f"--engine {url!r}: the port is not a number") from None
    prefix = parts.path.rstrip("/")
    prefix = prefix[: -len("/v1")] if prefix.endswith("/v1") else prefix
    return Endpoint(url.strip(), parts.scheme == "https", parts.hostname, port, prefix)


def one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class EngineClient:
    def __init__(self, url: str, api_key: str = "", connect_timeout: float = 3.0, timeout: float = 60.0):
        self.endpoint = parse_url(url)
        self.api_key, self.connect_timeout, self.timeout = api_key, connect_timeout, timeout

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        e = self.endpoint
        cls = http.client.HTTPSConnection if e.https else http.client.HTTPConnection
        conn = cls(e.host, e.port, timeout=min(self.connect_timeout, timeout))
        try:
            conn.connect()
        except OSError as err:  # refused, unreachable, name unknown, connect timeout
            conn.close()
            raise EngineError("engine_unavailable", f"the engine at {e.url} is not reachable: "
                                                    f"{one_line(str(err) or type(err).__name__)}") from None
        conn.sock.settimeout(timeout)
        return conn

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream, application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def get(self, path: str, timeout: float) -> tuple[int, bytes]:
        """(status, body) of a short GET; `EngineError` when no answer comes within `timeout`."""
        conn = self._connect(timeout)
        try:
            conn.request("GET", self.endpoint.prefix + path, headers=self._headers())
            resp = conn.getresponse()
            return resp.status, resp.read(MAX_EVENT)
        except TimeoutError:
            raise EngineError("engine_timeout", f"the engine at {self.endpoint.url} did not answer "
                                                f"GET {path} within {timeout:g} s") from None
        except (OSError, http.client.HTTPException) as err:
            raise EngineError("engine_unavailable", f"the engine at {self.endpoint.url} dropped GET {path}: "
                                                    f"{one_line(str(err) or type(err).__name__)}") from None
        finally:
            conn.close()

    def models(self, timeout: float) -> list[str]:
        """The ids of the models the engine serves (`GET /v1/models`)."""
        status, body = self.get("/v1/models", timeout)
        if status != 200:
            raise status_error(status, body, self.endpoint.url)
        try:
            return [str(m["id"]) for m in json.loads(body)["data"]]
        except (ValueError, KeyError, TypeError):
            raise EngineError("engine_error", f"the engine at {self.endpoint.url} answered GET /v1/models "
                                              f"with something else than a model list: {body[:80]!r}") from None

    def stream(self, path: str, body: dict, cancel: Cancel) -> Iterator[dict]:
        """POST `body` and yield the JSON object of each `data:` event until `[DONE]`; stops quietly
        when `cancel` is set (which closes the connection). Close the iterator to hang up early."""
        conn = self._connect(self.timeout)
        forget = cancel.on_set(lambda: hang_up(conn))
        try:
            try:
                conn.request("POST", self.endpoint.prefix + path, body=json.dumps(body).encode(),
                             headers=self._headers())
                resp = conn.getresponse()
            except TimeoutError:
                raise EngineError("engine_timeout", f"the engine at {self.endpoint.url} sent nothing for "
                                                    f"{self.timeout:g} s") from None
            except (OSError, http.client.HTTPException) as err:
                if cancel.is_set():
                    return
                raise EngineError("engine_unavailable", f"the engine at {self.endpoint.url} dropped the "
                                                        f"request: {one_line(str(err) or type(err).__name__)}") from None
            if resp.status != 200:
                raise status_error(resp.status, read_some(resp), self.endpoint.url)
            kind = resp.getheader("Content-Type", "")
            if "text/event-stream" not in kind:
                raise EngineError("engine_error", f"the engine at {self.endpoint.url} answered with {kind or 'no'} "
                                                  "Content-Type, not a stream of events (text/event-stream)")
            yield from self._events(resp, cancel)
        finally:
            forget()
            conn.close()

    def _events(self, resp: http.client.HTTPResponse, cancel: Cancel) -> Iterator[dict]:
        url, data, last = self.endpoint.url, [], time.monotonic()
        while True:
            try:
                line = resp.readline(MAX_EVENT)
            except TimeoutError:
                raise EngineError("engine_timeout", f"the engine at {url} sent nothing for {self.timeout:g} s") from None
            except (OSError, http.client.HTTPException) as err:
                if cancel.is_set():
                    return
                raise EngineError("engine_unavailable", f"the stream from the engine at {url} broke: "
                                                        f"{one_line(str(err) or type(err).__name__)}") from None
            if cancel.is_set():
                return
            if not line:
                raise EngineError("engine_unavailable", f"the engine at {url} closed the stream before it ended "
                                                        "(no `data: [DONE]`)")
            if not line.endswith(b"\n") and len(line) >= MAX_EVENT:
                raise EngineError("engine_error", f"the engine at {url} sent an event line over {MAX_EVENT} bytes")
            line = line.rstrip(b"\r\n")
            if line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
            elif not line and data:  # a blank line ends an event
                payload, data = b"\n".join(data), []
                if payload.strip() == b"[DONE]":
                    return
                last = time.monotonic()
                yield parse_event(payload, url)
            elif time.monotonic() - last > self.timeout:  # keep-alive comments only: no token for too long
                raise EngineError("engine_timeout", f"the engine at {url} sent no token for {self.timeout:g} s")


def parse_event(payload: bytes, url: str) -> dict:
    try:
        event = json.loads(payload)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        raise EngineError("engine_error", f"the engine at {url} sent an event that is not a JSON object: "
                                          f"{payload[:80]!r}")
    if "error" in event:
        raise EngineError("engine_error", f"the engine at {url} reported: {error_text(event)}")
    return event


def error_text(data: Any) -> str:
    """The message of an engine's error body (OpenAI's `{"error": {"message"}}`, FastAPI's `detail`)."""
    if isinstance(data, dict):
        err = data.get("error", data.get("detail", data))
        if isinstance(err, dict):
            err = err.get("message", err)
        return one_line(str(err))
    return one_line(str(data))


def read_some(resp: http.client.HTTPResponse) -> bytes:
    try:
        return resp.read(4096)
    except (OSError, http.client.HTTPException):
        return b""


def status_error(status: int, body: bytes, url: str) -> EngineError:
    try:
        text = error_text(json.loads(body))
    except ValueError:
        text = one_line(body.decode("utf-8", "replace")) or http.client.responses.get(status, "")
    code = "engine_unavailable" if status in (502, 503, 504) else "engine_error"
    return EngineError(code, f"the engine at {url} answered {status}: {text}")


def hang_up(conn: http.client.HTTPConnection) -> None:
    """Close the connection from another thread: a read blocked on it returns at once."""
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
