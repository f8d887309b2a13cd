"""Issue 13: one prompt path, one dataset contract, one lore-file rule (each test failed before the fix)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lorekit import dataset
from lorekit.build import keys
from lorekit.compile import load_config as compile_config
from lorekit.compile import run
from lorekit.compile.templates import DEFAULT_DIR
from lorekit.lore import load_vault
from lorekit.lore.files import lore_kind
from lorekit.prompt import persona, template_dir_of

FIXTURE = Path(__file__).parent / "fixtures" / "vault_ok"


@pytest.fixture()
def custom_vault(tmp_path):
    """A vault whose lorekit.toml points [compile] template_dir at a folder with its own persona."""
    vault = tmp_path / "lore"
    shutil.copytree(FIXTURE, vault)
    custom = tmp_path / "my_templates"
    custom.mkdir()
    (custom / "persona.j2").write_text("{% block system %}CUSTOM PERSONA of {{ npc.name }}.{% endblock %}\n")
    (vault / "lorekit.toml").write_text('[compile]\ntemplate_dir = "../my_templates"\n')
    return vault


def _systems(train_path: Path) -> dict[str, str]:
    out = {}
    for _, row in dataset.read(train_path):
        msgs = dataset.messages(row)
        if row["meta"]["npc"] and msgs[0]["role"] == "system":
            out[row["meta"]["npc"]] = msgs[0]["content"]
    return out


def test_server_and_modelfile_send_the_persona_that_training_used(custom_vault, tmp_path):
    from lorekit.export.modelfile import persona as modelfile_persona
    from lorekit.serve.personas import Lore

    out = tmp_path / "build"
    result = run(custom_vault, out, compile_config(custom_vault))
    trained = _systems(result.train_path)
    assert trained["mara-vell"] == "CUSTOM PERSONA of Mara Vell."
    lore = Lore(custom_vault)
    assert lore.load().ok
    assert lore.current.prompts["mara-vell"] == trained["mara-vell"]
    assert modelfile_persona(out, "mara-vell") == trained["mara-vell"]
    assert template_dir_of(custom_vault) == custom_vault / "../my_templates"


def test_openai_rows_train_and_evaluate_like_sharegpt_rows(tmp_path):
    from lorekit.evaluate.data import load_questions, train_answers
    from lorekit.train.data import read_rows

    share = run(FIXTURE, tmp_path / "a", compile_config(FIXTURE))
    openai = run(FIXTURE, tmp_path / "b", compile_config(FIXTURE, {"format": "openai"}))
    assert "messages" in json.loads(openai.train_path.read_text().splitlines()[0])
    assert [dataset.messages(r) for r in read_rows(openai.train_path)] == \
        [dataset.messages(r) for r in read_rows(share.train_path)]
    q_open, q_share = load_questions(openai.eval_path), load_questions(share.eval_path)
    assert [(q.messages, q.expected) for q in q_open] == [(q.messages, q.expected) for q in q_share]
    assert train_answers(openai.train_path) == train_answers(share.train_path)
    assert keys.dataset_facts_key(openai.train_path.parent) != ""  # the build's train key reads both formats


def test_a_broken_row_names_file_and_line(tmp_path):
    from lorekit.errors import LorekitError

    path = tmp_path / "train.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                    '{"messages": [{"role": "user", "content": 3}]}\n')
    with pytest.raises(LorekitError, match=r"train.jsonl:2: not a dataset row"):
        dataset.read(path)


@pytest.mark.parametrize(("rel", "kind"), [
    ("people/Mara Vell.md", "page"), ("lorekit.toml", "config"), ("_templates/persona.j2", "template"),
    ("_templates/fields/leader.jinja", "template"), ("_drafts/Idea.md", None), (".obsidian/app.json", None),
    ("people/.Mara.md.swp", None), ("people/_notes.md", None), ("images/map.png", None),
    ("_templates/readme.md", None), ("sub/lorekit.toml", None),
])
def test_one_rule_says_what_a_lore_file_is(rel, kind):
    assert lore_kind(rel) == kind


def test_template_edits_reload_the_server_and_change_the_compile_key(custom_vault, tmp_path):
    from lorekit.serve.watcher import lore_relevant

    root = custom_vault.resolve()
    assert lore_relevant(str(root / "_templates" / "persona.j2"), root)
    assert not lore_relevant(str(root / "_drafts" / "x.md"), root)
    cfg = {"template_dir": "../my_templates"}
    outside = tmp_path / "my_templates"
    before = keys.compile_key(custom_vault, DEFAULT_DIR, cfg, outside)
    (outside / "persona.j2").write_text("{% block system %}Another persona.{% endblock %}\n")
    assert keys.compile_key(custom_vault, DEFAULT_DIR, cfg, outside) != before


def test_persona_never_holds_the_game_state():
    vault = load_vault(FIXTURE)
    assert "Right now" not in persona(vault, "mara-vell")
