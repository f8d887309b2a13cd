"""The JSON codecs the Lua and C# clients carry (no JSON library is available to them): every value
the protocol uses survives a decode + encode, compared with Python's json module. No server needed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

CLIENTS = Path(__file__).resolve().parent.parent / "runtime" / "conformance" / "clients"
UNITY = Path(__file__).resolve().parent.parent / "runtime" / "unity" / "LoreKit"

DOCS = [
    {"type": "token", "id": "t1", "text": "Grüße — « plainly » 😀 \u4e2d\u6587"},
    {"type": "sentence", "id": 7, "index": 0, "text": "Line\nbreak\ttab \"quoted\" back\\slash \u0001 \u2028"},
    {"type": "done", "tokens": {"prompt": 412, "cached": 398, "completion": 8},
     "timings": {"queue_ms": 0.4, "tokens_per_s": 27.875, "big": 1.5e20, "neg": -3}, "ok": True, "no": False},
    {"npcs": [{"id": "mara-vell", "name": "Mara Vell", "greeting": "", "farewell": ""},
              {"id": "x", "name": "Ø", "greeting": "Hi.", "farewell": "Bye."}],
     "empty_list": [], "empty_obj": {}, "nested": [[1, [2, [3]]], {"a": {"b": {"c": "d"}}}]},
]


def _strip_nulls(v):
    # Lua has no null inside a table: a null value decodes to nil, so the key disappears.
    if isinstance(v, dict):
        return {k: _strip_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_strip_nulls(x) for x in v]
    return v


def _roundtrip(argv: list, doc) -> object:
    text = json.dumps(doc, ensure_ascii=True)  # \u escapes, surrogate pairs included
    proc = subprocess.run(argv, input=text.encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return json.loads(proc.stdout.decode("utf-8"))


@pytest.fixture(scope="module")
def csharp_exe(tmp_path_factory):
    for tool in ("mcs", "mono"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (apt-get install mono-mcs mono-runtime)")
    exe = tmp_path_factory.mktemp("cs") / "JsonRoundtrip.exe"
    build = subprocess.run(["mcs", "-nologo", "-warnaserror+", f"-out:{exe}", str(CLIENTS / "JsonRoundtrip.cs"),
                            *map(str, sorted(UNITY.glob("*.cs")))], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    return exe


def _lua(exe: str) -> list:
    if not shutil.which(exe):
        pytest.skip(f"{exe} not installed (runtime/conformance/install_deps.sh)")
    return [exe, str(CLIENTS / "json_roundtrip.lua")]


@pytest.mark.parametrize("doc", DOCS, ids=["unicode", "escapes", "numbers", "nesting"])
@pytest.mark.parametrize("lua", ["lua5.4", "luajit"])
def test_lua_codec_roundtrip(lua, doc):
    assert _roundtrip(_lua(lua), doc) == _strip_nulls(doc)


@pytest.mark.parametrize("doc", DOCS + [{"id": None, "status": {"adapter": None}}],
                         ids=["unicode", "escapes", "numbers", "nesting", "nulls"])
def test_csharp_codec_roundtrip(csharp_exe, doc):
    assert _roundtrip(["mono", str(csharp_exe)], doc) == doc


@pytest.mark.parametrize("bad", ['{"a": 1', '{"a" 1}', '"unterminated', '[1,]x', '{"a": tru}'])
def test_codecs_reject_malformed_json(csharp_exe, bad):
    for argv in (_lua("lua5.4"), ["mono", str(csharp_exe)]):
        proc = subprocess.run(argv, input=bad.encode(), capture_output=True, timeout=60)
        assert proc.returncode == 2, (argv[0], bad, proc.stdout)
