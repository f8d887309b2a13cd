"""bench/engine_players.py end to end on a small scale (the GPU run uses the same code): players in their own
process through LoreKit `--engine`, then straight to the engine, against the fake engine of the unit tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")

from lorekit.prompt import NOTES_HEADER  # noqa: E402
from tests.conftest import grounded_copy  # noqa: E402
from tests.fake_engine import FakeEngine  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent / "bench" / "engine_players.py"


def test_players_through_lorekit_and_straight_to_the_engine(tmp_path):
    lore = grounded_copy(tmp_path / "lore")
    engine = FakeEngine()
    try:
        run = subprocess.run(
            [sys.executable, str(BENCH), "--players", "3", "--turns", "2", "--tokens", "8", "--lore", str(lore),
             "--engine", engine.url, "--skip-inprocess", "--no-write", "--player-procs", "2", "--direct",
             "--warmup-wave"],
            capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(BENCH.parent.parent)})
    finally:
        engine.close()
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    cases = {}
    for line in run.stdout.splitlines():
        if line.startswith("[") and "] {" in line:
            name, data = line[1:].split("] ", 1)
            cases[name] = json.loads(data)
    assert set(cases) == {"engine", "engine alone", "engine alone, plain sampling"}
    for case in cases.values():
        assert case["turns"] == 6 and case["errors"] == 0 and case["first_token_p95_s"] > 0
    assert "warm-up wave: 3 turns" in run.stdout
    # LoreKit's sampling fields go to the engine, except in the plain case; every prompt carries its notes
    with_k = [b for b in engine.bodies if "top_k" in b]
    plain = [b for b in engine.bodies if "top_k" not in b]
    assert len(plain) == 6 and len(with_k) >= 6 + 6 + 3
    assert all("logit_bias" not in b and "repetition_penalty" not in b for b in plain)
    assert all(NOTES_HEADER in b["prompt"] for b in engine.bodies)
