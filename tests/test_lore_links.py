"""Obsidian path-style links: `[[places/The Salt Gate]]`, with or without `.md`, resolve by path, else by name."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lorekit.compile import load_config, run
from lorekit.lore import facts_of, load_vault
from lorekit.lore.links import page_name, render_links

VAULT = Path(__file__).parent / "fixtures" / "vault_paths"


@pytest.fixture(scope="module")
def vault():
    return load_vault(VAULT)


def test_path_links_validate_cleanly(vault):
    assert [str(p) for p in vault.problems] == []


@pytest.mark.parametrize("target, name", [
    ("places/The Salt Gate", "The Salt Gate"),  # the page's path
    ("places/the salt gate.MD", "The Salt Gate"),  # case-insensitive, with the extension
    ("/places/The Salt Gate.md", "The Salt Gate"),  # from the vault root
    ("world/north/Gate", "North Gate"),  # the full path of a page whose name differs from its file
    ("north/Gate.md", "North Gate"),  # a trailing part of the path
    ("south/Gate", "South Gate"),  # same file name in another folder: the path decides
    ("elsewhere/The Salt Gate", "The Salt Gate"),  # no page at that path: the last part, as a name
    ("The Salt Gate.md", "The Salt Gate"),
    ("factions/Tide Wardens", "Tide Wardens"),
])
def test_resolve_by_path_then_by_last_part(vault, target, name):
    assert vault.resolve(target).name == name


def test_a_tail_shared_by_two_pages_does_not_pick_one(vault):
    assert vault.paths["world/north/gate"] == "north-gate"
    assert vault.resolve("north/Gate").name == "North Gate"
    assert vault.paths.get("gate") is None  # a bare file name is a name lookup, never a path key


def test_path_links_become_facts_with_page_names(vault):
    facts = {f.id: f for f in facts_of(vault)}
    assert facts["ilsa-brand.residence"].values == ("The Salt Gate",)
    assert facts["tide-wardens.headquarters"].values == ("North Gate",)
    assert facts["the-salt-gate.rev.residence"].values == ("Ilsa Brand",)
    assert vault.npcs["ilsa-brand"].knows >= {"the-salt-gate", "north-gate", "south-gate", "tide-wardens"}
    # prose shows the page name, not the folder: `[[elsewhere/The Salt Gate]]` reads "The Salt Gate"
    assert "drinks at The Salt Gate after" in vault.entities["ilsa-brand"].summary


def test_render_shows_the_page_name_or_the_shown_text():
    assert render_links("in [[places/The Salt Gate.md]]") == "in The Salt Gate"
    assert render_links("at [[south/Gate|the south gate]]") == "at the south gate"
    assert page_name("a\\b\\C.md") == "C"


def test_missing_path_link_suggests_the_page_name(tmp_path):
    vault = tmp_path / "vault"
    shutil.copytree(VAULT, vault)
    page = vault / "factions" / "Tide Wardens.md"
    page.write_text(page.read_text().replace("[[world/north/Gate]]", "[[places/The Salt Gat]]"))
    problems = [str(p) for p in load_vault(vault).problems]
    assert problems == ["factions/Tide Wardens.md:4: link to missing page [[places/The Salt Gat]] in `headquarters`"
                        " (did you mean [[The Salt Gate]]?)"]


def test_compile_and_fast_path_resolve_path_links(tmp_path):
    vault = tmp_path / "vault"
    shutil.copytree(VAULT, vault)
    (vault / "lorekit.toml").write_text("[compile]\nnotes = false  # the fast path serves builds without notes\n")
    out = tmp_path / "out"
    first = run(vault, out, load_config(vault))
    texts = [t["value"] for line in first.train_path.read_text().splitlines()
             for t in json.loads(line)["conversations"] if t["from"] != "system"]
    assert any("North Gate" in t for t in texts)
    assert not [t for t in texts if "/Gate" in t or ".md" in t or "places/" in t]
    # a prose edit on a page whose fields are path links: patched in place, same bytes as a full compile
    page = vault / "factions" / "Tide Wardens.md"
    page.write_text(page.read_text().replace("high water", "spring tides"))
    edited = run(vault, out, load_config(vault))
    assert edited.fast and edited.rendered > 0
    full = run(vault, tmp_path / "full", load_config(vault, {"cache": False}))
    for name in ("train.jsonl", "eval.jsonl", "report.json"):
        assert (out / "dataset" / name).read_bytes() == (full.out / "dataset" / name).read_bytes(), name
