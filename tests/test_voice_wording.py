"""Wording of what NPCs say, found in review: the first person of an NPC's own facts, "(that is me)"
only after the speaker's own name, comma openers, plural group names, and questions that fit the page."""

from __future__ import annotations

from pathlib import Path

from lorekit.compile.config import CompileConfig
from lorekit.compile.dataset import Builder
from lorekit.compile.templates import Templates, after_opener, first_person, plural, that_is_me
from lorekit.lore import facts_of, load_vault
from lorekit.prompt import templates_for


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.strip() + "\n", encoding="utf-8")


def builder(root: Path) -> Builder:
    vault = load_vault(root)
    return Builder(vault, CompileConfig(), templates_for(vault), {None: "", **{n: "" for n in vault.npcs}})


def fact(b: Builder, fid: str):
    return next(f for f in facts_of(b.vault) if f.id == fid)


def said(b: Builder, fid: str, speaker: str | None) -> str:
    f = fact(b, fid)
    return b.answer(b.template_for(f), b.context(f), speaker, "seed")


def asked(b: Builder, fid: str) -> list[str]:
    f = fact(b, fid)
    return b.t.lines(b.template_for(f), "questions", {**b.context(f), "me": False}, "q")


# --- 1. the first person of an NPC's own page ---------------------------------------------------------
def test_and_after_a_plural_noun_takes_the_first_person_verb():
    assert first_person("Mara Vell keeps the Ash Guild's books and speaks Old Ebb.", "Mara Vell") == \
        "I keep the Ash Guild's books and speak Old Ebb."
    assert first_person("She mends the nets and often sells the catch.", "Mara Vell") == \
        "I mend the nets and often sell the catch."
    # a list of nouns after a plural stays as it is
    assert first_person("Mara Vell keeps hours and hands of crew.", "Mara Vell") == "I keep hours and hands of crew."
    assert first_person("She sells ropes and hooks for the boats.", "Mara Vell") == \
        "I sell ropes and hooks for the boats."


def test_her_as_the_receiver_of_a_gift_is_me():
    text = "Mara Vell keeps the toll. Sailors bring her gifts, and the guild pays her a wage."
    assert first_person(text, "Mara Vell") == "I keep the toll. Sailors bring me gifts, and the guild pays me a wage."
    # the speaker gives to someone else: "her" is that other woman (or a possessive), not me
    assert first_person("She gives her daughter a coin.", "Mara Vell") == "I give my daughter a coin."
    assert first_person("She brings her nets home.", "Mara Vell") == "I bring my nets home."
    assert first_person("He brings her gifts.", "Tobin Reedy") == "I bring her gifts."  # not about a woman
    # a giver other than the speaker keeps its own verbs: not "The miller ... and ask"
    assert first_person("The miller brings her loaves and asks her blessing.", "Mara Vell", "She is old.") == \
        "The miller brings me loaves and asks my blessing."


def test_own_summary_in_a_vault_is_first_person(tmp_path):
    write(tmp_path, "Nell Varga.md", """
---
type: character
npc:
  knows: []
---
# Nell Varga
Nell Varga keeps the mill ledgers and speaks the river tongue. Millers bring her gifts at harvest.
""")
    b = builder(tmp_path)
    assert said(b, "nell-varga.summary", "nell-varga") == \
        "I keep the mill ledgers and speak the river tongue. Millers bring me gifts at harvest."


# --- 2. "(that is me)" only after the speaker's own name, standing alone ---------------------------------
def test_that_is_me_skips_longer_names():
    assert that_is_me("The Tobin Reedy Bridge spans the Suthe.", "Tobin Reedy") == "The Tobin Reedy Bridge spans the Suthe."
    assert that_is_me("Boats tie up at Tobin Reedy-Marsh.", "Tobin Reedy") == "Boats tie up at Tobin Reedy-Marsh."
    assert that_is_me("Tobin Reedy Bridge was paid for by Tobin Reedy.", "Tobin Reedy") == \
        "Tobin Reedy Bridge was paid for by Tobin Reedy (that is me)."
    # a longer name the statement speaks of (a page), even with no capital after it
    assert that_is_me("He rows the Old Tobin Reedy across.", "Tobin Reedy", ["The Old Tobin Reedy"]) == \
        "He rows the Old Tobin Reedy across."
    # a title before the name is still the speaker
    assert that_is_me("The ferry is kept by Ferryman Tobin Reedy.", "Tobin Reedy") == \
        "The ferry is kept by Ferryman Tobin Reedy (that is me)."


def test_that_is_me_in_a_vault(tmp_path):
    write(tmp_path, "Tobin Reedy.md", """
---
type: character
npc:
  knows: ["[[Tobin Reedy Bridge]]", "[[The Tobin Reedy]]", "[[The Heron Oar]]"]
---
# Tobin Reedy
Tobin Reedy rows the ferry.
""")
    write(tmp_path, "Tobin Reedy Bridge.md", """
---
type: location
---
# Tobin Reedy Bridge
Tobin Reedy Bridge spans the river at the ford.
""")
    write(tmp_path, "The Tobin Reedy.md", """
---
type: item
---
# The Tobin Reedy
The Tobin Reedy is a ferry boat named after its owner.
""")
    write(tmp_path, "The Heron Oar.md", """
---
type: item
owner: "[[Tobin Reedy]]"
---
# The Heron Oar
The Heron Oar is black.
""")
    b = builder(tmp_path)
    assert said(b, "tobin-reedy-bridge.summary", "tobin-reedy") == "Tobin Reedy Bridge spans the river at the ford."
    assert said(b, "the-tobin-reedy.summary", "tobin-reedy") == "The Tobin Reedy is a ferry boat named after its owner."
    assert "Tobin Reedy (that is me)" in said(b, "the-heron-oar.owner", "tobin-reedy")


# --- 3. after an opener that ends in a comma, the statement goes on in lower case ---------------------
def test_comma_opener_lowercases_what_is_no_name(tmp_path):
    write(tmp_path, "Nell Varga.md", """
---
type: character
npc:
  openers: ["Well now,"]
  knows: ["[[The Mill Feast]]", "[[Brinewick]]"]
---
# Nell Varga
Nell Varga keeps the mill.
""")
    write(tmp_path, "The Mill Feast.md", """
---
type: event
outcome: everyone went home fed
---
# The Mill Feast
It is held each autumn in [[Brinewick]].

## Origin
Aldric was the first miller to hold it, and the miller Aldric Marr still tells of it.
""")
    write(tmp_path, "Brinewick.md", """
---
type: location
---
# Brinewick
Brinewick is a port.
""")
    b = builder(tmp_path)
    assert said(b, "the-mill-feast.outcome", "nell-varga") == \
        "Well now, the outcome of the Mill Feast: everyone went home fed."
    assert said(b, "the-mill-feast.summary", "nell-varga") == "Well now, it is held each autumn in Brinewick."
    assert said(b, "nell-varga.summary", "nell-varga") == "Well now, I keep the mill."  # "I" stays
    assert said(b, "brinewick.summary", "nell-varga") == "Well now, Brinewick is a port."  # a page's name stays
    # a name the lore writes with a capital inside a sentence stays
    assert said(b, "the-mill-feast.section.origin", "nell-varga").startswith("Well now, Aldric was the first")
    # the keeper has no opener; an opener that ends a sentence keeps the capital
    assert said(b, "the-mill-feast.outcome", None) == "The outcome of the Mill Feast: everyone went home fed."
    assert after_opener("The river is high.", "Knock on the oar.") == "Knock on the oar. The river is high."


# --- 4. a group with a plural name takes a plural verb ------------------------------------------------
def test_plural_group_names_take_are(tmp_path):
    write(tmp_path, "The Oarsmen.md", """
---
type: faction
kind: brotherhood
headquarters: "[[The Pale Heron]]"
leader: "[[Nell Varga]]"
---
# The Oarsmen
The Oarsmen row the river.
""")
    write(tmp_path, "House Marr.md", "---\ntype: faction\nkind: noble house\n---\n# House Marr\nHouse Marr rules.\n")
    write(tmp_path, "Brinewick Docks.md", "---\ntype: location\nkind: harbour\n---\n# Brinewick Docks\nBusy.\n")
    write(tmp_path, "The Pale Heron.md", "---\ntype: location\nkind: inn\n---\n# The Pale Heron\nAn inn.\n")
    write(tmp_path, "Nell Varga.md", "---\ntype: character\n---\n# Nell Varga\nNell Varga rows.\n")
    b = builder(tmp_path)
    assert said(b, "the-oarsmen.kind", None) == "The Oarsmen are a brotherhood."
    assert said(b, "the-oarsmen.headquarters", None) == "The Oarsmen are based in the Pale Heron."
    assert said(b, "the-pale-heron.rev.headquarters", None) == "The Oarsmen are based in the Pale Heron."
    assert said(b, "nell-varga.rev.leader", None) == "Nell Varga leads the Oarsmen."
    assert "Where are the Oarsmen based?" in asked(b, "the-oarsmen.headquarters")
    assert "What kind of group are the Oarsmen?" in asked(b, "the-oarsmen.kind")
    assert not [q for q in asked(b, "the-oarsmen.headquarters") if "does the Oarsmen" in q or " its " in q]
    # singular names stay singular, a place named with a final s too
    assert said(b, "house-marr.kind", None) == "House Marr is a noble house."
    assert said(b, "brinewick-docks.kind", None) == "Brinewick Docks is a harbour."
    assert plural("Tide Wardens", "faction") and plural("The Sons of the Sea", "faction")
    assert not plural("The Oarsmen's Brotherhood", "faction") and not plural("The Council of Wells", "faction")


# --- 5. questions that fit the page's type -------------------------------------------------------------
def test_fight_questions_only_for_fights(tmp_path):
    write(tmp_path, "The Mill Feast.md", """
---
type: event
participants: ["[[Nell Varga]]"]
outcome: everyone went home fed
---
# The Mill Feast
Held each autumn.
""")
    write(tmp_path, "The Siege of Gull Rock.md", """
---
type: event
participants: ["[[Bram Tallow]]"]
outcome: the rock held
---
# The Siege of Gull Rock
Forty days.
""")
    write(tmp_path, "The Long Night.md", """
---
type: event
kind: battle
outcome: dawn came
---
# The Long Night
Dark.
""")
    write(tmp_path, "Nell Varga.md", "---\ntype: character\n---\n# Nell Varga\nA miller.\n")
    write(tmp_path, "Bram Tallow.md", "---\ntype: character\n---\n# Bram Tallow\nA soldier.\n")
    b = builder(tmp_path)
    feast = asked(b, "the-mill-feast.participants") + asked(b, "the-mill-feast.outcome")
    assert "Who took part in the Mill Feast?" in feast
    assert not [q for q in feast if "fought" in q or "won" in q], feast
    assert not [q for q in asked(b, "nell-varga.rev.participants") if "fight" in q]
    assert "Who fought in the Siege of Gull Rock?" in asked(b, "the-siege-of-gull-rock.participants")
    assert "Who won the Siege of Gull Rock?" in asked(b, "the-siege-of-gull-rock.outcome")
    assert "Who won the Long Night?" in asked(b, "the-long-night.outcome")  # its kind says so
    assert "Where did Bram Tallow fight?" in asked(b, "bram-tallow.rev.participants")  # the Siege's name says so
    for q in asked(b, "the-mill-feast.participants"):  # every phrasing on its own line
        assert q.count("?") == 1, q


def test_absent_questions_fit_the_page_type():
    t = Templates(None)

    def absent(name: str, etype: str) -> list[str]:
        return [q.split("|", 1)[1] for q in t.lines("grounding/absent.j2", "questions", {"name": name, "type": etype})]
    assert any("weigh" in q for q in absent("The Heron Oar", "item"))
    for etype, name in (("character", "Nell Varga"), ("faction", "The Oarsmen"), ("event", "The Mill Feast"),
                        ("location", "Brinewick"), ("lore", "The Pale Heron")):
        questions = absent(name, etype)
        assert len(questions) >= 4, etype
        assert not [q for q in questions if "weigh" in q or "cost" in q], (etype, questions)
    assert "Which feast do The Oarsmen keep at midwinter?" in absent("The Oarsmen", "faction")
