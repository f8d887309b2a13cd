"""What in a vault folder is not lore: a folder's README, and `#tags` written as code.

A README (`README.md`, `readme.md`, any case, in any folder) is notes for people, skipped without a
problem, unless its front matter declares a `type`: then it is a page like any other. A `#tag` inside
`inline code` or a fenced code block is an example, not a tag: `#secret` there hides nothing, while a
`#secret` outside code keeps working as before (paragraphs, headings, list items, inline fields).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lorekit.lore import facts_of, load_vault
from lorekit.lore.files import is_readme
from lorekit.lore.page import parse_page
from lorekit.lore.vault import scan_paths
from tests.conftest import SAMPLE_LORE

PAGE = "---\ntype: location\n---\n# Brinewick\n\nBrinewick is a fishing town.\n"
NOTES = "# My world\n\nHow to edit this vault: one page per entity. Ask Sam before renaming.\n"


def _vault(tmp_path: Path, files: dict[str, str]):
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text, encoding="utf-8")
    return load_vault(tmp_path)


# --- READMEs ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["README.md", "readme.md", "ReadMe.md", "places/README.md"])
def test_a_readme_without_front_matter_is_skipped_without_a_problem(tmp_path, name):
    vault = _vault(tmp_path, {"places/Brinewick.md": PAGE, name: NOTES})
    assert vault.problems == []
    assert [p.path for p in vault.pages] == ["places/Brinewick.md"]
    assert list(vault.entities) == ["brinewick"]


def test_a_readme_with_front_matter_but_no_type_is_skipped(tmp_path):
    vault = _vault(tmp_path, {"Brinewick.md": PAGE, "README.md": "---\ntags: [meta]\n---\n" + NOTES})
    assert vault.problems == []
    assert list(vault.entities) == ["brinewick"]


def test_a_readme_that_declares_a_type_is_a_page(tmp_path):
    readme = "---\ntype: lore\nname: The Readme Stone\n---\n# The Readme Stone\n\nA stone with words on it.\n"
    vault = _vault(tmp_path, {"Brinewick.md": PAGE, "README.md": readme})
    assert vault.problems == []
    assert vault.entities["the-readme-stone"].summary == "A stone with words on it."
    assert vault.entities["the-readme-stone"].page == "README.md"


def test_a_readme_that_declares_a_bad_type_is_reported_like_any_page(tmp_path):
    vault = _vault(tmp_path, {"Brinewick.md": PAGE, "README.md": "---\ntype: charcter\n---\n# R\n\nText.\n"})
    assert [(p.file, p.message) for p in vault.errors] == [("README.md", "unknown type `charcter`")]


def test_a_readme_with_unreadable_front_matter_is_reported_not_skipped(tmp_path):
    vault = _vault(tmp_path, {"Brinewick.md": PAGE, "README.md": "---\ntype: [lore\n---\n# R\n\nText.\n"})
    assert vault.errors and {p.file for p in vault.errors} == {"README.md"}


def test_an_underscore_readme_stays_skipped(tmp_path):
    vault = _vault(tmp_path, {"Brinewick.md": PAGE, "_README.md": "---\ntype: lore\n---\n# R\n\nText.\n"})
    assert vault.problems == [] and list(vault.entities) == ["brinewick"]


def test_a_readme_is_still_scanned_so_an_edit_that_gives_it_a_type_is_seen(tmp_path):
    # the watcher, build keys and the incremental compiler list it; only the loader decides it is notes
    _vault(tmp_path, {"Brinewick.md": PAGE, "README.md": NOTES})
    assert [rel for _, rel in scan_paths(tmp_path)] == ["Brinewick.md", "README.md"]


@pytest.mark.parametrize(("rel", "readme"), [("README.md", True), ("docs/readme.md", True), ("Readme Stone.md", False),
                                             ("READMEs.md", False), ("README.txt", False)])
def test_which_files_are_readmes(rel, readme):
    assert is_readme(rel) is readme


def test_the_sample_world_with_a_readme_loads_as_without_it(tmp_path):
    plain = load_vault(SAMPLE_LORE)
    copy = tmp_path / "lore"
    shutil.copytree(SAMPLE_LORE, copy)
    (copy / "README.md").write_text(NOTES, encoding="utf-8")
    with_readme = load_vault(copy)
    assert with_readme.problems == plain.problems
    assert list(with_readme.entities) == list(plain.entities)


# --- #tags in code ---------------------------------------------------------------------------------

def _page(body: str):
    return parse_page("P.md", ("---\ntype: lore\n---\n# A\n\n" + body).encode("utf-8"))


def _secrets(body: str) -> list[str]:
    return [s.text for s in _page(body).sections if s.secret]


def test_secret_in_inline_code_does_not_hide_the_paragraph():
    page = _page("Write `#secret` after a paragraph to hide it.\n")
    assert [s for s in page.sections if s.secret] == []
    assert page.summary == "Write #secret after a paragraph to hide it."
    assert page.tags == []


def test_a_tag_in_inline_code_is_no_tag_but_one_beside_it_is():
    page = _page("Tag #lore, not `#foo` nor ``a ` and #bar``, then #baz.\n")
    assert page.tags == ["lore", "baz"]
    assert "not #foo nor a and #bar," in page.summary  # code shows as written (its backticks dropped)


def test_secret_in_inline_code_in_a_heading_does_not_make_it_secret():
    page = _page("A is open.\n\n## Using `#secret`\nTag a paragraph to hide it.\n")
    assert [(s.heading, s.secret, s.text) for s in page.sections] == [
        ("Using `#secret`", False, "Tag a paragraph to hide it.")]


def test_secret_in_inline_code_in_an_inline_field_keeps_it_public():
    page = _page("A is open.\n\nmarker:: `#secret`\n")
    assert page.meta["marker"] == "`#secret`"
    assert page.secret_fields == {}


@pytest.mark.parametrize("body", [
    "The hidden truth. #secret\n",
    "`code` then the truth #secret\n",
    "- a list item with the truth #secret\n",
    "An unclosed ` tick, the truth #secret\n",
])
def test_a_secret_tag_outside_code_still_hides_the_paragraph(body):
    assert len(_secrets("A is open.\n\n" + body)) == 1


def test_a_secret_tag_on_a_heading_or_field_outside_code_still_works():
    page = _page("A is open.\n\n## Plans `v2` #secret\nBurn the mill.\n\n## Open\nplan:: burn it #secret\n")
    assert [(s.heading, s.secret) for s in page.sections] == [("Plans `v2`", True), ("Open", False)]
    assert page.secret_fields == {"plan": [("burn it", 12)]}


FENCES = {
    "backticks": "```\nUse #secret and #foo\n```\n",
    "tildes": "~~~md\nUse #secret and #foo\n~~~\n",
    "a longer fence around a shorter one": "````md\n```\n#foo\n```\nUse #secret\n````\n",
    "tildes inside backticks": "```\n~~~\nUse #secret and #foo\n~~~\n```\n",
    "in a blockquote": "> ```\n> Use #secret and #foo\n> ```\n",
    "in a callout": "> [!note] Example\n> ```\n> Use #secret and #foo\n> ```\n",
    "in a list item": "- an item\n\n  ```\n  Use #secret and #foo\n  ```\n",
}


@pytest.mark.parametrize("fence", FENCES.values(), ids=FENCES.keys())
def test_tags_in_a_fenced_block_do_not_count_and_prose_after_it_is_read(fence):
    page = _page("A is open.\n\n" + fence + "\nAfter the code. #after\n")
    assert [s.text for s in page.sections if s.secret] == []
    assert page.tags == ["after"]
    assert "After the code." in [page.summary, *page.summary_more]


def test_a_code_span_on_its_own_line_is_not_a_fence():
    page = _page("```js```\n\nThe truth. #secret\n\nA is open.\n")
    assert [s.text for s in page.sections if s.secret] == ["The truth."]
    assert page.summary == "js"


def test_a_fence_in_a_secret_callout_ends_with_the_callout():
    page = _page("A is open.\n\n> [!secret]\n> ```\n> code\n\nA is a town.\n")
    assert [s.text for s in page.sections if s.secret] == []
    assert page.summary_more == ["A is a town."]


def test_a_page_whose_only_secret_tag_is_code_is_taught_openly(tmp_path):
    text = "---\ntype: lore\n---\n# Tagging\n\nTagging is done with `#secret` at the end of a paragraph.\n"
    vault = _vault(tmp_path, {"Tagging.md": text})
    assert vault.problems == []
    facts = facts_of(vault)
    assert facts and not any(f.secret for f in facts)
    assert vault.entities["tagging"].tags == []


# --- links in code ---------------------------------------------------------------------------------

def test_a_link_in_inline_code_is_no_link_and_breaks_nothing(tmp_path):
    """Obsidian shows `[[Page]]` in code as text: it links nowhere, so a missing target is no error,
    while the same link outside code is checked as before."""
    shown = PAGE + "\nWrite `[[Nowhere Town]]` to link a page.\n"
    vault = _vault(tmp_path / "a", {"Brinewick.md": shown})
    assert vault.errors == [] and vault.pages[0].links == []
    broken = _vault(tmp_path / "b", {"Brinewick.md": PAGE + "\nRoads lead to [[Nowhere Town]].\n"})
    assert any("Nowhere Town" in str(p) for p in broken.problems)
