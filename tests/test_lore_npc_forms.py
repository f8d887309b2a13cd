"""NPC fields in both forms: nested under `npc:`, or flat beside `npc: true`; errors that say where."""

from __future__ import annotations

from pathlib import Path

from lorekit.lore import facts_of, load_vault

OBSIDIAN = Path(__file__).parent / "fixtures" / "obsidian"

NESTED = """---
type: character
occupation: smith
npc:
  voice: Gruff and short.
  greeting: "Forge is hot."
  style: Never says please.
  knows: ["[[Town]]"]
---
# Bran

Bran shoes horses in [[Town]].
"""

FLAT = """---
type: character
npc: true
occupation: smith
voice: Gruff and short.
greeting: "Forge is hot."
style: Never says please.
knows: ["[[Town]]"]
---
# Bran

Bran shoes horses in [[Town]].
"""

TOWN = "---\ntype: location\n---\n# Town\n\nTown is small.\n"


def _vault(tmp_path: Path, bran: str, **more: str):
    (tmp_path / "Bran.md").write_text(bran, encoding="utf-8")
    (tmp_path / "Town.md").write_text(TOWN, encoding="utf-8")
    for name, text in more.items():
        (tmp_path / f"{name}.md").write_text(text, encoding="utf-8")
    return load_vault(tmp_path)


def test_flat_fields_equal_the_nested_table(tmp_path):
    (tmp_path / "n").mkdir()
    (tmp_path / "f").mkdir()
    nested, flat = _vault(tmp_path / "n", NESTED), _vault(tmp_path / "f", FLAT)
    assert [str(p) for p in flat.problems] == [] and [str(p) for p in nested.problems] == []
    a, b = nested.npcs["bran"], flat.npcs["bran"]
    assert (a.voice, a.greeting, a.style, a.knows) == (b.voice, b.greeting, b.style, b.knows)
    assert b.voice == "Gruff and short." and b.knows == {"bran", "town"}


def test_flat_persona_fields_are_never_taught_as_facts(tmp_path):
    vault = _vault(tmp_path, FLAT)
    fields = {f.field for f in facts_of(vault) if f.entity == "bran" and f.kind == "field"}
    assert fields == {"occupation"}  # no "What is Bran's voice?"


def test_the_flat_npc_page_of_the_fixture_vault(tmp_path):
    vault = load_vault(OBSIDIAN)
    zoe = vault.npcs["zoe-varga"]
    assert zoe.voice == 'Quick and wry; calls everyone "love".' and zoe.greeting == "Mind the nets, love."
    assert "gullhaven" in zoe.knows


def test_both_forms_on_one_page_name_both_lines(tmp_path):
    both = NESTED.replace("occupation: smith\n", "occupation: smith\nvoice: Loud.\n")
    problems = [str(p) for p in _vault(tmp_path, both).errors]
    assert problems == ["Bran.md:4: NPC fields both under `npc:` (line 5) and at the top level: `voice` (line 4) "
                        "(keep one form: move them under `npc:`, or write `npc: true` and keep every NPC field "
                        "at the top level)"]


def test_missing_voice_in_the_flat_form_names_the_flat_field(tmp_path):
    problems = [str(p) for p in _vault(tmp_path, FLAT.replace("voice: Gruff and short.\n", "")).errors]
    assert problems == ["Bran.md:3: missing required field `voice` for NPC `Bran` "
                        "(describe how they speak: `voice: Dry and clipped.`, at the top level beside `npc: true`)"]


def test_persona_fields_on_a_page_that_is_no_npc_are_not_read(tmp_path):
    no_npc = FLAT.replace("npc: true\n", "")
    vault = _vault(tmp_path, no_npc)
    problems = [str(p) for p in vault.errors]
    assert problems == ["Bran.md:4: `voice`, `greeting` and `knows` are NPC fields, but `Bran` is not an NPC "
                        "(it has no `npc: true`), so they are not read "
                        "(add `npc: true` to make Bran an NPC, or remove `voice`, `greeting` and `knows`)"]
    assert not vault.npcs
    assert {f.field for f in facts_of(vault) if f.kind == "field"} == {"occupation", "style"}


def test_a_persona_field_in_another_table_is_reported(tmp_path):
    odd = FLAT.replace("voice: Gruff and short.\n", "persona:\n  voice: Gruff and short.\n")
    problems = [str(p) for p in _vault(tmp_path, odd).errors]
    assert "Bran.md:6: `persona.voice` is not read: NPC fields go under `npc:`, or at the top level beside " \
           "`npc: true` (move `voice:` under `npc:`, or to the top level)" in problems
    assert any("missing required field `voice`" in p for p in problems)


def test_a_page_field_under_npc_says_where_it_belongs(tmp_path):
    odd = NESTED.replace("  style: Never says please.\n", "  birthplace: \"[[Town]]\"\n")
    problems = [str(p) for p in _vault(tmp_path, odd).errors]
    assert any(p.startswith("Bran.md:7: unknown npc field `birthplace` (page fields such as `birthplace` go at "
                            "the top level, outside `npc:`") for p in problems), problems


def test_a_farewell_is_an_npc_field_and_goodbye_points_to_it(tmp_path):
    ok = NESTED.replace("  style: Never says please.\n", "  style: Never says please.\n  farewell: Off with you.\n")
    vault = _vault(tmp_path, ok)
    assert not vault.errors and vault.npcs["bran"].farewell == "Off with you."
    assert "farewell" not in {f.field for f in facts_of(vault) if f.kind == "field"}  # persona, never a fact
    odd = NESTED.replace("  style: Never says please.\n", "  goodbye: Off with you.\n")
    (tmp_path / "odd").mkdir()
    problems = [str(p) for p in _vault(tmp_path / "odd", odd).errors]
    assert any("unknown npc field `goodbye` (use one of:" in p and "farewell" in p for p in problems), problems


def test_knows_nothing_in_the_flat_form(tmp_path):
    problems = [str(p) for p in _vault(tmp_path, FLAT.replace('knows: ["[[Town]]"]\n', "")).errors]
    assert problems == ["Bran.md:3: NPC `Bran` knows nothing beyond itself (list pages in `knows`, "
                        'e.g. knows: ["[[Ash Guild]]"], "#tag" or "*")']
