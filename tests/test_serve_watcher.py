"""The lore watcher's timing rule: reload as soon as a save settles; report a failure only after the
debounce, and only if the lore stayed broken (an editor may still be writing)."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lorekit.serve.personas import Lore
from lorekit.serve.watcher import Eager, lore_relevant
from tests.conftest import SAMPLE_LORE


class Recorder:
    """A stand-in reload: returns the next planned result and records (final, seconds since start)."""

    def __init__(self, results: list[bool]):
        self.results, self.calls, self.t0, self.done = list(results), [], time.monotonic(), threading.Event()

    def __call__(self, final: bool) -> bool:
        self.calls.append((final, time.monotonic() - self.t0))
        ok = self.results.pop(0) if self.results else True
        if ok or final:
            self.done.set()
        return ok


def test_a_good_save_reloads_at_once_without_waiting_for_the_debounce():
    rec = Recorder([True])
    eager = Eager(delay=5.0, fn=rec, settle=0.01)
    eager.trigger()
    assert rec.done.wait(2.0), "the reload waited for the 5 s debounce"
    time.sleep(0.2)
    eager.cancel()
    assert [final for final, _ in rec.calls] == [False]


def test_a_broken_save_is_retried_after_the_debounce_and_reported_then():
    rec = Recorder([False, False])
    eager = Eager(delay=0.4, fn=rec, settle=0.01)
    eager.trigger()
    assert rec.done.wait(5.0)
    eager.cancel()
    (first, t_first), (final, t_final) = rec.calls
    assert (first, final) == (False, True)
    assert t_final - t_first >= 0.3  # the final try waited for quiet


def test_an_editor_that_finishes_writing_gets_one_quiet_reload():
    # the first try sees a half-written page (fails); the editor's next event restarts the cycle, and
    # that try succeeds: no final (error-reporting) call ever happens
    rec = Recorder([False, True])
    eager = Eager(delay=1.0, fn=rec, settle=0.01)
    eager.trigger()
    deadline = time.monotonic() + 2.0
    while not rec.calls and time.monotonic() < deadline:
        time.sleep(0.005)
    eager.trigger()
    assert rec.done.wait(2.0)
    time.sleep(1.3)  # past the debounce of the first cycle
    eager.cancel()
    assert [final for final, _ in rec.calls] == [False, False]


def test_a_burst_of_events_is_one_reload():
    rec = Recorder([True])
    eager = Eager(delay=1.0, fn=rec, settle=0.1)
    for _ in range(5):
        eager.trigger()
        time.sleep(0.01)
    assert rec.done.wait(2.0)
    time.sleep(0.3)
    eager.cancel()
    assert len(rec.calls) == 1


def test_only_lore_files_count(tmp_path):
    root = tmp_path.resolve()
    assert lore_relevant(str(root / "characters" / "Tobin.md"), root)
    assert lore_relevant(str(root / "lorekit.toml"), root)
    assert not lore_relevant(str(root / ".obsidian" / "workspace.json"), root)
    assert not lore_relevant(str(root / "_drafts" / "x.md"), root)
    assert not lore_relevant(str(root / "characters" / ".Tobin.md.swp"), root)
    assert not lore_relevant(str(tmp_path.parent / "elsewhere.md"), root)


@pytest.fixture
def sample(tmp_path):
    """A copy of the sample world, loaded once as the server's `Lore`."""
    root = tmp_path / "lore"
    shutil.copytree(SAMPLE_LORE, root)
    lore = Lore(root)
    assert lore.load().ok
    return root, lore


def test_a_reload_parses_only_the_edited_page(sample):
    root, lore = sample
    before = {page.path: page for page in lore.current.vault.pages}
    page = next(root.rglob("Tobin Reedy.md"))
    page.write_text(page.read_text(encoding="utf-8").replace("  voice: ", "  voice: Says aye a lot. ", 1),
                    encoding="utf-8")
    result = lore.load()
    assert result.ok and result.changed == ["tobin-reedy"]
    assert "Says aye a lot." in lore.current.prompts["tobin-reedy"]
    after = {page.path: page for page in lore.current.vault.pages}
    reparsed = {path for path in after if after[path] is not before[path]}
    assert reparsed == {page.relative_to(root).as_posix()}
    assert len(lore._parsed) == len(after)  # the old parse of the edited page is not kept


def test_reloads_that_overlap_run_one_after_the_other(sample):
    # a save during a slow reload (a big vault) starts a second one; they must not interleave
    _, lore = sample
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: lore.load(), range(8)))
    assert all(r.ok for r in results)
    assert lore.current.generation == 9  # 1 + 8 loads, each after the one before
