"""Secrets written the way modders write them: never taught openly, refused in character by their holders.

Forms: a heading named "Secret"/"Secrets" (any case), a heading or paragraph tagged `#secret`, a
`> [!secret]` callout, a page with `secret: true` (or `tags: [secret]`). Fixture pages:
tests/fixtures/obsidian (Zoë's `## Secrets`, Ælfric's `#secret` paragraph and callout with an
inline field, Gullhaven's callout and `#secret` heading, the Salt Court's `## Secret` held through
`known_by`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lorekit.cli import main
from lorekit.compile import CompileConfig, run
from lorekit.lore import SECRET, facts_of, holds_secret, load_vault, may_tell
from lorekit.lore.page import parse_page

OBSIDIAN = Path(__file__).parent / "fixtures" / "obsidian"
from tests.conftest import SAMPLE_LORE as SAMPLE  # noqa: E402

# every secret of the fixture vault, as words its rows must never say
SECRET_WORDS = ("forty crowns", "bribes", "straw king", "three hundred", "debtors", "bankrupt", "forged coin")


@pytest.fixture(scope="module")
def vault():
    return load_vault(OBSIDIAN)


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("secrets")
    run(OBSIDIAN, out, CompileConfig(cache=False))
    return [json.loads(line) for name in ("train.jsonl", "eval.jsonl")
            for line in (out / "dataset" / name).read_text(encoding="utf-8").splitlines()]


def _secret_sections(text: str) -> list[tuple[str, str, str]]:
    page = parse_page("P.md", text.encode("utf-8"))
    return [(s.heading, s.text, s.why) for s in page.sections if s.secret]


@pytest.mark.parametrize("heading", ["Secret", "Secrets", "SECRETS", "secret:", "**Secrets**"])
def test_a_heading_named_secret_in_any_case_is_secret(heading):
    found = _secret_sections(f"---\ntype: lore\n---\n# A\n\nA is open.\n\n## {heading}\nThe key is under the mat.\n")
    assert [t for _, t, _ in found] == ["The key is under the mat."]


def test_everything_under_a_secret_heading_is_secret_until_the_next_heading_of_its_level():
    page = parse_page("P.md", b"---\ntype: lore\n---\n# A\n\n## Secrets\nOne.\n\n### Deeper\nTwo.\n\n## Open\nThree.\n")
    assert [(s.heading, s.secret) for s in page.sections] == [("Secrets", True), ("Deeper", True), ("Open", False)]


def test_tagged_heading_tagged_paragraph_and_callout():
    text = ("---\ntype: lore\n---\n# A\n\nA is open.\n\n## Plans #secret\nBurn the mill.\n\n## Open\n"
            "Visible text.\n\nHidden text. #secret\n\n> [!secret] Title\n> Callout text.\n\n> [!SECRET] One-liner.\n")
    found = _secret_sections(text)
    assert [(h, t) for h, t, _ in found] == [("Plans", "Burn the mill."), ("Secret", "Hidden text."),
                                             ("Title", "Callout text."), ("Secret", "One-liner.")]
    page = parse_page("P.md", text.encode())
    assert [s.text for s in page.sections if not s.secret] == ["Visible text."]
    assert "secret" not in page.tags  # the marker is not a page tag


def test_a_secret_first_paragraph_leaves_the_next_one_as_the_summary():
    page = parse_page("P.md", b"---\ntype: lore\n---\n# A\n\nThe hidden truth. #secret\n\nA is a town.\n")
    assert page.summary == "A is a town."


def test_secret_parts_give_facts_nobody_tells(vault):
    facts = {f.id: f for f in facts_of(vault)}
    secret = {fid for fid, f in facts.items() if SECRET in f.pages}
    assert secret == {"zoe-varga.secret.secrets", "aelfric-dunn.secret.secret", "aelfric-dunn.secret.secret-2",
                      "aelfric-dunn.secret.field.debt", "gullhaven.secret.bribes", "gullhaven.secret.festivals",
                      "salt-court.secret.secret"}
    for fid in secret:
        assert facts[fid].secret
        assert not may_tell(vault, None, facts[fid])
        assert not any(may_tell(vault, npc, facts[fid]) for npc in vault.npcs)
    assert "debt" not in vault.entities["aelfric-dunn"].fields  # the callout's inline field stays secret


def test_holders_are_the_page_npc_and_known_by(vault):
    facts = {f.id: f for f in facts_of(vault)}
    assert holds_secret(vault, "zoe-varga", facts["zoe-varga.secret.secrets"])  # her own page
    assert not holds_secret(vault, "aelfric-dunn", facts["zoe-varga.secret.secrets"])
    assert holds_secret(vault, "aelfric-dunn", facts["salt-court.secret.secret"])  # known_by
    assert not holds_secret(vault, "zoe-varga", facts["salt-court.secret.secret"])
    assert not holds_secret(vault, None, facts["salt-court.secret.secret"])
    assert not any(holds_secret(vault, n, facts["gullhaven.secret.bribes"]) for n in vault.npcs)  # held by nobody
    # the open facts of the same pages are told as before
    assert may_tell(vault, "aelfric-dunn", facts["salt-court.section.seal"])
    assert not may_tell(vault, None, facts["salt-court.section.seal"])  # known_by: not the keeper's
    assert may_tell(vault, None, facts["gullhaven.section.harbour"])


def test_no_row_says_a_secret_and_holders_refuse_in_character(rows):
    told = [r for r in rows if r["meta"]["kind"] != "secret"]
    text = "\n".join(t["value"] for r in told for t in r["conversations"])
    for words in SECRET_WORDS:
        assert words not in text, words
    refusals = [r for r in rows if r["meta"]["kind"] == "secret"]
    refused = {(r["meta"]["npc"], f) for r in refusals for f in r["meta"]["facts"]}
    assert refused == {("zoe-varga", "zoe-varga.secret.secrets"), ("aelfric-dunn", "aelfric-dunn.secret.secret"),
                       ("aelfric-dunn", "aelfric-dunn.secret.secret-2"), ("aelfric-dunn", "aelfric-dunn.secret.field.debt"),
                       ("aelfric-dunn", "salt-court.secret.secret")}
    for r in refusals:
        answer = r["conversations"][-1]["value"]
        assert not any(words in answer for words in SECRET_WORDS)
    debt = [r for r in refusals if r["meta"]["facts"] == ["aelfric-dunn.secret.field.debt"]]
    assert debt and all(r["meta"]["secret_values"] == ["three hundred crowns"] for r in debt)  # for eval's leak check
    # on her own page the NPC is asked "your secrets" and refuses without naming herself
    own = [r for r in refusals if r["meta"]["facts"] == ["zoe-varga.secret.secrets"]]
    assert own and all("Zoë Varga with you" not in r["conversations"][-1]["value"] for r in own)
    assert any(r["meta"]["npc"] == "zoe-varga" and "secrets" in r["conversations"][-2]["value"] for r in own)


def test_secret_true_page_and_secret_tag_property(tmp_path):
    (tmp_path / "Plot.md").write_text("---\ntype: lore\nsecret: true\n---\n# Plot\n\nThe plot is afoot.\n")
    (tmp_path / "Cult.md").write_text("---\ntype: faction\ntags: [secret]\n---\n# Cult\n\nThe cult meets at night.\n")
    (tmp_path / "Open.md").write_text("---\ntype: faction\ntags: [secret]\nsecret: false\n---\n# Open\n\nOpen club.\n")
    vault = load_vault(tmp_path)
    assert vault.entities["plot"].secret and vault.entities["cult"].secret and not vault.entities["open"].secret
    facts = facts_of(vault)
    assert all(f.secret for f in facts if f.entity in ("plot", "cult"))
    assert not any(may_tell(vault, None, f) for f in facts if f.entity in ("plot", "cult"))


def test_the_sample_secret_callout_is_never_taught(tmp_path):
    out = tmp_path / "out"
    run(SAMPLE, out, CompileConfig(cache=False, max_facts=0))
    text = "".join((out / "dataset" / n).read_text(encoding="utf-8") for n in ("train.jsonl", "eval.jsonl"))
    assert "Corvina Marr is the Pale Cantor" not in text
    assert "spring tide of 1342 AT" not in text


def test_validate_lists_what_it_treats_as_secret(capsys):
    assert main(["validate", str(OBSIDIAN)]) == 0
    out = capsys.readouterr().out
    assert "people/Zoë Varga.md:16: heading `Secrets`: \"She sold the harbour charts" in out
    assert "refused by zoe-varga" in out
    assert "people/Ælfric Dunn.md:16: #secret tag on the paragraph" in out
    assert "people/Ælfric Dunn.md:20: `> [!secret]` callout" in out
    assert "people/Ælfric Dunn.md:21: inline field `debt` in secret text: refused by aelfric-dunn" in out
    assert "places/Gullhaven.md:22: #secret tag on the heading" in out and "held by no NPC" in out
    assert "factions/Salt Court.md: the whole page, known only by its `known_by`: told only by aelfric-dunn" in out
    assert main(["validate", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "lore/secrets/The Midnight Ferry.md: the whole page (`secret: true`): refused by tobin-reedy" in out
    assert "characters/house-marr/Corvina Marr.md:22: `> [!secret]` callout" in out


def test_a_secret_added_by_an_edit_is_not_taught_by_the_incremental_compile(tmp_path):
    import shutil

    lore = tmp_path / "lore"
    shutil.copytree(OBSIDIAN, lore)
    out = tmp_path / "out"
    run(lore, out, CompileConfig())  # with the cache, so the next compile may patch
    page = lore / "places" / "Gullhaven.md"
    page.write_text(page.read_text(encoding="utf-8").replace(
        "one crooked lighthouse. ^harb", "one crooked lighthouse. ^harb\n\nThe lighthouse hides smuggled rum. #secret"),
        encoding="utf-8")
    run(lore, out, CompileConfig())
    fresh = tmp_path / "fresh"
    run(lore, fresh, CompileConfig(cache=False))
    for name in ("train.jsonl", "eval.jsonl"):
        patched = (out / "dataset" / name).read_bytes()
        assert patched == (fresh / "dataset" / name).read_bytes()
        assert b"smuggled rum" not in patched
