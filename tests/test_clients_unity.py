"""The C# (Unity) client's layout: the core compiles with nothing but the base library, and the two
Unity-only files type-check against a stub of the UnityEngine API they use (runtime/conformance/
UnityEngineStub.cs; UnityEngine itself is not available here). The behaviour is tested in
test_clients_conformance.py and test_clients_auth.py against a real server."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CORE = sorted((REPO / "runtime" / "unity" / "LoreKit").glob("*.cs"))
UNITY_ONLY = sorted((REPO / "runtime" / "unity" / "LoreKit" / "Unity").glob("*.cs"))
STUB = REPO / "runtime" / "conformance" / "UnityEngineStub.cs"


def _mcs(tmp_path: Path, files: list) -> subprocess.CompletedProcess:
    if not shutil.which("mcs"):
        pytest.skip("mcs not installed (apt-get install mono-mcs)")
    return subprocess.run(["mcs", "-nologo", "-warnaserror+", "-target:library", f"-out:{tmp_path / 'out.dll'}",
                           *map(str, files)], capture_output=True, text=True)


def test_core_uses_only_the_base_library():
    assert [p.name for p in CORE] == ["LoreKitClient.cs", "LoreKitJson.cs"]
    for path in CORE:
        usings = set(re.findall(r"^using ([\w.]+);", path.read_text(), flags=re.M))
        assert usings <= {"System", "System.Collections", "System.Collections.Generic", "System.Collections.Concurrent",
                          "System.Globalization", "System.IO", "System.Net.Sockets", "System.Text",
                          "System.Threading"}, (path.name, usings)


def test_core_compiles_alone(tmp_path):
    proc = _mcs(tmp_path, CORE)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_unity_files_type_check_against_the_api_stub(tmp_path):
    assert [p.name for p in UNITY_ONLY] == ["LoreKitBehaviour.cs", "NpcChatExample.cs"]
    proc = _mcs(tmp_path, [STUB, *CORE, *UNITY_ONLY])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_type_check_can_fail(tmp_path):
    broken = tmp_path / "LoreKitBehaviour.cs"
    broken.write_text(UNITY_ONLY[0].read_text().replace("Client.DispatchEvents();", "Client.DispatchEvent();"))
    proc = _mcs(tmp_path, [STUB, *CORE, broken, UNITY_ONLY[1]])
    assert proc.returncode != 0 and "DispatchEvent" in proc.stdout + proc.stderr


def test_readme_snippets_compile(tmp_path):
    snippets = re.findall(r"```csharp\n(.*?)```", (REPO / "runtime" / "unity" / "README.md").read_text(), flags=re.S)
    assert len(snippets) == 2, "expected the Unity quick start and the plain C# example"
    unity_part = tmp_path / "QuickStart.cs"
    unity_part.write_text(snippets[0])
    plain = tmp_path / "PlainExample.cs"
    plain.write_text("using System;\nusing System.Threading;\nusing LoreKit;\n"
                     "static class PlainExample\n{\n    static void Run()\n    {\n" + snippets[1] + "    }\n}\n")
    proc = _mcs(tmp_path, [STUB, *CORE, *UNITY_ONLY, unity_part, plain])
    assert proc.returncode == 0, proc.stdout + proc.stderr
