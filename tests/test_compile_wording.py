"""Wording of the compiled sample world: NPCs speak of themselves in the first person, "What is"
for things that are not people, years with "in", one answer per question, natural reverse questions."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest

from lorekit.compile import load_config, run
from lorekit.lore import load_vault
from lorekit.lore.article import name_in
from tests.conftest import SAMPLE_LORE as SAMPLE  # noqa: E402

FACT_KINDS = ("field", "reverse", "summary", "section")


def turns(row: dict) -> list[tuple[str, str]]:
    conv = [t["value"] for t in row["conversations"] if t["from"] != "system"]
    return list(zip(conv[::2], conv[1::2], strict=True))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    result = run(SAMPLE, out, load_config(SAMPLE, {"cache": False, "max_facts": 0}))  # the whole world
    rows = [json.loads(line) for p in (result.train_path, result.eval_path)
            for line in p.read_text(encoding="utf-8").splitlines()]
    return load_vault(SAMPLE), rows


def own_rows(vault, rows):
    """Fact rows where the speaking NPC is the page the fact is about."""
    return [r for r in rows if r["meta"]["npc"] and r["meta"]["kind"] in FACT_KINDS
            and r["meta"]["facts"][0].startswith(r["meta"]["npc"] + ".")
            and vault.entities[r["meta"]["npc"]].id == r["meta"]["facts"][0].split(".")[0]]


def test_npcs_speak_of_themselves_in_the_first_person(sample):
    vault, rows = sample
    own = own_rows(vault, rows)
    assert len(own) >= 100
    for r in own:
        name = vault.npcs[r["meta"]["npc"]].name
        (question, answer), = turns(r)
        assert name not in answer, r  # never "Hessa Orrin owns ..." from Hessa Orrin herself
        assert name not in r["meta"]["expect"] and all(name_in(v, answer) for v in r["meta"]["expect"]), r
        assert re.search(r"\b(I|my|My|me)\b", answer), r
    questions = [turns(r)[0][0] for r in own]
    with_you = [q for q in questions if re.search(r"\b(you|your|yourself)\b", q)]
    with_name = [q for r, q in zip(own, questions, strict=True) if vault.npcs[r["meta"]["npc"]].name in q]
    assert len(with_you) >= 20 and len(with_name) >= 20  # "What do you own?" and the full-name phrasings


def test_other_speakers_still_use_the_full_name(sample):
    vault, rows = sample
    owner = [r for r in rows if r["meta"]["facts"] == ["hessa-orrin.rev.owner"]]
    assert {r["meta"]["npc"] for r in owner} > {"hessa-orrin"}
    for r in owner:
        answer = turns(r)[0][1]
        assert ("I own the Sluice Key" in answer) == (r["meta"]["npc"] == "hessa-orrin"), r
        assert r["meta"]["expect"] == ["The Sluice Key"]


def test_npcs_named_in_other_facts_say_it_is_them(sample):
    vault, rows = sample
    oar = [r for r in rows if r["meta"]["facts"] == ["the-heron-oar.owner"]]
    assert any(r["meta"]["npc"] == "tobin-reedy" for r in oar)
    for r in oar:
        answer = turns(r)[0][1]
        assert "Tobin Reedy" in answer and r["meta"]["expect"] == ["Tobin Reedy"]
        assert ("Tobin Reedy (that is me)" in answer) == (r["meta"]["npc"] == "tobin-reedy"), r


def test_who_is_only_for_people(sample):
    vault, rows = sample
    for r in rows:
        for question, _ in turns(r):
            m = re.fullmatch(r"Who is (.+)\?", question)
            if m and vault.resolve(m.group(1)) is not None:
                assert vault.resolve(m.group(1)).type == "character", (question, r["meta"])
    secrets = [turns(r)[0][0] for r in rows if r["meta"]["kind"] == "secret"]
    assert secrets and not any(q.startswith("Who is The Sundering") for q in secrets)


def test_years_take_in(sample):
    _, rows = sample
    answers = [a for r in rows if r["meta"]["kind"] == "field" for _, a in turns(r)]
    assert not [a for a in answers if re.search(r"\b(happened|founded) \d", a)]
    assert any("happened in 1190 AT" in a for a in answers) and any("founded in 602 AT" in a for a in answers)
    assert any("founded around 1338 AT" in a for a in answers)  # no "in around"


def test_each_question_has_one_answer(sample):
    _, rows = sample
    facts = defaultdict(set)
    for r in rows:
        if r["meta"]["kind"] in FACT_KINDS:
            facts[(r["meta"]["npc"], turns(r)[0][0])].add(r["meta"]["facts"][0])
    assert not {k: v for k, v in facts.items() if len(v) > 1}
    kind = [turns(r)[0][0] for r in rows if r["meta"]["facts"] == ["vellicor.kind"]]
    assert kind and all("kind" in q or "sort" in q or "type" in q or "manner" in q for q in kind)


def test_reverse_questions_are_natural(sample):
    _, rows = sample
    reverse = [q for r in rows if r["meta"]["kind"] == "reverse" for q, _ in turns(r)]
    assert reverse and not [q for q in reverse if re.search(r"\b(pages?|fields?|lists?)\b", q)]
    capital = [q for r in rows if r["meta"]["facts"] == ["vellicor.rev.capital"] for q, _ in turns(r)]
    assert capital and all("capital" in q for q in capital)
    # a place's items and events are asked about in words that fit both
    place = [(q, a) for r in rows if r["meta"]["facts"] == ["lanternhold.rev.location"] for q, a in turns(r)]
    assert place and not [q for q, _ in place if re.search(r"\bkept\b|^What happened (in|at)", q)]
    assert all("the Siege of Lanternhold" in a and "the Ninefold Lantern" in a for _, a in place)


def test_reverse_location_fits_what_is_there(sample):
    _, rows = sample

    def asked(fact):
        return [(q, a) for r in rows if r["meta"]["facts"] == [fact] for q, a in turns(r)]
    items, events = asked("the-coral-athenaeum.rev.location"), asked("vellicor.rev.location")
    assert items and all(re.search(r"\b(kept|found|held|lies|stored|rests)\b", q) for q, _ in items)
    assert all(a.endswith("are kept at the Coral Athenaeum.") for _, a in items)
    assert events and all(re.search(r"\b(happened|took place|occurred|came to pass)\b", q) for q, _ in events)
    assert all(a.endswith("took place at Vellicor.") for _, a in events)


def test_a_leading_the_is_lower_case_inside_sentences(sample):
    vault, rows = sample
    names = [e.name for e in vault.entities.values() if e.name.startswith("The ")]
    inside = re.compile(r"[a-z,] (" + "|".join(re.escape(n) for n in names) + r")\b")
    texts = [t["value"] for r in rows for t in r["conversations"]]
    assert not [m.group(0) for t in texts for m in inside.finditer(t)]
    assert any("lives in the Crooked Eel" in t or "at the Crooked Eel" in t for t in texts)
    assert any(t.startswith("The Crooked Eel ") for t in texts)
