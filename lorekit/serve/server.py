"""The one TCP port: accepts sockets and hands each to the transport its first bytes ask for.

`TRANSPORTS` is the whole routing: a test on the first bytes, and the connection class that speaks
the rest (`Conn(runtime, reader, writer, first)` with `async serve()` and `shutdown()`). A new
transport is a module over `core.Runtime` plus one line here. The game protocol is the fallback.

`Server` also owns the asyncio side of the lifecycle: start, and a stop that tells every client
before the runtime frees the model.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import threading
from collections.abc import Callable

from lorekit.errors import LorekitError
from lorekit.serve.core import Runtime
from lorekit.serve.http import HttpConnection
from lorekit.serve.protocol import GameConnection

log = logging.getLogger(__name__)

HTTP_METHOD = re.compile(rb"^(GET|POST|PUT|DELETE|HEAD|OPTIONS|PATCH|CONNECT|TRACE) ")

TRANSPORTS: list[tuple[Callable[[bytes], bool], type]] = [
    (lambda first: bool(HTTP_METHOD.match(first.lstrip())), HttpConnection),
    (lambda first: True, GameConnection),  # newline-delimited JSON: anything else
]


def transport_for(first: bytes) -> type:
    return next(conn for wants, conn in TRANSPORTS if wants(first))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server:
    def __init__(self, runtime: Runtime):
        cfg = runtime.cfg
        if not is_loopback(cfg.host) and not cfg.token:
            raise LorekitError(f"--host {cfg.host} is not a loopback address: set --token (or [serve] token) "
                               "so only your game can talk to the server")
        self.runtime, self.cfg = runtime, cfg
        self.port = cfg.port
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._conns: dict[asyncio.Task, object | None] = {}  # handler task -> its connection, once known
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.runtime.start()
        self._server = await asyncio.start_server(self._accept, self.cfg.host, self.cfg.port,
                                                  limit=self.cfg.max_line + 1)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("listening on %s:%d (game protocol and HTTP)", self.cfg.host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._conns[task] = None
        try:
            first = await self._first_bytes(reader, writer)
            if first is None:
                return
            conn = transport_for(first)(self.runtime, reader, writer, first)
            self._conns[task] = conn
            await conn.serve()
        finally:
            if self._conns.pop(task, None) is None:
                writer.close()

    async def _first_bytes(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes | None:
        first = b""
        try:
            while not first.strip():
                chunk = await asyncio.wait_for(reader.read(self.cfg.max_line), self.cfg.handshake_timeout)
                if not chunk:
                    writer.close()
                    return None
                first += chunk
        except (asyncio.TimeoutError, ConnectionError):
            await GameConnection.refuse(writer, "idle_timeout", "nothing received; closing")
            return None
        return first

    async def close(self) -> None:
        """Stop within about a second: tell every client, end the turns, free the model."""
        if self._server:
            self._server.close()
        for task, conn in list(self._conns.items()):
            if conn is None:
                task.cancel()  # connected but not yet said anything
            else:
                conn.shutdown()  # game clients: each turn in flight ends with `shutting_down`
        self.runtime.stop_turns()
        await asyncio.to_thread(self.runtime.close)
        tasks = list(self._conns)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=2.0)
            for task in late:
                task.cancel()
        if self._server:
            await self._server.wait_closed()

    # -- running it -----------------------------------------------------------------------------

    async def serve_until(self, stop: asyncio.Event, on_ready: Callable[[Server], None] | None = None) -> None:
        await self.start()
        if on_ready:
            on_ready(self)
        try:
            await stop.wait()
            log.info("stopping: cancelling turns in flight, telling clients")
        finally:
            await self.close()

    def start_background(self) -> Server:
        """Serve on its own loop in a daemon thread (tests, benchmarks); returns once listening."""
        ready, failed = threading.Event(), []

        def main() -> None:
            async def body() -> None:
                self._stop = asyncio.Event()
                try:
                    await self.start()
                except BaseException as e:
                    failed.append(e)
                    ready.set()
                    return
                ready.set()
                await self._stop.wait()
                await self.close()

            asyncio.run(body())

        self._thread = threading.Thread(target=main, name="lorekit-serve", daemon=True)
        self._thread.start()
        ready.wait()
        if failed:
            raise failed[0]
        return self

    def stop_background(self) -> None:
        if self.loop and self._thread and self._thread.is_alive() and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(60)
