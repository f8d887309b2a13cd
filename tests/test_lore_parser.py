"""The page parser: front matter with lines, links, embeds, sections, tags, callouts."""

from __future__ import annotations

from lorekit.lore.links import find_links, parse_value, render_links
from lorekit.lore.page import parse_page

PAGE = """---
type: character
Part-Of: "[[Ash Guild]]"
residence: [[Cinderfall]]
family:
  - "[[Oren Vell]] (brother)"
  - "[[Ida Vell|Ida]]"
tags: [ash]
---
# Mara Vell

Mara leads the [[Ash Guild|guild]] in [[Cinderfall#The Kilns]]. #veteran

![[portrait.png]]
![[Oren Vell]]

## History
She rose fast.

> [!secret]
> She burned the [[Ember Ledger]].

```
[[Not A Link]] #notatag
```
"""


def test_front_matter_keys_values_and_lines():
    page = parse_page("p/Mara Vell.md", PAGE.encode())
    assert page.problems == []
    assert page.meta["type"] == "character"
    assert page.meta["part_of"] == "[[Ash Guild]]"  # key normalised
    assert page.meta["residence"] == "[[Cinderfall]]"  # unquoted [[link]] in YAML
    assert page.line_of("type") == 2 and page.line_of("part_of") == 3
    assert page.key_lines["family[1]"] == 7


def test_links_embeds_headings_and_attachments():
    page = parse_page("Mara Vell.md", PAGE.encode())
    by_target = {(link.target, link.line): link for link in page.links}
    assert ("Ash Guild", 3) in by_target and by_target[("Ash Guild", 3)].key == "part_of"
    assert by_target[("Ida Vell", 7)].text == "Ida"
    kilns = by_target[("Cinderfall", 12)]
    assert kilns.heading == "The Kilns"
    embed = by_target[("Oren Vell", 15)]
    assert embed.embed
    assert not any(link.target.endswith(".png") for link in page.links)
    assert not any(link.target == "Not A Link" for link in page.links)  # code blocks are skipped


def test_title_summary_sections_tags():
    page = parse_page("Mara Vell.md", PAGE.encode())
    assert page.title == "Mara Vell"
    assert page.summary == "Mara leads the guild in Cinderfall."
    assert page.summary_line == 12
    assert page.summary_targets == ["Ash Guild", "Cinderfall"]
    assert [(s.heading, s.level, s.line, s.text, s.secret) for s in page.sections] == [
        ("History", 2, 17, "She rose fast.", False), ("Secret", 2, 21, "She burned the Ember Ledger.", True)]
    assert page.tags == ["veteran"]


def test_secret_callout_is_kept_out_of_the_text_but_its_links_are_checked():
    page = parse_page("Mara Vell.md", PAGE.encode())
    assert "burned" not in page.summary + " ".join(s.text for s in page.sections if not s.secret)
    assert [link.target for link in page.secret_links] == ["Ember Ledger"]
    assert any(link.target == "Ember Ledger" for link in page.links)


def test_render_and_parse_values():
    assert render_links("the [[A|a thing]] and [[B#C]] and [[#D]]") == "the a thing and B and D"
    parts = parse_value(["[[Oren Vell]] (brother)", "plain", 3], 5)
    assert [(p.text, p.target, p.note) for p in parts] == [
        ("Oren Vell (brother)", "Oren Vell", "brother"), ("plain", None, ""), ("3", None, "")]
    links = find_links("x\n[[A]] [[B|b]]", 10)
    assert [(link.target, link.line) for link in links] == [("A", 11), ("B", 11)]


def test_scalars_stay_as_written():
    page = parse_page("x.md", b"---\ntype: location\npopulation: 1,200\nfounded: 0812\nsecret: yes\n---\nA town.\n")
    assert page.meta["population"] == "1,200" and page.meta["founded"] == "0812"
    assert page.meta["secret"] is True


def test_crlf_and_bom():
    page = parse_page("x.md", "\ufeff---\r\ntype: lore\r\n---\r\nSome text.\r\n".encode())
    assert page.problems == [] and page.meta["type"] == "lore" and page.summary == "Some text."
