"""The dataset: determinism, the eval/train phrasing split, relations both ways, NPC knowledge,
secrets, "I don't know", incremental rebuilds and the atomic write."""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from lorekit.compile import CompileConfig, ValidationFailed, load_config, run
from lorekit.lore import facts_of, load_vault
from lorekit.lore.article import name_in
from lorekit.prompt import conversation, persona

VAULT = Path(__file__).parent / "fixtures" / "vault_ok"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def human(row: dict) -> list[str]:
    return [t["value"] for t in row["conversations"] if t["from"] == "human"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    result = run(VAULT, out, load_config(VAULT))
    return result, rows(result.train_path), rows(result.eval_path)


def test_two_compiles_are_byte_identical(built, tmp_path):
    first, _, _ = built
    run(VAULT, tmp_path / "b", load_config(VAULT, {"cache": False}))
    for name in ("train.jsonl", "eval.jsonl", "report.json"):
        assert (first.out / "dataset" / name).read_bytes() == (tmp_path / "b" / "dataset" / name).read_bytes()


def test_seed_changes_the_order(built, tmp_path):
    first, _, _ = built
    other = run(VAULT, tmp_path / "s", load_config(VAULT, {"seed": 99}))
    assert other.train_path.read_bytes() != first.train_path.read_bytes()


def test_eval_phrasings_never_appear_in_train(built):
    _, train, evals = built
    seen = {q for r in train for q in human(r)}
    assert evals and all(q not in seen for r in evals for q in human(r))
    taught = {f for r in train for f in r["meta"]["facts"]}
    fact_evals = [r for r in evals if r["meta"]["kind"] in ("field", "reverse", "summary", "section")]
    assert fact_evals and all(set(r["meta"]["facts"]) <= taught for r in fact_evals)  # phrasings held out, not facts


def test_every_taught_fact_has_five_distinct_phrasings(built):
    _, train, _ = built
    phrasings = defaultdict(set)
    for r in train:
        if r["meta"]["kind"] in ("field", "reverse", "summary", "section"):
            phrasings[r["meta"]["facts"][0]].update(human(r))
    assert len(phrasings) >= 25
    assert min(len(v) for v in phrasings.values()) >= 5


def test_relations_asked_in_both_directions(built):
    _, train, _ = built
    facts = {f for r in train for f in r["meta"]["facts"]}
    assert {"ash-guild.leader", "mara-vell.rev.leader", "mara-vell.residence", "cinderfall.rev.residence"} <= facts
    back = [r for r in train if r["meta"]["facts"] == ["mara-vell.rev.leader"]]
    assert all("Ash Guild" in r["conversations"][-1]["value"] for r in back)


def test_answers_state_the_expected_values_verbatim(built):
    _, train, evals = built
    for r in train + evals:
        answers = " ".join(t["value"] for t in r["conversations"] if t["from"] == "gpt")
        assert all(name_in(v, answers) for v in r["meta"]["expect"]), r
    assert sum(bool(r["meta"]["expect"]) for r in train) > len(train) // 2


def test_rows_are_shuffled(built):
    _, train, _ = built
    where = defaultdict(list)
    for i, r in enumerate(train):
        if len(r["meta"]["facts"]) == 1:
            where[r["meta"]["facts"][0]].append(i)
    spread = [max(p) - min(p) for p in where.values() if len(p) >= 5]
    assert spread and min(spread) > 10  # one fact's paraphrases do not sit together


def test_npcs_speak_only_of_what_they_know_in_their_persona(built):
    _, train, _ = built
    vault = load_vault(VAULT)
    facts = {f.id: f for f in facts_of(vault)}
    for r in train:
        m = r["meta"]
        system = r["conversations"][0]["value"]
        if m["npc"] is not None:
            assert system == persona(vault, m["npc"])
            if m["kind"] in ("field", "reverse", "summary", "section", "multi_turn"):
                assert all(facts[f].pages <= vault.npcs[m["npc"]].knows for f in m["facts"])


def test_secrets_are_refused_and_never_told(built):
    _, train, evals = built
    refusals = [r for r in train if r["meta"]["kind"] == "secret"]
    assert refusals and all(r["meta"]["npc"] == "mara-vell" for r in refusals)
    assert all(r["conversations"][-1]["value"] == "That's guild business. Drop it." for r in refusals)
    text = json.dumps(train + evals)
    assert "bribe" not in text  # the secret page's facts
    assert "burned the first" not in text  # a > [!secret] callout
    keeper = [r for r in train if r["meta"]["npc"] is None]
    # known_by: only Mara tells the Long Winter's own facts
    assert keeper and not any(f.startswith("long-winter.") for r in keeper for f in r["meta"]["facts"])
    assert not any("froze the Greywater" in json.dumps(r) for r in train if r["meta"]["npc"] != "mara-vell")
    assert any("froze the Greywater" in json.dumps(r) for r in train if r["meta"]["npc"] == "mara-vell")


def test_unknown_names_are_invented_absent_and_answered_i_dont_know(built):
    _, train, evals = built
    vault = load_vault(VAULT)
    unknown = [r for r in train + evals if r["meta"]["kind"] == "unknown"]
    invented = [r["meta"]["entities"][0] for r in unknown if vault.resolve(r["meta"]["entities"][0]) is None]
    assert len(invented) >= 8
    assert all(not vault.mentions(name) for name in invented)
    assert all(r["meta"]["expect"] == [] for r in unknown)
    phrases = ("know", "record", "means nothing", "never heard")
    assert all(any(p in r["conversations"][-1]["value"] for p in phrases) for r in unknown)
    # Mara does not know the Greywater's page, but has heard of it (Cinderfall is part of the Greywater):
    # she is never taught to deny it (real pages an NPC has never heard of: tests/test_grounding.py)
    assert not any(r["meta"]["npc"] == "mara-vell" and r["meta"]["entities"] == ["Greywater"] for r in unknown)


def test_report_contents(built):
    result, train, evals = built
    report = json.loads(result.report_path.read_text())
    assert report["lore_dir"] == str(VAULT.resolve())
    assert report["rows"]["train"] == len(train) and report["rows"]["eval"] == len(evals)
    assert {n["id"] for n in report["npcs"]} == {"mara-vell", "oren-vell"}
    assert report["entities_by_type"]["character"] == 2
    assert len(report["dataset_sha256"]) == 64
    assert report["rows_per_fact"]["min"] >= 5


def test_game_state_goes_before_the_players_line_never_into_the_persona():
    vault = load_vault(VAULT)
    base = persona(vault, "mara-vell")
    assert "Mara Vell" in base and "Dry and clipped" in base and "The Ember Ledger" in base
    history = [{"role": "user", "content": "Hello."}, {"role": "assistant", "content": "Well met."}]
    msgs = conversation(base, history, "Who runs the guild?", {"location": "the kiln hall", "nearby": ["Oren Vell"]})
    assert msgs[0] == {"role": "system", "content": base} and msgs[1:3] == history
    assert msgs[3]["content"] == "Right now: location: the kiln hall; nearby: Oren Vell.\n\nWho runs the guild?"
    assert conversation(base, [], "Hi.", {})[-1]["content"] == "Hi."


def test_openai_format(tmp_path):
    result = run(VAULT, tmp_path, load_config(VAULT, {"format": "openai"}))
    row = rows(result.train_path)[0]
    assert [m["role"] for m in row["messages"]][:3] == ["system", "user", "assistant"]
    assert "meta" in row and "conversations" not in row


def test_incremental_rebuild_equals_full_build(tmp_path):
    vault = tmp_path / "vault"
    shutil.copytree(VAULT, vault)
    out = tmp_path / "out"
    first = run(vault, out, load_config(vault))
    assert first.rendered == len({f for f in facts_of(load_vault(vault))})
    page = vault / "places" / "Greywater.md"
    page.write_text(page.read_text().replace("slow, wide", "slow, muddy"))
    second = run(vault, out, load_config(vault))
    assert 0 < second.rendered <= 3  # only the edited page's facts are rendered again
    run(vault, tmp_path / "full", load_config(vault, {"cache": False}))
    for name in ("train.jsonl", "eval.jsonl", "report.json"):
        assert (out / "dataset" / name).read_bytes() == (tmp_path / "full" / "dataset" / name).read_bytes()
    assert b"slow, muddy" in (out / "dataset" / "train.jsonl").read_bytes()


def _same_as_full(tmp_path, vault, out):
    full = run(vault, tmp_path / "full", load_config(vault, {"cache": False}))
    for name in ("train.jsonl", "eval.jsonl", "report.json"):
        assert (out / "dataset" / name).read_bytes() == (full.out / "dataset" / name).read_bytes(), name
    shutil.rmtree(tmp_path / "full")


def test_incremental_fast_path_patches_and_equals_full_build(tmp_path):
    vault = tmp_path / "vault"
    shutil.copytree(VAULT, vault)
    (vault / "lorekit.toml").write_text((vault / "lorekit.toml").read_text() + "notes = false  # the fast path serves builds without notes\n")
    out = tmp_path / "out"
    run(vault, out, load_config(vault))
    unchanged = run(vault, out, load_config(vault))
    assert unchanged.fast and unchanged.rendered == 0
    page = vault / "Ash Guild.md"
    # a prose and value edit that keeps the page's links and fields: patched in place
    page.write_text(page.read_text().replace("controls every kiln", "owns every kiln").replace("812", "813"))
    edited = run(vault, out, load_config(vault))
    assert edited.fast and 0 < edited.rendered <= 8
    assert b"owns every kiln" in (out / "dataset" / "train.jsonl").read_bytes()
    _same_as_full(tmp_path, vault, out)
    # a second edit of another page builds on the patched state
    other = vault / "places" / "Cinderfall.md"
    other.write_text(other.read_text().replace("soot-black", "ash-grey"))
    again = run(vault, out, load_config(vault))
    assert again.fast
    _same_as_full(tmp_path, vault, out)
    # a new link changes the graph: compiled normally, still identical to a full build
    page.write_text(page.read_text() + "\nIt trades with [[Greywater]].\n")
    linked = run(vault, out, load_config(vault))
    assert not linked.fast
    _same_as_full(tmp_path, vault, out)


def test_failed_compile_leaves_the_previous_dataset(tmp_path, monkeypatch):
    out = tmp_path / "out"
    run(VAULT, out, load_config(VAULT))
    before = {p.name: p.read_bytes() for p in (out / "dataset").iterdir()}

    def boom(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("lorekit.compile.report.make_report", boom)
    with pytest.raises(RuntimeError):
        run(VAULT, out, load_config(VAULT, {"seed": 5}))
    assert {p.name: p.read_bytes() for p in (out / "dataset").iterdir()} == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".dataset")] == []


def test_validation_errors_write_nothing(tmp_path):
    broken = Path(__file__).parent / "fixtures" / "broken" / "missing_link"
    with pytest.raises(ValidationFailed) as e:
        run(broken, tmp_path / "out", CompileConfig())
    assert any("[[Hom]]" in str(p) for p in e.value.problems)
    assert not (tmp_path / "out" / "dataset").exists()


def test_patch_replaces_lines_and_keeps_offsets(tmp_path):
    import hashlib

    from lorekit.compile.fast import _offsets, _patch

    lines = [f"line {i}\n".encode() for i in range(10)]
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"".join(lines))
    offsets = _offsets(lines)
    new = {2: b"two, longer\n", 7: b"7\n", 9: b"nine!\n"}
    h = hashlib.sha256()
    out = _patch(path, offsets, new, h, tmp_path / "g.jsonl")
    expected = [new.get(i, line) for i, line in enumerate(lines)]
    assert (tmp_path / "g.jsonl").read_bytes() == b"".join(expected)
    assert h.hexdigest() == hashlib.sha256(b"".join(expected)).hexdigest()
    assert list(out) == list(_offsets(expected))


def test_offsets_stay_right_over_many_patches(tmp_path, monkeypatch):
    import hashlib
    import random

    from lorekit.compile.fast import Offsets, _offsets, _patch

    monkeypatch.setattr(Offsets, "FOLD", 5)  # fold often: both the lazy shifts and the folding are used
    rng = random.Random(7)
    lines = [f"line {i}\n".encode() for i in range(40)]
    path = tmp_path / "f.jsonl"
    path.write_bytes(b"".join(lines))
    offsets = _offsets(lines)
    pending = []
    for k in range(12):
        new = {i: b"x" * rng.randrange(1, 30) + b"\n" for i in rng.sample(range(40), 3)}
        offsets = _patch(path, offsets, new, hashlib.sha256(), tmp_path / "g.jsonl")
        (tmp_path / "g.jsonl").replace(path)
        lines = [new.get(i, line) for i, line in enumerate(lines)]
        assert list(offsets) == list(_offsets(lines)), k
        pending.append(len(offsets.shifts))
    assert 0 in pending and max(pending) > 0  # some patches kept shifts pending, some folded them


def test_fast_scan_finds_the_pages_load_vault_finds(tmp_path):
    from lorekit.compile.fast import _scan_stat
    from lorekit.lore.vault import scan_paths

    vault = tmp_path / "vault"
    shutil.copytree(VAULT, vault)
    (vault / "notes.md.bak").write_text("not a page")
    (vault / "_drafts").mkdir()
    (vault / "_drafts" / "Draft.md").write_text("---\ntype: lore\n---\n# Draft\n")
    (vault / "linked").symlink_to(vault / "places", target_is_directory=True)
    found = sorted((path, rel) for path, rel, _ in _scan_stat(str(vault)))
    assert found == scan_paths(vault) and len(found) == 7


def test_fast_path_rewrites_the_spare_and_a_failed_patch_changes_nothing(tmp_path, monkeypatch):
    from lorekit.compile import fast

    vault, out = tmp_path / "vault", tmp_path / "out"
    shutil.copytree(VAULT, vault)
    (vault / "lorekit.toml").write_text((vault / "lorekit.toml").read_text() + "notes = false  # the fast path serves builds without notes\n")
    run(vault, out, load_config(vault))
    inodes = [(out / ".cache" / fast.SPARE / "train.jsonl").stat().st_ino]  # the first compile makes a spare
    page = vault / "Ash Guild.md"
    for word in ("owns", "rules", "holds"):
        page.write_text(page.read_text().replace("controls every kiln", f"{word} every kiln")
                        .replace("owns every kiln", f"{word} every kiln").replace("rules every kiln", f"{word} every kiln"))
        assert run(vault, out, load_config(vault)).fast
        inodes.append((out / "dataset" / "train.jsonl").stat().st_ino)
    assert inodes[3] == inodes[1] == inodes[0] != inodes[2]  # the dataset before the last is rewritten in place
    _same_as_full(tmp_path, vault, out)
    before = {p.name: p.read_bytes() for p in (out / "dataset").iterdir()}

    def broken(data, offsets, new, h, tmp):  # half a file written, then the disk fills up
        tmp.write_bytes(b"half")
        raise OSError("disk full")
    monkeypatch.setattr(fast, "_patch_view", broken)
    page.write_text(page.read_text().replace("holds every kiln", "keeps every kiln"))
    with pytest.raises(OSError):
        fast.try_fast(vault, out, load_config(vault))
    assert before == {p.name: p.read_bytes() for p in (out / "dataset").iterdir()}
    assert not (out / ".cache" / fast.SPARE).exists()
    monkeypatch.undo()
    assert run(vault, out, load_config(vault)).fast  # no spare: written afresh, and the next one is kept
    assert (out / ".cache" / fast.SPARE / "train.jsonl").exists()
    _same_as_full(tmp_path, vault, out)
