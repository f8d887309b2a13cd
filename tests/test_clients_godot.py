"""The Godot 4 addon: parsed and linted with gdtoolkit (no Godot 4 binary exists here to run it)."""

from __future__ import annotations

import configparser
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_script

ADDON = Path(__file__).resolve().parent.parent / "runtime" / "godot" / "addons" / "lorekit"
SCRIPTS = sorted(ADDON.rglob("*.gd"))
RUNNER = ADDON.parents[3] / "runtime" / "conformance" / "run_conformance.py"


MODULES = {"gdparse": "gdtoolkit.parser", "gdlint": "gdtoolkit.linter"}


def _tool(name: str) -> list:
    # Run as modules of this interpreter: no dependence on where pip put the gdparse/gdlint scripts.
    if importlib.util.find_spec("gdtoolkit") is None:
        pytest.skip(f"{name} not installed (pip install gdtoolkit; runtime/conformance/install_deps.sh)")
    return [sys.executable, "-m", MODULES[name]]


def test_addon_has_the_expected_scripts():
    names = {p.relative_to(ADDON).as_posix() for p in SCRIPTS}
    assert {"plugin.gd", "lorekit_client.gd", "example/npc_chat_example.gd"} <= names


@pytest.mark.parametrize("tool", ["gdparse", "gdlint"])
def test_gdscript_parses_and_lints(tool):
    proc = subprocess.run([*_tool(tool), *map(str, SCRIPTS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gdparse_rejects_broken_gdscript(tmp_path):
    # The check above can fail: a syntax error must make gdparse exit non-zero.
    broken = tmp_path / "broken.gd"
    broken.write_text(ADDON.joinpath("lorekit_client.gd").read_text().replace("func poll(", "func poll((", 1))
    assert subprocess.run([*_tool("gdparse"), str(broken)], capture_output=True).returncode != 0


def test_plugin_cfg_points_at_the_plugin_script():
    cfg = configparser.ConfigParser()
    cfg.read(ADDON / "plugin.cfg")
    assert cfg["plugin"]["script"].strip('"') == "plugin.gd"
    assert (ADDON / cfg["plugin"]["script"].strip('"')).exists()
    plugin = (ADDON / "plugin.gd").read_text()
    assert 'add_autoload_singleton(AUTOLOAD_NAME, CLIENT_PATH)' in plugin
    assert 'CLIENT_PATH := "res://addons/lorekit/lorekit_client.gd"' in plugin


def test_client_declares_the_protocol_signals_and_polls_in_process():
    src = (ADDON / "lorekit_client.gd").read_text()
    signals = set(re.findall(r"^signal (\w+)\(", src, flags=re.M))
    assert {"connected", "disconnected", "token_received", "sentence_received", "reply_finished",
            "error_received", "npcs_listed"} <= signals
    # Non-blocking: StreamPeerTCP polled from _process, never a blocking get_data/get_line.
    assert re.search(r"func _process\(delta: float\) -> void:\n\tpoll\(delta\)", src)
    assert "StreamPeerTCP.new()" in src and "get_partial_data" in src
    assert ".get_data(" not in src and "OS.delay" not in src


def _typing_problems(src: str) -> list:
    runner = load_script(RUNNER, "lorekit_conformance_runner_godot")
    return runner.godot_typing_problems(src)


def test_client_sends_typing_like_its_other_requests():
    # The conformance scenario's typing step, read from the source (nothing can run GDScript 4 here).
    assert _typing_problems((ADDON / "lorekit_client.gd").read_text()) == []


@pytest.mark.parametrize("old,new", [
    ("\treturn _request(req, false)\n", "\treturn _new_id()\n"),  # returns an id, sends nothing
    ('"type": "typing"', '"type": "turn"'),
    ('\t\treq["state"] = options["state"]', "\t\tpass"),
    ("\tif answered:\n\t\t_pending[id]", "\t_pending[id]"),  # a drop would report a typing as lost
    ("func typing(", "func type_ahead("),
], ids=["not-sent", "wrong-type", "no-state", "pending", "missing"])
def test_typing_check_can_fail(old, new):
    src = (ADDON / "lorekit_client.gd").read_text()
    assert old in src
    assert _typing_problems(src.replace(old, new, 1))


def test_readme_quick_start_snippet_parses(tmp_path):
    readme = (ADDON.parent.parent / "README.md").read_text()
    snippets = re.findall(r"```gdscript\n(.*?)```", readme, flags=re.S)
    assert snippets, "the README has no GDScript quick start"
    for i, code in enumerate(snippets):
        path = tmp_path / f"snippet{i}.gd"
        path.write_text("extends Node\n\n\n" + code)
        proc = subprocess.run([*_tool("gdparse"), str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
