"""Hostile text through the wording filters an NPC's answers pass through (hypothesis): whatever a modder
writes in a page, a filter returns text, changes only what it is for, and never raises."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from lorekit.compile.templates import after_opener, agree, battle, first_person, plural, that_is_me
from lorekit.grounding.rows import unsaid

WORDS = st.sampled_from(["Tobin", "Reedy", "Tobin Reedy", "She", "she", "her", "His", "he", "The", "the", "and",
                         "speaks", "brings", "gifts", "Oarsmen", "Bridge", "(guardian)", "'s", ",", ".", "I", "me"])
PROSE = st.one_of(st.text(max_size=80), st.lists(WORDS, max_size=14).map(" ".join))
NAMES = st.one_of(st.text(max_size=20), st.sampled_from(["Tobin Reedy", "Bettany Crumb", "The Pale Heron", "I"]))


@settings(max_examples=300, deadline=None)
@given(PROSE, NAMES, st.lists(NAMES, max_size=3))
def test_that_is_me_only_inserts_one_mark(text, name, names):
    out = that_is_me(text, name, names)
    assert isinstance(out, str) and out.count("that is me") - text.count("that is me") in (0, 1)
    if out != text:  # the mark, or a note in brackets that gained it, and nothing else
        assert re.sub(r" \(that is me\)|; that is me", "", out, count=1) == text


@settings(max_examples=300, deadline=None)
@given(PROSE, st.sampled_from(["", "Well now,", "Aye.", "Listen close,", "  Hm, "]), st.lists(NAMES, max_size=3), PROSE)
def test_after_opener_changes_at_most_the_case_of_the_first_letter(statement, opener, names, text):
    out = after_opener(statement, opener, names, text)
    if not opener.strip():
        assert out == statement
    else:
        head = opener.strip() + " "
        assert out.startswith(head) and out[len(head) + 1:] == statement[1:]
        assert out[len(head):len(head) + 1].lower() == statement[:1].lower()


@settings(max_examples=300, deadline=None)
@given(PROSE, NAMES, PROSE)
def test_first_person_returns_text_and_leaves_prose_without_its_subject_alone(text, name, about):
    out = first_person(text, name, about)
    assert isinstance(out, str)
    words = {w.lower() for w in re.findall(r"\w+", name)} | {"she", "he", "her", "his", "him", "hers"}
    if not words & {w.lower() for w in re.findall(r"\w+", text)}:
        assert out == text


@settings(max_examples=200, deadline=None)
@given(NAMES, st.sampled_from(["faction", "character", "event", "item", "", None]), st.text(max_size=12))
def test_number_and_kind_filters_take_any_name(name, etype, verb):
    entity = {"name": name, "type": etype or "", "fields": {}}
    assert isinstance(plural(entity), bool) and isinstance(battle(entity), bool)
    assert isinstance(agree(verb, entity), str) and agree("is", {"name": name, "type": "character"}) == "is"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20), st.text(max_size=200))
def test_unsaid_takes_any_key_and_prose(key, prose):
    assert isinstance(unsaid(key, prose.lower()), bool)


def test_first_person_keeps_the_spaces_between_sentences():
    """Found by the fuzz test above in CI: "?\x1f" came back as "? " (the split on sentence ends rejoined with a space)."""
    assert first_person("?\x1f", "Mara Vell", "") == "?\x1f"
    assert first_person("Mara Vell is a smith.\n\nShe shoes horses.", "Mara Vell", "") == "I am a smith.\n\nI shoe horses."
