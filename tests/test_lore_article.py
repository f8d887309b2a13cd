"""A leading "The" in page names: lower-cased inside sentences unless `article_in_name: true`; the
reverse `location` question asked by what the located pages are."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorekit.compile import load_config, run
from lorekit.lore import facts_of, load_vault
from lorekit.lore.article import Article, article_names, name_in

PAGES = {
    "places/The Salt Gate.md": "---\ntype: location\n---\n# The Salt Gate\n\nThe Salt Gate is the harbour entrance.\n",
    "places/The Hague.md": "---\ntype: location\narticle_in_name: true\n---\n# The Hague\n\nThe Hague is a city of courts.\n",
    "people/Ilsa Brand.md": "---\ntype: character\nresidence: \"[[The Salt Gate]]\"\nlocation: \"[[The Hague]]\"\n"
                            "npc:\n  voice: Curt.\n  greeting: Papers.\n  knows: [\"*\"]\n"
                            "---\n# Ilsa Brand\n\nIlsa Brand keeps the gate. She sails to The Hague each spring.\n",
    "people/Bram Holt.md": "---\ntype: character\nresidence: \"[[The Hague]]\"\n---\n# Bram Holt\n\nBram Holt is a judge.\n",
    "items/Brass Key.md": "---\ntype: item\nlocation: \"[[The Salt Gate]]\"\n---\n# Brass Key\n\nThe Brass Key opens the gate.\n",
    "factions/Gatewatch.md": "---\ntype: faction\naliases: [the Watch]\nheadquarters: \"[[The Salt Gate]]\"\n---\n"
                             "# Gatewatch\n\nThe Gatewatch guards the gate; The Watch never sleeps.\n",
}


def write_vault(root: Path, pages: dict[str, str] = PAGES) -> Path:
    for rel, text in pages.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    return root


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for name in ("train.jsonl", "eval.jsonl")
            for line in (out / "dataset" / name).read_text(encoding="utf-8").splitlines()]


def qa(out: Path) -> list[tuple[str, str, dict]]:
    # the plain player line (grounded rows also carry lore notes in that turn)
    return [(r["meta"].get("question") or r["conversations"][-2]["value"], r["conversations"][-1]["value"], r["meta"])
            for r in _rows(out)]


@pytest.mark.parametrize("text, want", [
    ("The Salt Gate is shut.", "The Salt Gate is shut."),  # a sentence starts with it
    ("Who lives in The Salt Gate?", "Who lives in the Salt Gate?"),
    ("Ilsa. The Salt Gate, then The Salt Gate's wall.", "Ilsa. The Salt Gate, then the Salt Gate's wall."),
    ("the mask: The Cantor's Mask, The Ebbwatch's seat", "the mask: The Cantor's Mask, the Ebbwatch's seat"),
    ("- The Salt Gate\n- (The Salt Gate)", "- The Salt Gate\n- (The Salt Gate)"),  # list items start a line
    ('She said "The Salt Gate is shut".', 'She said "The Salt Gate is shut".'),  # a quote starts a sentence
    ("Facts: The Salt Gate.", "Facts: The Salt Gate."),
    ("near The Salt Gates and The Saltmarsh", "near The Salt Gates and The Saltmarsh"),  # other names
])
def test_article_lower_cases_the_inside_sentences(text, want):
    assert Article(["The Salt Gate", "The Cantor's Mask", "The Ebbwatch"])(text) == want


def test_article_names_and_name_in(tmp_path):
    vault = load_vault(write_vault(tmp_path))
    assert [str(p) for p in vault.problems] == []
    # the page flagged `article_in_name` is left out; an alias "the Watch" counts as "The Watch"
    assert article_names(vault.entities.values()) == ["The Salt Gate", "The Watch"]
    assert name_in("The Salt Gate", "lives in the Salt Gate") and not name_in("The Salt Gate", "lives in Salt Gate")


def test_article_in_name_must_be_a_boolean(tmp_path):
    write_vault(tmp_path, {"A.md": "---\ntype: location\narticle_in_name: yes please\n---\n# The A\n\nThe A is a.\n"})
    assert [str(p) for p in load_vault(tmp_path).errors] == [
        'A.md:3: `article_in_name` must be true or false (write `article_in_name: true` to keep a leading "The"'
        ' capitalised mid-sentence)']


def test_compiled_rows_follow_the_rule(tmp_path):
    out = tmp_path / "out"
    run(write_vault(tmp_path / "vault"), out, load_config(tmp_path / "vault", {"multi_turn": 12}))
    rows = qa(out)
    answers = [a for _, a, _ in rows]
    assert "Ilsa Brand lives in the Salt Gate." in answers
    assert "Bram Holt lives in The Hague." in answers  # article_in_name: true
    assert any(a.startswith("The Salt Gate ") for a in answers)  # the first word of a sentence keeps "The"
    assert any(q == "Who lives in the Salt Gate?" for q, _, _ in rows)
    assert "She sails to The Hague each spring." in " ".join(answers)  # prose keeps a flagged name
    for q, a, meta in rows:
        assert " The Salt Gate" not in q and ". The Watch" not in a.replace("The Watch never", "")
        assert meta["kind"] == "multi_turn" or all(name_in(v, a) for v in meta["expect"]), (q, a, meta)
    # every row, multi-turn ones too, expects each value its answers state in either form
    facts = {f.id: f for f in facts_of(load_vault(tmp_path / "vault"))}
    multi = [r for r in _rows(out) if r["meta"]["kind"] == "multi_turn"]
    assert multi
    for r in _rows(out):
        said = " ".join(t["value"] for t in r["conversations"] if t["from"] == "gpt")
        stated = {v for fid in r["meta"]["facts"] for v in facts[fid].expect if name_in(v, said)}
        assert stated <= set(r["meta"]["expect"]), r
    salt = [m for _, _, m in rows if m["facts"] == ["ilsa-brand.residence"]]
    assert salt and all(m["expect"] == ["The Salt Gate"] for m in salt)  # expect keeps the page's name


def test_flag_change_recompiles_like_a_full_build(tmp_path):
    vault, out = write_vault(tmp_path / "vault"), tmp_path / "out"
    run(vault, out, load_config(vault))
    page = vault / "places" / "The Salt Gate.md"
    page.write_text(page.read_text().replace("type: location\n", "type: location\narticle_in_name: true\n"))
    again = run(vault, out, load_config(vault))
    assert not again.fast and "Ilsa Brand lives in The Salt Gate." in [a for _, a, _ in qa(out)]
    full = run(vault, tmp_path / "full", load_config(vault, {"cache": False}))
    for name in ("train.jsonl", "eval.jsonl", "report.json"):
        assert (out / "dataset" / name).read_bytes() == (full.out / "dataset" / name).read_bytes(), name


def test_reverse_location_is_asked_by_what_is_there(tmp_path):
    out = tmp_path / "out"
    run(write_vault(tmp_path / "vault"), out, load_config(tmp_path / "vault"))
    rows = qa(out)
    people = [(q, a) for q, a, m in rows if m["facts"] == ["the-hague.rev.location"]]
    things = [(q, a) for q, a, m in rows if m["facts"] == ["the-salt-gate.rev.location"]]
    assert people and all(q.startswith("Who") or q.startswith("Whom") or q.startswith("Name someone") for q, _ in people)
    assert all(a.endswith("can be found at The Hague.") for _, a in people), people
    assert things and not [q for q, _ in things if q.startswith("Who")]
    assert all(a == "Brass Key is kept at the Salt Gate." for _, a in things), things
