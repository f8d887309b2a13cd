"""`lorekit build` end to end on a tiny vault and a tiny random model: artifacts and incrementality."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from lorekit import build
from lorekit.build.config import BuildConfig
from lorekit.cli import main

pytestmark = [pytest.mark.torch, pytest.mark.llama, pytest.mark.slow]

FIXTURE = Path(__file__).parent / "fixtures" / "vault_ok"


@pytest.fixture
def project(tmp_path):
    from tests.tiny_models import make_tiny_model

    model = make_tiny_model(tmp_path / "models", "gemma3")
    vault = tmp_path / "lore"
    shutil.copytree(FIXTURE, vault)
    (vault / "lorekit.toml").write_text(
        "[compile]\nseed = 7\nunknown_names = 8\n"
        f"[train]\nmodel = \"{model}\"\nepochs = 1\nbatch_size = 8\nmax_steps = 3\n"
        "[export]\nfrom_hf = \"model\"\ntype = \"f16\"\nverify_prompts = 1\n"
        "[eval]\nlimit = 4\nmax_tokens = 4\ngeneral = false\n",
        encoding="utf-8",
    )
    return vault, tmp_path / "build"


def _statuses(result) -> dict[str, str]:
    return {s.name: s.status for s in result.stages}


def test_build_end_to_end_then_incremental(project, capsys):
    vault, out = project
    cfg = BuildConfig(out=str(out))

    first = build.run(vault, cfg)
    assert _statuses(first) == {"compile": "built", "train": "built", "export": "built", "eval": "built"}
    for artifact in ("dataset/train.jsonl", "adapter/adapter_model.safetensors", "train/run.json",
                     "export/model.gguf", "export/Modelfile", "eval/report.json", "eval/report.html"):
        assert (out / artifact).is_file(), artifact
    stamps = json.loads((out / "build.json").read_text())["stages"]
    assert set(stamps) == {"compile", "train", "export", "eval"}

    # Nothing changed: every stage is skipped, in well under the time the first build took.
    started = time.perf_counter()
    again = build.run(vault, cfg)
    assert set(_statuses(again).values()) == {"up to date"}
    assert time.perf_counter() - started < 10

    # Persona-only edits (speech rules, voice: only the system turn uses them) recompile but do not retrain.
    mara = vault / "people" / "Mara Vell.md"
    text = mara.read_text(encoding="utf-8")
    assert "  voice: " in text
    mara.write_text(text.replace("  voice: ", "  style: Never uses contractions.\n  voice: ", 1), encoding="utf-8")
    persona = build.run(vault, cfg)
    assert _statuses(persona)["compile"] == "built"
    assert _statuses(persona)["train"] == "up to date"
    text = mara.read_text(encoding="utf-8")
    mara.write_text(text.replace("  voice: ", "  voice: Hoarse from the kiln smoke. ", 1), encoding="utf-8")
    voice = build.run(vault, cfg)
    assert _statuses(voice)["compile"] == "built" and _statuses(voice)["train"] == "up to date"
    rows = [json.loads(line) for line in (out / "dataset" / "train.jsonl").read_text().splitlines()]
    assert all("Hoarse from the kiln smoke" in r["conversations"][0]["value"]
               for r in rows if r["meta"]["npc"] == "mara-vell")

    # A changed fact redoes every stage after compile.
    adapter_before = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    cinderfall = vault / "places" / "Cinderfall.md"
    cinderfall.write_text(cinderfall.read_text(encoding="utf-8") + "\n## Markets\n\nCinderfall holds a glass market every spring.\n",
                          encoding="utf-8")
    fact = build.run(vault, cfg)
    assert _statuses(fact) == {"compile": "built", "train": "built", "export": "built", "eval": "built"}
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() != adapter_before

    # --to stops early; --from redoes a stage whose inputs did not change.
    assert _statuses(build.run(vault, cfg, to_stage="compile")) == {
        "compile": "up to date", "train": "skipped", "export": "skipped", "eval": "skipped"}
    assert _statuses(build.run(vault, cfg, from_stage="eval"))["eval"] == "built"

    # The CLI prints the summary and the next command.
    capsys.readouterr()
    assert main(["build", str(vault), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Nothing to do" in printed and "lorekit serve" in printed
    verdict = json.loads((out / "eval" / "report.json").read_text())["verdict"]
    assert f"evaluation: {verdict['status']} ({verdict['headline']})" in printed


def test_build_stops_on_broken_lore_and_keeps_artifacts(tmp_path):
    out = tmp_path / "build"
    vault = tmp_path / "lore"
    shutil.copytree(FIXTURE, vault)
    assert main(["build", str(vault), "--out", str(out), "--to", "compile"]) == 0
    before = (out / "dataset" / "train.jsonl").read_bytes()
    page = vault / "places" / "Cinderfall.md"
    page.write_text(page.read_text(encoding="utf-8").replace("---\n", "---\nbroken: [unclosed\n", 1), encoding="utf-8")
    assert main(["build", str(vault), "--out", str(out), "--to", "compile"]) != 0
    assert (out / "dataset" / "train.jsonl").read_bytes() == before
