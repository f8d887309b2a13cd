"""A folder write killed mid-way (SIGTERM: no `except` runs) leaves its staging folder; the next write of
the same target removes it, and never one of a process still running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lorekit import atomic

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")

WRITER = """
import sys, time
from pathlib import Path
from lorekit import atomic
with atomic.replace_dir(Path(sys.argv[1])) as tmp:
    (tmp / "model.gguf").write_bytes(b"x" * 1000)
    print("writing", flush=True)
    time.sleep(60)
"""


def start_writer(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def test_a_killed_writes_staging_is_swept_by_the_next_and_a_live_ones_is_kept(tmp_path):
    target = tmp_path / "export"
    with atomic.replace_dir(target) as tmp:
        (tmp / "model.gguf").write_text("good")
    killed = start_writer(target)
    killed.send_signal(signal.SIGTERM)
    killed.wait(timeout=30)
    left = sorted(tmp_path.glob(".export.*.new"))
    assert len(left) == 1 and (left[0] / "model.gguf").exists(), "SIGTERM runs no cleanup"
    live = start_writer(target)
    try:
        with atomic.replace_dir(target) as tmp:
            (tmp / "model.gguf").write_text("newer")
        kept = sorted(tmp_path.glob(".export.*.new"))
        assert left[0] not in kept and len(kept) == 1, "the dead writer's folder went, the live one's stayed"
        assert str(live.pid) in kept[0].name
    finally:
        live.kill()
        live.wait(timeout=30)
    assert (target / "model.gguf").read_text() == "newer"
    time.sleep(0.1)
    assert atomic.sweep(target) == kept  # now its writer is gone too


def test_folders_without_a_process_in_their_name_are_left_alone(tmp_path):
    odd = tmp_path / ".export.abc123.new"
    odd.mkdir()
    assert atomic.sweep(tmp_path / "export") == [] and odd.is_dir()
