"""bench/prior_worlds.py: copies of bench/prior_world whose names never repeat, for a notes-reading prior that
learns the reading and no world's names. Each copy must be the same world under other names (valid, same
entities, NPCs and facts), share no name with the original, the other copies or sample_lore, keep no trace of
the original names, and compile into a build folder that `lorekit train` accepts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from lorekit import config
from lorekit.cli import main as lorekit_main
from lorekit.lore import facts_of, load_vault
from tests.conftest import REPO, SAMPLE_LORE, load_script

WORLD = REPO / "bench" / "prior_world"
# names a reader of bench/results/prior_notes.md saw leak, and words only this world uses (prose-only names too)
ORIGINAL_WORDS = ["Karsk", "Quorra", "Tesh", "Teshi", "Sekh", "Hask", "Ildra", "Mirrah", "Vesk", "Brask", "Oyelu",
                  "Ozzat", "Kheir", "Hollisk", "Orimel", "Dacho", "Cassimir", "Nadira", "Hadrun", "Velia", "Qand",
                  "Auren", "Ketterspine", "Everlamp", "Souk", "Ochre", "Windspeaker", "Windspeakers", "Serin",
                  "Rindle", "Tavi", "Essa"]


def _load_script():
    return load_script(REPO / "bench" / "prior_worlds.py", "prior_worlds")


def _names(vault) -> set[str]:
    """Every page name and alias, lower case, without a leading "the"."""
    return {re.sub(r"^the\s+", "", n.strip().lower()) for e in vault.entities.values() for n in [e.name, *e.aliases]}


def _text(root) -> str:
    """Every file of a folder: its path and its content."""
    return "\n".join(f"{p.relative_to(root)}\n{p.read_text(encoding='utf-8')}" for p in sorted(root.rglob("*"))
                     if p.is_file())


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    out = tmp_path_factory.mktemp("worlds")
    assert _load_script().main([str(out), "--copies", "2", "--seed", "5"]) == 0
    return [out / "world-01", out / "world-02"]


def test_every_copy_validates_with_the_original_shape(copies):
    original = load_vault(WORLD)
    for copy in copies:
        vault = load_vault(copy)
        assert [str(p) for p in vault.problems] == []
        if copy == copies[0]:  # the CLI too (2-3 s a copy)
            assert lorekit_main(["validate", str(copy)]) == 0
        assert Counter(e.type for e in vault.entities.values()) == Counter(e.type for e in original.entities.values())
        assert len(vault.npcs) == len(original.npcs)
        assert Counter(f.kind for f in facts_of(vault)) == Counter(f.kind for f in facts_of(original))
        assert sorted(len(n.knows) for n in vault.npcs.values()) == sorted(len(n.knows) for n in original.npcs.values())
        assert sorted(len(n.secrets) for n in vault.npcs.values()) == \
            sorted(len(n.secrets) for n in original.npcs.values())
        assert "dont_know_share = 0.3" in (copy / "lorekit.toml").read_text() and not (copy / "_README.md").exists()


def test_copies_share_no_name_with_the_original_each_other_or_sample_lore(copies):
    first, second = (_names(load_vault(c)) for c in copies)
    for other in (_names(load_vault(WORLD)), _names(load_vault(SAMPLE_LORE))):
        assert first & other == set() and second & other == set()
    assert first & second == set()


def test_no_original_name_is_left_in_a_copy(copies):
    original = load_vault(WORLD)
    whole = {re.sub(r"^(?i:the)\s+", "", n) for e in original.entities.values() for n in [e.name, *e.aliases]}
    for copy in copies:
        text = _text(copy)
        left = [w for w in ORIGINAL_WORDS if re.search(rf"(?<![a-z]){w}(?![a-z])", text, re.IGNORECASE)]
        left += [n for n in whole if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", text)]  # "Caravan League", "the Rest"
        assert left == [], f"{copy.name} still names {left}"
        assert not re.search(r"\bCC\b", text), "the Cairn Count's years follow the new name's initials"


def test_same_seed_same_copies_other_seed_other_names(copies, tmp_path):
    # another process with another string hash seed: no set order may leak into the names
    subprocess.run([sys.executable, str(REPO / "bench" / "prior_worlds.py"), str(tmp_path / "again"), "--copies", "1",
                    "--seed", "5"], check=True, capture_output=True, cwd=REPO,
                   env={**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(REPO)})
    _load_script().main([str(tmp_path / "other"), "--copies", "1", "--seed", "6"])
    assert _text(tmp_path / "again" / "world-01") == _text(copies[0])
    assert _names(load_vault(tmp_path / "other" / "world-01")) & _names(load_vault(copies[0])) == set()


def test_compiled_copies_are_a_build_folder_that_train_accepts(tmp_path):
    from lorekit.train.config import TrainConfig
    from lorekit.train.data import read_rows
    from lorekit.train.recipe import _dataset_files, resolve_defaults

    out = tmp_path / "worlds"
    assert _load_script().main([str(out), "--copies", "1", "--compile"]) == 0
    report = json.loads((out / "dataset" / "report.json").read_text())
    one = json.loads((out / "world-01_build" / "dataset" / "report.json").read_text())
    assert report["rows"]["train"] == one["rows"]["train"] > 3000 and report["rows"]["eval"] == one["rows"]["eval"]
    assert one["config"]["notes"] and one["config"]["dont_know_share"] == 0.3 and one["warnings"] == []
    train = (out / "dataset" / "train.jsonl").read_text().splitlines()
    assert sorted(train) == sorted((out / "world-01_build" / "dataset" / "train.jsonl").read_text().splitlines())
    assert not any(w in "\n".join(train) for w in ("Karsk", "Quorra", "Caravan League"))
    # what `lorekit train OUT` does before it loads a model: find the dataset, read its config, read every row
    assert config.lore_dir_of(out) == out.resolve()
    with (out / "lorekit.toml").open("a") as f:
        f.write('\n[train]\nbatch_size = 16\nepochs = 1\nlora_r = 16\n')
    cfg = resolve_defaults(config.load(TrainConfig, "train", config.lore_dir_of(out)), cuda=True)
    assert (cfg.batch_size, cfg.epochs) == (16, 1)
    train_file, eval_file = _dataset_files(out)
    assert len(read_rows(train_file)) == report["rows"]["train"] and len(read_rows(eval_file)) == report["rows"]["eval"]


def test_recast_gives_every_npc_other_stock_lines_in_every_copy(tmp_path):
    """--recast: each copy's NPCs say "I don't know" and refuse in lines of bench/prior_lines.py, no two NPCs of a
    copy share one, and the copies differ, so a prior cannot learn seven NPCs' lines by heart."""
    script = _load_script()
    assert script.main([str(tmp_path), "--copies", "2", "--seed", "5", "--recast"]) == 0
    pools = {"dont_know": set(script.prior_lines.DONT_KNOW), "refuse": set(script.prior_lines.REFUSE)}
    original = {(n.dont_know, n.refuse) for n in load_vault(WORLD).npcs.values()}
    lines = []
    for copy in ("world-01", "world-02"):
        npcs = list(load_vault(tmp_path / copy).npcs.values())
        said = [n.dont_know for n in npcs if n.dont_know] + [n.refuse for n in npcs if n.refuse]
        assert len(said) == len(set(said)) == sum(bool(a) + bool(b) for a, b in original)
        assert all(n.dont_know in pools["dont_know"] for n in npcs if n.dont_know)
        assert all(n.refuse in pools["refuse"] for n in npcs if n.refuse)
        lines.append([(n.id, n.dont_know) for n in npcs])
    assert [line for _, line in lines[0]] != [line for _, line in lines[1]]


def test_the_cpu_prior_samples_rows_by_kind(tmp_path):
    prior_cpu = load_script(REPO / "bench" / "prior_cpu.py", "prior_cpu")
    import random

    kinds = ["absent"] * 300 + ["unknown"] * 300 + ["secret"] * 20 + ["greeting"] * 5 + ["field"] * 1000
    lines = [json.dumps({"meta": {"kind": k, "i": i}}).encode() + b"\n" for i, k in enumerate(kinds)]
    got = Counter(json.loads(line)["meta"]["kind"] for line in prior_cpu.sample_rows(lines, 300, random.Random(1)))
    assert got == {"absent": 70, "unknown": 45, "secret": 20, "greeting": 5, "field": 160}  # secrets and greetings run out
