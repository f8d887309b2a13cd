"""A tiny OpenAI-compatible engine (standard library http.server) that misbehaves on request: for the
unit tests of `lorekit serve --engine` (timeouts, 5xx, malformed streams, hang-ups). Each answer is
set by `mode`; what it was sent and how many streams were open at once are recorded."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPLY = ["Mind", " the", " water", ",", " friend", "."]


def free_port() -> int:
    """A loopback port nothing listens on (an engine that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeEngine:
    def __init__(self, port: int = 0, mode: str = "ok", delay: float = 0.0, model: str = "fake-model"):
        self.mode, self.delay, self.model = mode, delay, model
        self.bodies: list[dict] = []
        self.open_streams = self.max_streams = 0
        self.hung_up = threading.Event()  # a client closed a stream before its end
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, name="fake-engine", daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        engine = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _json(self, status: int, data: dict) -> None:
                body = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if engine.mode == "down_health":
                    self._json(503, {"error": {"message": "Loading model"}})
                elif self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": engine.model, "object": "model"}]})
                else:
                    self._json(404, {"detail": "Not Found"})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with engine._lock:
                    engine.bodies.append(body)
                getattr(self, "_" + engine.mode, self._ok)(body)

            def _http500(self, body: dict) -> None:
                self._json(500, {"error": {"message": "CUDA error: out of memory", "type": "server_error"}})

            def _http503(self, body: dict) -> None:
                self._json(503, {"error": {"message": "Loading model"}})

            def _http400(self, body: dict) -> None:
                self._json(400, {"error": {"message": "the request exceeds the available context size"}})

            def _not_sse(self, body: dict) -> None:
                self._json(200, {"choices": [{"text": "whole reply", "finish_reason": "stop"}]})

            def _start(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()

            def _send(self, data: str) -> None:
                self.wfile.write(f"data: {data}\n\n".encode())
                self.wfile.flush()

            def _ok(self, body: dict, reply=REPLY, done: bool = True) -> None:
                self._start()
                with engine._lock:
                    engine.open_streams += 1
                    engine.max_streams = max(engine.max_streams, engine.open_streams)
                n = min(len(reply), body.get("max_tokens", 16))
                try:
                    for i, piece in enumerate(reply[:n]):
                        time.sleep(engine.delay)
                        finish = None if i < n - 1 else "stop" if n == len(reply) else "length"
                        self._send(json.dumps({"choices": [{"index": 0, "text": piece, "finish_reason": finish}]}))
                    self._send(json.dumps({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": n}}))
                    if done:
                        self._send("[DONE]")
                except (BrokenPipeError, ConnectionResetError):
                    engine.hung_up.set()
                finally:
                    with engine._lock:
                        engine.open_streams -= 1

            def _long(self, body: dict) -> None:  # a reply that goes on until the client hangs up
                self._ok(body, reply=[" word"] * 100000)

            def _no_done(self, body: dict) -> None:  # the connection ends without `data: [DONE]`
                self._start()
                self._send(json.dumps({"choices": [{"text": "Mind", "finish_reason": None}]}))

            def _malformed(self, body: dict) -> None:
                self._start()
                self._send(json.dumps({"choices": [{"text": "Mind", "finish_reason": None}]}))
                self._send("{this is not json")

            def _error_event(self, body: dict) -> None:
                self._start()
                self._send(json.dumps({"error": {"message": "prompt too long", "code": 400}}))

            def _markup(self, body: dict) -> None:  # an engine that does not stop at the stop strings
                self._ok(body, reply=["Aye", ".", "<end", "_of_turn>", "\n<start_of_turn>user\nhi"])

            def _silent(self, body: dict) -> None:  # headers, then nothing (a stuck engine)
                self._start()
                time.sleep(30)

            def _silent_head(self, body: dict) -> None:  # not even headers
                time.sleep(30)

        return Handler
