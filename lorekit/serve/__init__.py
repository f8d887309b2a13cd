"""The NPC runtime: `lorekit serve`, a local dialogue server a game talks to over one TCP port.

`run(lore_dir, out, cfg)` loads the lore and the model and serves until interrupted. The game
protocol is in `runtime/PROTOCOL.md`; the state lives on `lorekit.serve.app.App`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from lorekit.serve.config import ServeConfig

__all__ = ["ServeConfig", "ServeResult", "run"]


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
        await app.start()
        if on_ready:
            on_ready(app)
        try:
            await asyncio.Event().wait()
        finally:
            await app.close()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
    return ServeResult(cfg.host, app.port)
