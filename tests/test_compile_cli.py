"""`lorekit validate` and `lorekit compile`: exit codes, messages, and no torch import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lorekit.cli import main

FIXTURES = Path(__file__).parent / "fixtures"
VAULT = FIXTURES / "vault_ok"
BROKEN = FIXTURES / "broken"


def test_validate_exit_codes(capsys):
    assert main(["validate", str(VAULT)]) == 0
    assert "0 error(s), 0 warning(s)" in capsys.readouterr().out
    assert main(["validate", str(BROKEN / "missing_link")]) == 1
    out = capsys.readouterr().out
    assert "Wanderer.md:3: link to missing page [[Hom]] in `residence` (did you mean [[Home]]?)" in out
    assert "2 error(s)" in out


def test_validate_reports_a_bad_lorekit_toml_and_still_checks_pages(capsys):
    assert main(["validate", str(BROKEN / "unknown_config_key")]) == 1
    out = capsys.readouterr().out
    assert "lorekit.toml: unknown key `phrasings` in [compile]" in out


def test_compile_writes_dataset_and_prints_summary(tmp_path, capsys):
    assert main(["compile", str(VAULT), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "pages      7" in out and "per NPC" in out
    assert {p.name for p in (tmp_path / "dataset").iterdir()} == {"train.jsonl", "eval.jsonl", "report.json"}


def test_compile_format_flag(tmp_path):
    assert main(["compile", str(VAULT), "--out", str(tmp_path), "--format", "openai", "-q"]) == 0
    first = json.loads((tmp_path / "dataset" / "train.jsonl").read_text().splitlines()[0])
    assert "messages" in first


def test_compile_with_errors_exits_2_and_writes_nothing(tmp_path, capsys):
    assert main(["compile", str(BROKEN / "template_field"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "_templates/fields/kind.j2:11: template uses `specialty`" in err
    assert "1 error(s) in the lore; nothing was written" in err
    assert not (tmp_path / "dataset").exists()


def test_compile_unknown_config_key_exits_2(tmp_path, capsys):
    assert main(["compile", str(BROKEN / "unknown_config_key"), "--out", str(tmp_path)]) == 2
    assert "unknown key `phrasings` in [compile]" in capsys.readouterr().err


def test_help_and_compile_never_import_torch(tmp_path):
    code = (
        "import sys, contextlib, io\n"
        "from lorekit.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try: main(['--help'])\n"
        "    except SystemExit: pass\n"
        f"    assert main(['compile', {str(VAULT)!r}, '--out', {str(tmp_path)!r}]) == 0\n"
        f"    assert main(['validate', {str(VAULT)!r}]) == 0\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'peft', 'llama_cpp') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout
