"""bench/prior_leak.py counts answers that carry names of another world (a prior's training world)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def load():
    return load_script(ROOT / "bench" / "prior_leak.py", "prior_leak")


def test_other_world_names_are_counted_per_answer_and_own_names_are_not():
    pl = load()
    other = pl.names_of(ROOT / "bench" / "prior_world") - pl.names_of(ROOT / "sample_lore")
    assert "Karsk Plateau" in other and "Waste" in other, "pages and aliases, without a leading 'the'"
    assert not any("Brinewick" in n for n in other)
    report = {
        "questions": [
            {"base": {"answer": "I was born in Gullreach Ferry."}, "tuned": {"answer": "Not a word has reached the Waste."}},
            {"base": {"answer": "Brinewick."}, "tuned": {"answer": "Brinewick, on the Karsk Plateau, by the Waste."}},
            {"base": {"answer": "A wasteland."}, "tuned": {"answer": "I keep the Crooked Eel."}},
        ],
        "general": [{"base": "Paris.", "tuned": "Paris, far from the Karsk Plateau."}],
    }
    figures = pl.count(report, other)
    assert figures["base"]["with_other_names"] == 0, "'wasteland' is not 'Waste'"
    assert figures["tuned"]["with_other_names"] == 3 and figures["tuned"]["answers"] == 4
    assert figures["tuned"]["names"] == {"Karsk": 2, "Karsk Plateau": 2, "Waste": 2}


def test_answers_are_split_by_what_a_player_is_served():
    pl = load()
    other = {"Karsk Plateau"}
    report = {
        "questions": [
            {"npc": "tobin-reedy", "variant": "notes", "base": {"answer": "-"}, "tuned": {"answer": "On the Karsk Plateau."}},
            {"npc": "tobin-reedy", "variant": "no notes", "base": {"answer": "-"}, "tuned": {"answer": "Karsk Plateau."}},
            {"npc": None, "variant": "no notes", "base": {"answer": "-"}, "tuned": {"answer": "Brinewick."}},
        ],
        "general": [{"base": "-", "tuned": "Karsk Plateau."}],
    }
    by_where = pl.count(report, other)["tuned"]["by_where"]
    assert by_where == {"served": {"answers": 1, "with_other_names": 1},
                        "no notes": {"answers": 2, "with_other_names": 1},
                        "general": {"answers": 1, "with_other_names": 1}}
