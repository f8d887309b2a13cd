"""The NPC runtime: `lorekit serve`, a local dialogue server a game talks to over one TCP port.

`run(lore_dir, out, cfg)` loads the lore and the model and serves until interrupted. The game
protocol is in `runtime/PROTOCOL.md`; the state lives on `lorekit.serve.app.App`.
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
    """Serve until interrupted (Ctrl+C). `on_ready(app)` is called once the port is listening."""
    from lorekit.serve.app import App

    app = App(Path(lore_dir), Path(out), cfg)
    app.load()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl+C, or a game/launcher ending the process
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # Windows: Ctrl+C still raises KeyboardInterrupt
                pass
        await app.start()
        if on_ready:
            on_ready(app)
        try:
            await stop.wait()
            log.info("stopping: cancelling turns in flight, telling clients")
        finally:
            await app.close()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return ServeResult(cfg.host, app.port)
