"""Obsidian habits, each from a page written in that habit (tests/fixtures/obsidian, or inline pages).

Dataview inline fields, nested tags and tags in the `tags` property, embeds, `%%` and `<!-- -->`
comments, block references, and `aliases` as a YAML list or a comma string.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorekit.compile import CompileConfig, run
from lorekit.lore import facts_of, load_vault
from lorekit.lore.page import parse_page

OBSIDIAN = Path(__file__).parent / "fixtures" / "obsidian"


@pytest.fixture(scope="module")
def vault():
    return load_vault(OBSIDIAN)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("obsidian")
    run(OBSIDIAN, out, CompileConfig(cache=False))
    return [json.loads(line) for name in ("train.jsonl", "eval.jsonl")
            for line in (out / "dataset" / name).read_text(encoding="utf-8").splitlines()]


def _texts(rows: list[dict]) -> str:
    return "\n".join(t["value"] for r in rows for t in r["conversations"])


def _page(text: str, path: str = "P.md"):
    return parse_page(path, text.encode("utf-8"))


def test_the_fixture_vault_is_clean(vault):
    assert [str(p) for p in vault.problems] == []


# --- Dataview inline fields ---------------------------------------------------------------------

def test_inline_field_on_its_own_line_is_a_field(vault):
    gull = vault.entities["gullhaven"]  # `population:: 800` and `ruler:: [[Ælfric Dunn]]`
    assert [p.text for p in gull.fields["population"]] == ["800"]
    assert gull.fields["ruler"][0].target == "Ælfric Dunn"
    assert gull.field_lines["population"] == 9


def test_inline_field_in_a_sentence_is_a_field_and_reads_as_its_value(vault):
    gull = vault.entities["gullhaven"]  # "... famous for its [climate:: cold fog]."
    assert [p.text for p in gull.fields["climate"]] == ["cold fog"]
    assert gull.summary == "Gullhaven is a fishing town on the grey coast, famous for its cold fog."
    page = _page("---\ntype: character\n---\n# Ana\n\nAna, a baker (occupation:: baker), lives here.\n")
    assert page.meta["occupation"] == "baker"
    assert page.summary == "Ana, a baker baker, lives here."


def test_inline_field_links_become_relations(vault):
    facts = {f.id: f for f in facts_of(vault)}
    assert facts["gullhaven.ruler"].values == ("Ælfric Dunn",)
    assert facts["aelfric-dunn.rev.ruler"].values == ("Gullhaven",)  # asked backwards like front matter


def test_inline_field_beside_the_same_front_matter_key_keeps_both():
    page = _page("---\ntype: character\noccupation: smith\n---\n# Bo\n\nBo works.\n\noccupation:: farrier\n")
    assert page.meta["occupation"] == ["smith", "farrier"]
    assert page.key_lines["occupation[0]"] == 3 and page.key_lines["occupation[1]"] == 9


# --- tags -----------------------------------------------------------------------------------------

def test_nested_tags_in_the_body_and_in_the_tags_property_count(vault):
    assert "faction/guild" in vault.entities["net-menders"].tags  # `#faction/guild` in the body
    assert vault.entities["tar-boats"].tags == ["coast", "faction/boatmen"]  # `tags: "faction/boatmen, coast"`
    assert vault.entities["salt-court"].tags == ["faction/court"]  # a YAML list
    # Zoë's `knows: ["#faction"]` takes every public page tagged #faction or a tag nested under it
    zoe = vault.npcs["zoe-varga"]
    assert {"net-menders", "tar-boats"} <= zoe.knows
    assert "salt-court" not in zoe.knows  # known_by Ælfric only


# --- embeds ---------------------------------------------------------------------------------------

def test_embeds_link_like_wiki_links(vault):
    gull = next(p for p in vault.pages if p.path == "places/Gullhaven.md")
    embeds = [link for link in gull.links if link.embed]
    assert [(link.target, link.heading) for link in embeds] == [("Ælfric Dunn", None)]
    court = next(p for p in vault.pages if p.path == "factions/Salt Court.md")
    assert any(link.target == "Gullhaven" and link.heading == "Harbour" and link.embed for link in court.links)
    assert gull.images == ["harbour-map.png"]


def test_an_embed_to_a_missing_page_or_heading_is_reported(tmp_path):
    (tmp_path / "A.md").write_text("---\ntype: lore\n---\n# A\n\nA is a page.\n\n![[Nowhere]]\n\n![[A#Nope]]\n")
    problems = [str(p) for p in load_vault(tmp_path).problems]
    assert "A.md:8: link to missing page [[Nowhere]] (create a page `Nowhere.md` or fix the link)" in problems
    assert any(p.startswith("A.md:10: warning: [[A#Nope]]: no such heading") for p in problems)


def test_a_line_of_embeds_is_no_prose():
    page = _page("---\ntype: lore\n---\n# A\n\n## Maps\n![[B]]\n\nThe maps are old.\n")
    assert page.sections[0].text == "The maps are old."


# --- comments ---------------------------------------------------------------------------------------

def test_comments_are_never_taught(vault, rows):
    gull = vault.entities["gullhaven"]
    assert "draft" not in gull.summary
    assert [s.heading for s in gull.sections if not s.secret] == ["Harbour"]  # `## Notes` sits in a %% block
    zoe = vault.entities["zoe-varga"]
    trade = next(s for s in zoe.sections if s.heading == "Trade")
    assert trade.text == "Zoë trades salt and rumours along the quay. She never haggles twice."
    text = _texts(rows)
    for hidden in ("draft", "maybe make it a city", "ghost", "add her boat"):
        assert hidden not in text


def test_comment_forms():
    page = _page("---\ntype: lore\n---\n# A\n\nOne %%hidden%% two <!-- also\nhidden --> three.\n\n"
                 "%%\n## Gone\nNever.\n%%\n\n## Kept\nYes.\n\n```\n%% code stays %%\n```\n")
    assert page.summary == "One two three."
    assert [s.heading for s in page.sections] == ["Kept"]
    assert not any(link.target == "Never" for link in page.links)


def test_links_inside_comments_are_not_checked(tmp_path):
    (tmp_path / "A.md").write_text("---\ntype: lore\n---\n# A\n\nA is a page. %% see [[Missing]] %%\n")
    assert [str(p) for p in load_vault(tmp_path).problems] == []


# --- block references -------------------------------------------------------------------------------

def test_block_references_are_stripped(vault, rows):
    assert vault.entities["zoe-varga"].summary.endswith("in a black-sailed skiff.")
    harbour = next(s for s in vault.entities["gullhaven"].sections if s.heading == "Harbour")
    assert harbour.text == "The harbour holds forty boats and one crooked lighthouse."
    assert "^intro1" not in _texts(rows) and "^harb" not in _texts(rows)


def test_a_link_to_a_block_is_not_a_missing_heading(tmp_path):
    (tmp_path / "A.md").write_text("---\ntype: lore\n---\n# A\n\nA is a page. ^blk\n")
    (tmp_path / "B.md").write_text("---\ntype: lore\n---\n# B\n\nB quotes [[A#^blk]].\n")
    assert [str(p) for p in load_vault(tmp_path).problems] == []


# --- aliases ----------------------------------------------------------------------------------------

def test_aliases_as_a_yaml_list_and_as_a_comma_string(vault):
    assert vault.entities["aelfric-dunn"].aliases == ["Ælfric", "Reeve Dunn"]  # a YAML list
    assert vault.entities["zoe-varga"].aliases == ["Zoë", "the Net Witch"]  # `aliases: Zoë, the Net Witch`
    assert vault.resolve("the net witch").id == "zoe-varga"
    assert vault.resolve("Black Hulls").id == "tar-boats"
    facts = {f.id: f for f in facts_of(vault)}
    assert facts["zoe-varga.aliases"].values == ("Zoë", "the Net Witch")


def test_the_parser_never_raises_on_any_mix_of_these_habits():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    pieces = st.sampled_from(["%%", "<!--", "-->", "::", "[", "]", "(", ")", "![[", "[[", "]]", "#secret", "# ", "## ",
                              "> [!secret]", ">", "^ab1", "\n", "\n\n", "```", "key", " ", "x", "---", "#", "|", "Zoë"])

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.lists(pieces, max_size=40))
    def check(parts):
        page = parse_page("P.md", ("---\ntype: lore\n---\n" + "".join(parts)).encode("utf-8"))
        assert isinstance(page.summary, str)

    check()
