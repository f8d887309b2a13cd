"""`lorekit serve --retrain`: after lore edits, rebuild the model in the background and swap it in.

The build runs as a separate process (`lorekit build LORE_DIR --out OUT --no-eval`), so training
never competes with the server for the GIL and a crash in it cannot take the server down. The
build writes `OUT/export/model.gguf` atomically; the model watcher (or the explicit reload below)
then loads it beside the old model and swaps. Edits during a build start another build after it.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lorekit.atomic import write_text
from lorekit.serve.watcher import Debounced

log = logging.getLogger(__name__)


class Retrainer:
    """Runs the build `debounce` seconds after the last `lore_changed()`; then `on_built()` (load the
    new model) or `on_failed(message)`. Both are called on the build's thread."""

    def __init__(self, lore_dir: Path, out: Path, debounce: float, on_built: Callable[[], object],
                 on_failed: Callable[[str], None]):
        self.lore_dir, self.out, self.on_built, self.on_failed = Path(lore_dir), Path(out), on_built, on_failed
        self.state = "idle"  # idle | waiting | running | failed
        self.last_error: str | None = None
        self.last_build_s: float | None = None
        self.builds = 0
        self._again = False
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._debounce = Debounced(debounce, self._start)
        self._stopped = False

    def command(self) -> list[str]:
        return [sys.executable, "-m", "lorekit", "build", str(self.lore_dir), "--out", str(self.out),
                "--no-eval"]

    def lore_changed(self) -> None:
        with self._lock:
            if self.state == "running":
                self._again = True
                return
            self.state = "waiting"
        self._debounce.trigger()

    def _start(self) -> None:
        with self._lock:
            if self._stopped or self.state == "running":
                return
            self.state, self._again = "running", False
        threading.Thread(target=self._build, name="lorekit-retrain", daemon=True).start()

    def _build(self) -> None:
        t0 = time.perf_counter()
        log.info("retrain: %s", " ".join(self.command()))
        self._proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = self._proc.communicate()
        code = self._proc.returncode
        write_text(self.out / "serve" / "retrain.log", f"$ {' '.join(self.command())}\n{output}\nexit {code}\n")
        self.last_build_s = round(time.perf_counter() - t0, 1)
        with self._lock:
            if code == 0:
                self.state, self.last_error, self.builds = "idle", None, self.builds + 1
            else:
                tail = (output or "").strip().splitlines()[-3:]
                self.state = "failed"
                self.last_error = f"build exited with {code} (see OUT/serve/retrain.log): {' | '.join(tail)}"
            again = self._again and not self._stopped
        if code == 0:
            log.info("retrain finished in %.0f s; loading the new model", self.last_build_s)
            self.on_built()
        else:
            log.error("retrain failed, the old model keeps serving: %s", self.last_error)
            self.on_failed(self.last_error)
        if again:
            self.lore_changed()

    def status(self) -> dict:
        return {"enabled": True, "state": self.state, "last_error": self.last_error,
                "last_build_s": self.last_build_s, "builds": self.builds}

    def stop(self) -> None:
        self._stopped = True
        self._debounce.cancel()
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
