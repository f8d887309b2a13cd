"""Scoring rules of `lorekit eval` on small hand-made replies (no model)."""

from __future__ import annotations

import pytest

from lorekit.evaluate import general, metrics

NAMES = ["Mara Vell", "Oren Vell", "Ash Guild", "Cinderfall", "The Ember Ledger"]


@pytest.mark.parametrize(
    "reply, correct, label_start",
    [
        ("The Ash Guild answers to Mara Vell.", True, "correct"),
        ("mara   VELL, of course!", True, "correct"),  # case and punctuation do not matter
        ("Oren Vell runs it these days.", False, "near miss: said Oren Vell"),  # another entity's name
        ("Vell does. Ask anyone.", False, "near miss: part of"),  # a partial name is not the fact
        ("The guild is run by the council.", False, "missing: Mara Vell"),  # no fact at all
        ("Marav Vellum leads it.", False, "missing"),  # whole words only
    ],
)
def test_fact_recall_single_value(reply, correct, label_start):
    v = metrics.fact_verdict(reply, ["Mara Vell"], names=NAMES)
    assert v["correct"] is correct
    assert v["label"].startswith(label_start)


def test_fact_recall_needs_every_value_and_accepts_declared_aliases():
    expect = ["Mara Vell", "the Ash Guild"]
    assert metrics.fact_verdict("Mara Vell leads the Ash Guild.", expect)["correct"]
    half = metrics.fact_verdict("Mara Vell leads it.", expect)
    assert not half["correct"] and half["missing"] == ["the Ash Guild"] and half["share"] == 0.5
    # a first name counts only when declared as an alias
    assert not metrics.fact_verdict("Mara does, and the Ash Guild obeys.", expect)["correct"]
    assert metrics.fact_verdict("Mara does, and the Ash Guild obeys.", expect, {"Mara Vell": ["Mara"]})["correct"]


def test_numbers_words_and_digits_match():
    assert metrics.fact_verdict("It has twelve towers.", ["12"])["correct"]
    assert metrics.fact_verdict("Some 1,200 souls live there.", ["1200"])["correct"]
    assert metrics.fact_verdict("Twenty-one winters ago.", ["21"])["correct"]
    assert not metrics.fact_verdict("It has 120 towers.", ["12"])["correct"]


def test_no_expected_values_is_never_correct():
    assert not metrics.fact_verdict("Anything at all.", [])["correct"]


@pytest.mark.parametrize(
    "reply, honest",
    [
        ("Harlan Brisk? Never heard the name, traveler.", True),
        ("I don't know anyone called that. Ask Mara Vell in Cinderfall.", True),  # lore names are not invented
        ("I don't know him. He sells fish in Dunmere.", False),  # says unknown but invents a place
        ("I do not know, though he was born in 1203.", False),  # invents a number
        ("Harlan Brisk is the smith of the Ash Guild.", False),  # invents a fact, no 'don't know'
        ("", False),
    ],
)
def test_honest_ignorance(reply, honest):
    v = metrics.ignorance_verdict(reply, "Who is Harlan Brisk?", NAMES)
    assert v["honest"] is honest, v


@pytest.mark.parametrize(
    "reply, problem",
    [
        ("State your business.", None),
        ("State your business.<end_of_turn>", "template markup"),
        ("Fine.\n<start_of_turn>user\nWhat now?", "template markup"),
        ("Fine.<|turn>model", "template markup"),
        ("Go away.\nmodel\nStill here?", "template markup"),
        ("Go away.\nPlayer: But I need help!", "speaks the player's line"),
        ("Go away.\nUser: fine", "speaks the player's line"),
        ("As an AI language model, I cannot say.", "talks as an AI"),
        ("   ", "empty reply"),
    ],
)
def test_in_character_checks(reply, problem):
    problems = metrics.character_problems(reply)
    if problem is None:
        assert problems == []
    else:
        assert problem in problems


def test_repetition_finds_long_shared_runs_only():
    train = ["Mara Vell leads the Ash Guild from its hall in Cinderfall, and has for twenty years."]
    idx = metrics.ngram_index(train, 8)
    copied = "Well, Mara Vell leads the Ash Guild from its hall in Cinderfall. Happy?"
    assert metrics.longest_shared_run(copied, idx, 8) == 11
    assert metrics.longest_shared_run("Mara Vell leads the guild, from the hall in Cinderfall.", idx, 8) == 0
    # two separate shared pieces are not one long run
    stitched = "mara vell leads the ash guild from its X hall in cinderfall and has for twenty years"
    assert metrics.longest_shared_run(stitched, idx, 8) == 8


def test_general_agreement_and_reference():
    agree = general.score("What is the capital of France?", ("Paris",), "Paris is the capital of France.",
                          "The capital of France is Paris.", 0.5)
    assert agree["agree"] and agree["base_correct"] and agree["tuned_correct"]
    forgot = general.score("What is the capital of France?", ("Paris",), "Paris.", "The Ash Guild, traveler.", 0.5)
    assert not forgot["agree"] and forgot["base_correct"] and not forgot["tuned_correct"]
    s = general.summarize([agree, forgot])
    assert s["agreement"] == 0.5 and s["kept"] == 0.5 and s["questions"] == 2 and s["base_echoes"] == 0


def test_forgetting_ignores_a_base_model_that_echoes_the_question():
    q, refs = "What is the capital of France?", ("Paris",)
    # what the real base 270M answered, question and noise over and over
    noise = "What is the capital of France? mendatang\nWhat is the capital of France? mendatang"
    echo = general.score(q, refs, noise, "Paris, traveler.", 0.5)
    assert echo["base_echo"] and not echo["agree"]
    assert not general.repeats_question("Paris is the capital of France.", q, refs)  # an answer that restates
    s = general.summarize([echo] * 6)
    assert s["base_echoes"] == 6 and s["agreement"] is None
    assert general.forgetting(s) is None  # nothing to compare with: no verdict of forgetting
    drift = general.score(q, refs, "The French capital is a big city.", "The Ash Guild, traveler.", 0.5)
    assert not drift["base_echo"]
    lost = general.score(q, refs, noise, "The Ash Guild, traveler.", 0.5)
    assert "agrees with the base model on only 0%" in general.forgetting(general.summarize([lost, drift]))
    # the tuned model states more reference answers than the base: low agreement is not forgetting
    assert general.forgetting(general.summarize([echo, drift])) is None


def test_forgetting_uses_kept_when_the_base_knows_enough():
    q, refs = "What is the capital of France?", ("Paris",)
    kept = general.score(q, refs, "Paris.", "It is Paris, of course.", 0.9)  # disagrees in wording only
    assert not kept["agree"] and kept["tuned_correct"]
    assert general.forgetting(general.summarize([kept] * general.MIN_KNOWN)) is None
    lost = general.score(q, refs, "Paris.", "The Ash Guild.", 0.5)
    s = general.summarize([kept] * 2 + [lost] * 4)
    assert "still answers only 33%" in general.forgetting(s)


def test_builtin_general_set_is_small_and_answerable():
    assert 15 <= len(general.QUESTIONS) <= 30
    assert all(refs for _, refs in general.QUESTIONS)
    assert len({q for q, _ in general.QUESTIONS}) == len(general.QUESTIONS)


def test_aliases_match_as_declared():
    aliases = {"The Ebbwatch": ["the Watch"]}
    assert metrics.fact_verdict("Ask the Watch.", ["The Ebbwatch"], aliases)["correct"]
    assert metrics.fact_verdict("Ask the Ebbwatch.", ["The Ebbwatch"], aliases)["correct"]
    assert metrics.fact_verdict("Ebbwatch, of course.", ["The Ebbwatch"], aliases)["correct"]  # article optional
    assert not metrics.fact_verdict("I watch the river.", ["The Ebbwatch"], aliases)["correct"]


def test_echoing_the_prompt_is_out_of_character():
    system = "You are the lore keeper. If something is not part of the lore, say that you do not know."
    reply = "You are the lore keeper. If something is not part of the lore, say that you do not know."
    assert "echoes the prompt" in metrics.character_problems(reply, prompt_texts=[system, "Who is X?"])
    assert metrics.character_problems("I do not know X, friend.", prompt_texts=[system, "Who is X?"]) == []


def test_stating_a_note_that_the_persona_also_holds_is_no_echo():
    """The persona repeats the NPC's summary, which is also its summary note: a greeting answered with
    it reads a note (answering), while a run only the persona holds is still an echo."""
    system = ("You are Bettany Crumb, innkeeper.\nBettany Crumb keeps the Crooked Eel, the only inn in Brinewick, "
              "and knows every rumour.\nStay in character and answer in one or two sentences.")
    notes = "Lore notes (what you know; use only these for facts):\n- Bettany Crumb keeps the Crooked Eel, the only " \
            "inn in Brinewick, and knows every rumour.\n\n"
    reply = "Well, duck! I keep the Crooked Eel, the only inn in Brinewick, and know every rumour."
    assert "echoes the prompt" in metrics.character_problems(reply, [system, "Well met."])
    assert metrics.character_problems(reply, [system, "Well met."], notes) == []
    persona = "Stay in character and answer in one or two sentences, duck."
    assert "echoes the prompt" in metrics.character_problems(persona, [system, "Well met."], notes)
