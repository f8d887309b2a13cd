"""The validator: one broken fixture vault per error kind, asserting the message text and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorekit.compile import check
from lorekit.lore import facts_of, load_vault

FIXTURES = Path(__file__).parent / "fixtures"
BROKEN = FIXTURES / "broken"

CASES = {
    "malformed_yaml": ("Bad.md", 4, "malformed YAML front matter"),
    "missing_type": ("Nobody.md", 1, "missing `type`"),
    "unknown_type": ("Typo.md", 2, "unknown type `charactr` (did you mean `character`?"),
    "missing_field": ("Mute.md", 3, "missing required field `npc.voice` for NPC `Mute`"),
    "missing_link": ("Wanderer.md", 3, "link to missing page [[Hom]] in `residence` (did you mean [[Home]]?)"),
    "duplicate_alias": ("Bob Two.md", 3, "duplicate alias `Ann`: already used by `Ann One`"),
    "not_utf8": ("Latin.md", 4, "not UTF-8 text (byte 0xe9)"),
    "empty_page": ("Blank.md", 1, "empty page"),
    "npc_knows_nothing": ("Hermit.md", 5, "NPC `Hermit` knows nothing beyond itself"),
    "template_field": ("_templates/fields/kind.j2", 11, "template uses `specialty`, which Home.md:3 (fact `home.kind`) lacks"),
    "npc_both_forms": ("Wren.md", 6, "NPC fields both under `npc:` (line 3) and at the top level: `greeting` (line 6)"),
    "persona_not_read": ("Hob.md", 4, "`voice` and `knows` are NPC fields, but `Hob` is not an NPC"),
    "id_collision": ("b/Zoe Varga.md", 1, "`Zoe Varga` gives the id `zoe-varga`, which `Zoë Varga` (a/Zoë Varga.md) already has"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_error_kind_is_reported_with_file_line_and_fix(name):
    file, line, text = CASES[name]
    errors = [p for p in check(BROKEN / name) if p.severity == "error"]
    assert len(errors) >= 1, errors
    match = [p for p in errors if p.file == file and text in str(p)]
    assert match, [str(p) for p in errors]
    assert match[0].line == line
    assert str(match[0]).startswith(f"{file}:{line}: ")
    assert match[0].fix  # every problem says how to fix it


def test_every_error_kind_has_a_fixture():
    assert sorted(p.name for p in BROKEN.iterdir() if p.is_dir()) == sorted([*CASES, "unknown_config_key"])


def test_missing_link_without_a_close_name_suggests_creating_the_page():
    errors = [str(p) for p in check(BROKEN / "missing_link")]
    assert "Wanderer.md:5: link to missing page [[Nowhere Town]] (create a page `Nowhere Town.md` or fix the link)" in errors


def test_good_vault_has_no_problems_and_a_sane_graph():
    vault = load_vault(FIXTURES / "vault_ok")
    assert [str(p) for p in vault.problems] == []
    assert sorted(vault.npcs) == ["mara-vell", "oren-vell"]
    mara = vault.npcs["mara-vell"]
    assert mara.greeting.startswith("State your business")
    assert mara.page == "people/Mara Vell.md"
    assert vault.resolve("the ash widow").name == "Mara Vell"  # aliases, case-insensitive
    # knows: a link, a #tag, known_by grants the Long Winter; the secret ledger is refused, not told
    assert mara.knows == {"mara-vell", "ash-guild", "cinderfall", "oren-vell", "long-winter"}
    assert mara.secrets == {"the-ember-ledger"}
    oren = vault.npcs["oren-vell"]  # knows "*": every public page, not the secret nor the known_by one
    assert "the-ember-ledger" not in oren.knows and "long-winter" not in oren.knows
    assert "greywater" in oren.knows


def test_relations_become_facts_in_both_directions():
    vault = load_vault(FIXTURES / "vault_ok")
    facts = {f.id: f for f in facts_of(vault)}
    assert facts["ash-guild.leader"].expect == ("Mara Vell",)
    assert facts["mara-vell.rev.leader"].values == ("Ash Guild",)
    assert facts["cinderfall.rev.residence"].values == ("Mara Vell", "Oren Vell")
    assert facts["mara-vell.family"].values == ("Oren Vell (brother)",)
    # a secret page's links are not asked backwards (that would leak it to everyone)
    assert "mara-vell.rev.owner" not in facts


def test_ignored_files_are_not_pages():
    vault = load_vault(FIXTURES / "vault_ok")
    assert all(not p.path.startswith(("_", ".")) for p in vault.pages)
    assert len(vault.pages) == 7
