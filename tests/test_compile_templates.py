"""Templates: sandboxed, strict, seeded, overridable, errors with template file and line."""

from __future__ import annotations

import pytest

from lorekit.compile.templates import (
    TemplateFailure,
    Templates,
    and_list,
    article,
    first_person,
    in_date,
    possessive,
    that_is_me,
    type_noun,
)


def vault_with(tmp_path, name: str, text: str):
    path = tmp_path / "_templates" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return Templates(tmp_path)


def test_vault_template_overrides_the_default(tmp_path):
    t = vault_with(tmp_path, "fields/occupation.j2",
                   "{% block questions %}\nJob of {{ entity.name }}?\n{% endblock %}{% block answer %}X{% endblock %}")
    ctx = {"entity": {"name": "Mara"}}
    assert t.lines("fields/occupation.j2", "questions", ctx) == ["Job of Mara?"]
    assert t.display("fields/occupation.j2") == "_templates/fields/occupation.j2"
    assert t.display("fields/leader.j2") == "templates/fields/leader.j2"  # the rest still from the defaults


def test_pick_is_seeded_and_random_is_refused(tmp_path):
    t = vault_with(tmp_path, "x.j2", "{% block answer %}{{ pick(['a','b','c','d','e','f']) }}{% endblock %}"
                   "{% block bad %}{{ ['a','b']|random }}{% endblock %}")
    first = [t.render("x.j2", "answer", {}, f"seed{i}") for i in range(20)]
    assert first == [t.render("x.j2", "answer", {}, f"seed{i}") for i in range(20)]
    assert len(set(first)) > 1
    with pytest.raises(TemplateFailure, match="random"):
        t.render("x.j2", "bad", {})


def test_strict_undefined_names_the_missing_key_and_line(tmp_path):
    t = vault_with(tmp_path, "y.j2", "{% block answer %}\nok\n{{ entity.fields.specialty }}\n{% endblock %}")
    with pytest.raises(TemplateFailure) as e:
        t.render("y.j2", "answer", {"entity": {"fields": {}}})
    assert e.value.missing == "specialty" and e.value.line == 3


def test_syntax_error_has_a_line(tmp_path):
    t = vault_with(tmp_path, "z.j2", "{% block answer %}\n{% if %}\n{% endblock %}")
    with pytest.raises(TemplateFailure) as e:
        t.render("z.j2", "answer", {})
    assert e.value.line == 2 and "syntax" in e.value.message


def test_sandbox_blocks_python_internals(tmp_path):
    t = vault_with(tmp_path, "s.j2", "{% block answer %}{{ ''.__class__.__mro__ }}{% endblock %}")
    with pytest.raises(TemplateFailure):
        t.render("s.j2", "answer", {})


def test_filters():
    assert and_list(["A"]) == "A" and and_list(["A", "B", "C"]) == "A, B and C"
    assert possessive("Mara Vell") == "Mara Vell's" and possessive("Silas") == "Silas'"
    assert article("smuggler") == "a smuggler" and article("inn") == "an inn" and article("Ash Guild") == "Ash Guild"
    assert in_date("1190 AT") == "in 1190 AT" and in_date("spring of 1341 AT") == "in spring of 1341 AT"
    assert in_date("around 1338 AT") == "around 1338 AT" and in_date("in 12 AT") == "in 12 AT"
    assert type_noun("location") == "place" and type_noun("lore") == "thing"


def test_first_person_rewrites_the_subject_only():
    text = ("Mara Vell keeps the Ash Guild's books, and knows every smuggler. She has lost her brother. "
            "Mara took in Oren Vell and feeds him in winter. Oren says she lies.")
    assert first_person(text, "Mara Vell") == (
        "I keep the Ash Guild's books, and know every smuggler. I have lost my brother. "
        "I took in Oren Vell and feed him in winter. Oren says I lie.")
    assert first_person("He is old. His oar is black; the river asked him.", "Tobin Reedy") == \
        "I am old. My oar is black; the river asked me."
    assert first_person("The Ash Guild is old.", "Mara Vell") == "The Ash Guild is old."  # nothing about her


def test_that_is_me_marks_the_speakers_own_name_once():
    assert that_is_me("Oren Vell and Mara Vell live in Cinderfall.", "Mara Vell") == \
        "Oren Vell and Mara Vell (that is me) live in Cinderfall."
    assert that_is_me("Family: Mara Vell (sister), Mara Vell.", "Mara Vell") == "Family: Mara Vell (sister; that is me), Mara Vell."
    assert that_is_me("Mara Vell's knife.", "Mara Vell") == "Mara Vell's knife."
    assert that_is_me("Oren Vell.", "Mara Vell") == "Oren Vell." and that_is_me("Mara Vell.", "") == "Mara Vell."


def test_every_default_template_renders(tmp_path):
    t = Templates(None)
    fact = {"value": "V", "values": ["V"], "plural": False, "label": "lbl", "text": "T.", "field": "f", "types": []}
    ctx = {"entity": {"name": "Mara Vell", "type": "character", "fields": {}, "summary": "S."}, "fact": fact,
           "name": "Zed", "npc": {"name": "N", "greeting": "Hi", "farewell": "Bye", "refuse": "", "dont_know": "", "openers": [],
                                 "voice": "v", "style": ""}, "statement": "S", "secrets": [], "known": [], "topic": "The Ember Ledger", "type": "character"}
    for name in sorted(t.names):
        blocks = t._template(name).blocks
        # attacks/*.j2 only ask: the NPC's refusal (replies/secret.j2) answers them
        assert "answer" in blocks or "system" in blocks or name.startswith("attacks/") and "questions" in blocks, name
        for me in (False, True):  # asked of anyone, and of the NPC the fact is about
            if "questions" in blocks:
                # facts: 5 for train + 1 held out; attacks and absent facts: at least 1 + 1 held out
                least = 2 if name.startswith(("attacks/", "grounding/")) else 6
                assert len(t.lines(name, "questions", {**ctx, "me": me})) >= least, name
            for block in ("answer", "system"):
                if block in blocks:
                    assert t.render(name, block, {**ctx, "me": me}, "s"), name


def test_unknown_asks_what_of_things_and_who_of_people():
    t = Templates(None)
    assert t.lines("replies/unknown.j2", "questions", {"name": "The Bell", "type": "item"})[0] == "What is The Bell?"
    assert t.lines("replies/unknown.j2", "questions", {"name": "Zed", "type": "character"})[0] == "Who is Zed?"
    assert t.lines("replies/unknown.j2", "questions", {"name": "Zed"})[0] == "Who is Zed?"  # an invented name
