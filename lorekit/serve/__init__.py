"""The NPC runtime: `lorekit serve`, a local dialogue server a game talks to over one TCP port.

`run(lore_dir, out, cfg)` loads the lore and the model and serves until interrupted. The layout:

- `core.Runtime`: lore, model slot, conversations, fair queue, warming, metrics; no transport;
- `protocol` (the game protocol, `runtime/PROTOCOL.md`) and `http` (OpenAI-compatible): thin
  transports over the core, both checking requests through `request`;
- `server.Server`: the one port; hands each connection to the transport its first bytes ask for.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path

from lorekit.serve.config import ServeConfig

__all__ = ["ServeConfig", "ServeResult", "run"]

log = logging.getLogger(__name__)


@dataclass
class ServeResult:
    host: str
    port: int


def run(lore_dir: Path, out: Path, cfg: ServeConfig, on_ready=None) -> ServeResult:
    """Serve until interrupted (Ctrl+C, SIGTERM). `on_ready(server)` is called once the port listens."""
    from lorekit.serve.core import Runtime
    from lorekit.serve.server import Server

    runtime = Runtime(Path(lore_dir), Path(out), cfg)
    server = Server(runtime)
    runtime.load()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl+C, or a game/launcher ending the process
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # Windows: Ctrl+C still raises KeyboardInterrupt
                pass
        await server.serve_until(stop, on_ready)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return ServeResult(cfg.host, server.port)
