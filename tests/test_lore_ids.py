"""Ids from names in any alphabet: transliterated (anyascii), readable, stable; collisions are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorekit.cli import main
from lorekit.lore import load_vault, slug

OBSIDIAN = Path(__file__).parent / "fixtures" / "obsidian"


@pytest.mark.parametrize(("name", "expected"), [
    ("Zoë Varga", "zoe-varga"),
    ("Ælfric", "aelfric"),
    ("Ørjan Straße", "orjan-strasse"),
    ("Łódź", "lodz"),
    ("Владимир Путин", "vladimir-putin"),  # Cyrillic
    ("Ἀθηνᾶ", "athina"),  # Greek
    ("李白", "li-bai"),  # Chinese: one word per syllable
    ("北京", "bei-jing"),
    ("김민준", "gim-min-jun"),  # Korean
    ("さくら", "sakura"),  # Japanese kana
    ("Mara Vell", "mara-vell"),  # ASCII names keep the ids they always had
    ("The Salt Gate", "the-salt-gate"),
    ("Kray's Skerry", "kray-s-skerry"),
    ("!!!", "page"),
])
def test_slug_transliterates(name, expected):
    assert slug(name) == expected
    assert slug(name) == slug(name)  # stable


def test_fixture_ids_are_readable():
    vault = load_vault(OBSIDIAN)
    assert {"zoe-varga", "aelfric-dunn", "bei-jing", "vladimir", "athina"} <= set(vault.entities)
    assert sorted(vault.npcs) == ["aelfric-dunn", "zoe-varga"]
    assert vault.resolve("北京").id == "bei-jing"


def test_two_names_with_one_id_are_an_error_naming_both_files(tmp_path):
    (tmp_path / "Zoë Varga.md").write_text("---\ntype: character\n---\n# Zoë Varga\n\nShe sails.\n")
    (tmp_path / "Zoe Varga.md").write_text("---\ntype: character\n---\n# Zoe Varga\n\nShe sells rope.\n")
    errors = [str(p) for p in load_vault(tmp_path).errors]
    assert errors == ["Zoë Varga.md:1: `Zoë Varga` gives the id `zoe-varga`, which `Zoe Varga` (Zoe Varga.md) already "
                      "has (rename one of the two pages, or give one an `id:` line of its own, in lower-case letters, "
                      "digits and hyphens)"]


def test_an_id_line_sets_the_id_and_must_be_an_id(tmp_path):
    (tmp_path / "Zoë Varga.md").write_text("---\ntype: character\nid: zoe-the-elder\n---\n# Zoë Varga\n\nShe sails.\n")
    (tmp_path / "Zoe Varga.md").write_text("---\ntype: character\n---\n# Zoe Varga\n\nShe sells rope.\n")
    vault = load_vault(tmp_path)
    assert vault.errors == [] and {"zoe-the-elder", "zoe-varga"} == set(vault.entities)
    (tmp_path / "Zoë Varga.md").write_text("---\ntype: character\nid: Zoë V\n---\n# Zoë Varga\n\nShe sails.\n")
    errors = [str(p) for p in load_vault(tmp_path).errors]
    assert "Zoë Varga.md:3: `id: Zoë V` is not an id (use lower-case letters, digits and hyphens: `id: zoe-v`)" in errors


def test_validate_prints_the_npc_ids(capsys):
    assert main(["validate", str(OBSIDIAN)]) == 0
    out = capsys.readouterr().out
    assert "NPC ids (a game asks for an NPC by its id" in out
    assert "  zoe-varga     Zoë Varga (people/Zoë Varga.md)" in out
    assert "  aelfric-dunn  Ælfric Dunn (people/Ælfric Dunn.md)" in out
