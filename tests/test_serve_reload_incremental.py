"""A reload after an edit builds again only the notes the edit could change (lorekit.grounding.reload),
and gives exactly what a fresh full load of the same folder gives: every NPC's notes, prompts, the
notes a line retrieves. Each kind of edit on a copy of the sample world with notes on."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import grounded_copy

pytest.importorskip("bm25s")

from lorekit.serve.personas import Lore  # noqa: E402

LINES = ["Who are you?", "Where were you born?", "Who leads the Oarsmen's Brotherhood?", "Tell me about Brinewick.",
         "What do you know of the Pale Heron?", "Who is Hobb Marlow?", "What does a crossing cost?",
         "Tell me about Mother Crumb.", "What is the Midnight Ferry?"]
HISTORY = [{"role": "user", "content": "Tell me about Hobb Marlow."}, {"role": "assistant", "content": "He rows."}]


@pytest.fixture
def world(tmp_path) -> tuple[Path, Lore]:
    root = grounded_copy(tmp_path / "lore")
    lore = Lore(root)
    assert lore.load().ok
    return root, lore


def edit(root: Path, page: str, old: str, new: str) -> None:
    path = root / page
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{page} no longer says {old!r}: update the test"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def assert_as_fresh(lore: Lore, lines: tuple[str, ...] = ()) -> None:
    """The reloaded snapshot has exactly the notes (and prompts) of a full load from nothing."""
    fresh = Lore(lore.root)
    assert fresh.load().ok
    new, ref = lore.current, fresh.current
    assert new.prompts == ref.prompts and new.npcs == ref.npcs
    a, b = new.retriever.book, ref.retriever.book
    assert a.notes == b.notes
    assert a.by_npc == b.by_npc
    assert a.digest == b.digest and new.notes == ref.notes
    for npc in ref.npcs:
        assert a.of(npc) == b.of(npc)
        for line in LINES + list(lines):
            assert new.notes_for(npc, line, []) == ref.notes_for(npc, line, []), (npc, line)
        assert new.notes_for(npc, "Who does he work for?", HISTORY) == ref.notes_for(npc, "Who does he work for?", HISTORY)


def test_a_fact_edit_rebuilds_only_the_npc_that_knows_the_page(world):
    root, lore = world
    before = lore.current
    edit(root, "characters/Hobb Marlow.md", "costs one copper tide", "costs two copper tide")  # same size
    result = lore.load()
    assert result.ok and result.changed == ["tobin-reedy"]
    assert lore.notes_rebuilt == ["tobin-reedy"], "only Tobin knows Hobb Marlow's page"
    notes = lore.current.notes_for("tobin-reedy", "What does a crossing at Gullreach cost?", [])
    assert any("two copper tide" in n.text for n in notes)
    for npc in set(lore.current.npcs) - {"tobin-reedy"}:  # the others keep their very notes
        assert lore.current.retriever.book.of(npc) == before.retriever.book.of(npc)
    assert_as_fresh(lore, ("What does a crossing at Gullreach cost?",))


def test_a_new_page_and_then_an_npc_that_knows_it(world):
    root, lore = world
    (root / "places" / "The Salt Market.md").write_text(
        "---\ntype: location\naliases: [the Market]\npart_of: \"[[Brinewick]]\"\n---\n# The Salt Market\n\n"
        "The Salt Market fills the quay of [[Brinewick]] on tide days. Its stalls sell brine-cured eel.\n",
        encoding="utf-8")
    assert lore.load().ok
    assert_as_fresh(lore, ("What is sold at the Salt Market?",))
    edit(root, "characters/Tobin Reedy.md", '"[[Hobb Marlow]]"]', '"[[Hobb Marlow]]", "[[The Salt Market]]"]')
    assert lore.load().ok
    assert any("eel" in n.text for n in lore.current.notes_for("tobin-reedy", "What is sold at the Salt Market?", []))
    assert_as_fresh(lore, ("What is sold at the Salt Market?",))


def test_a_deleted_page(world):
    root, lore = world
    assert lore.current.retriever.book.of("olwin-sparrowgrave")
    (root / "lore" / "The Lost Verse of the Codex.md").unlink()
    assert lore.load().ok
    assert not any(n.entity == "the-lost-verse-of-the-codex" for n in lore.current.retriever.book.notes.values())
    assert_as_fresh(lore, ("What is the Lost Verse?",))


def test_a_renamed_alias(world):
    root, lore = world
    edit(root, "characters/Bettany Crumb.md", "Mother Crumb", "Ma Crumb")
    assert lore.load().ok
    assert lore.current.notes_for("bettany-crumb", "Tell me about Ma Crumb.", [])
    assert_as_fresh(lore, ("Tell me about Ma Crumb.", "Who is Ma Crumb?"))


def test_a_broken_page_keeps_the_last_good_notes_and_the_edits_made_meanwhile_arrive(world):
    root, lore = world
    good = lore.current
    edit(root, "characters/Hobb Marlow.md", "costs one copper tide", "costs two copper tide")
    page = root / "places" / "Brinewick.md"
    text = page.read_text(encoding="utf-8")
    page.write_text(text.replace("type: location", "type: [location", 1), encoding="utf-8")
    result = lore.load()
    assert not result.ok and result.errors
    assert lore.current is good  # turns keep using the last good notes
    page.write_text(text, encoding="utf-8")
    assert lore.load().ok
    notes = lore.current.notes_for("tobin-reedy", "What does a crossing at Gullreach cost?", [])
    assert any("two copper tide" in n.text for n in notes)
    assert_as_fresh(lore)


def test_a_secret_added_to_a_page_and_to_an_npc(world):
    root, lore = world
    hidden = "Hobb skims a copper from every fare."
    path = root / "characters" / "Hobb Marlow.md"
    path.write_text(path.read_text(encoding="utf-8") + f"\n## Secret\n\n{hidden}\n", encoding="utf-8")
    assert lore.load().ok
    assert_as_fresh(lore, ("Does Hobb steal from the fares?",))
    edit(root, "characters/Tobin Reedy.md", 'secrets: ["[[The Midnight Ferry]]"]',
         'secrets: ["[[The Midnight Ferry]]", "[[Hobb Marlow]]"]')
    assert lore.load().ok
    book = lore.current.retriever.book
    assert any(n.secret and n.entity == "hobb-marlow" for n in book.of("tobin-reedy"))
    assert not any(hidden in n.text for npc in book.by_npc for n in book.of(npc)), "no NPC is given its text"
    assert_as_fresh(lore, ("Does Hobb steal from the fares?",))


def test_a_template_edit_renders_every_note_again(world):
    root, lore = world
    override = root / "_templates" / "fields"
    override.mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parent.parent / "templates" / "fields" / "occupation.j2", override)
    edit(root, "_templates/fields/occupation.j2", "works as {{ fact.value|article }}.",
         "works as {{ fact.value|article }}, by trade.")
    assert lore.load().ok
    assert lore.current.retriever.book.notes["hobb-marlow.occupation"].text == "Hobb Marlow works as a ferryman, by trade."
    assert_as_fresh(lore)


def test_an_edit_within_the_same_second_is_read_again(world):
    """The page cache trusts size and time only for pages older than 2 s before the last load: a
    same-size save in the same clock tick as the last load is still read."""
    root, lore = world
    edit(root, "characters/Hobb Marlow.md", "costs one copper tide", "costs two copper tide")
    assert lore.load().ok
    path = root / "characters" / "Hobb Marlow.md"
    st = path.stat()
    edit(root, "characters/Hobb Marlow.md", "costs two copper tide", "costs six copper tide")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same size and the same modification time
    assert time.time_ns() - st.st_mtime_ns < 2_000_000_000
    assert lore.load().ok
    notes = lore.current.notes_for("tobin-reedy", "What does a crossing at Gullreach cost?", [])
    assert any("six copper tide" in n.text for n in notes)


def test_the_notes_equal_those_compile_builds(world):
    """The reload's own assembly of facts and notes (page by page) against `build_notes` over `facts_of`."""
    from lorekit.compile import load_config
    from lorekit.compile.build import keep_fact
    from lorekit.compile.dataset import Builder
    from lorekit.grounding import build_notes
    from lorekit.grounding.notes import keeper_statement
    from lorekit.lore import facts_of
    from lorekit.prompt import templates_for

    root, lore = world
    edit(root, "characters/Hobb Marlow.md", "costs one copper tide", "costs two copper tide")
    assert lore.load().ok
    vault, cfg = lore.current.vault, load_config(root)
    builder = Builder(vault, cfg, templates_for(vault, cfg.template_dir or None), lore.current.prompts)
    book = build_notes(vault, keeper_statement(builder), facts=[f for f in facts_of(vault) if keep_fact(f, cfg)])
    assert lore.current.retriever.book.notes == book.notes and lore.current.retriever.book.by_npc == book.by_npc


def test_a_tag_that_brings_a_page_into_an_npcs_knowledge_rebuilds_its_notes(world):
    """Bettany Crumb knows every `#brinewick` page: tagging Lanternhold so puts it in her notes, and
    taking the tag off The Crooked Eel takes that page out, though neither page is in her `knows` list."""
    root, lore = world
    edit(root, "places/Lanternhold.md", "tags: [lanternhold,", "tags: [brinewick, lanternhold,")
    assert lore.load().ok
    assert any(n.entity == "lanternhold" for n in lore.current.retriever.book.of("bettany-crumb"))
    assert_as_fresh(lore, ("Who rules Lanternhold?",))
    edit(root, "places/The Crooked Eel.md", "tags: [brinewick, inn]", "tags: [inn]")
    assert lore.load().ok
    assert_as_fresh(lore, ("What does the Crooked Eel serve?",))
