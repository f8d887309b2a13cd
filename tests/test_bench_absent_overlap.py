"""bench/absent_overlap.py: the word check it measures fires on absent-fact questions, and on some real ones."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def load():
    return load_script(ROOT / "bench" / "absent_overlap.py", "absent_overlap")


def test_the_table_counts_both_kinds_of_question_and_the_check_sees_a_missing_word(tmp_path):
    ao = load()
    out = tmp_path / "absent_overlap.md"
    assert ao.main([str(ROOT / "sample_lore"), "--results", str(out)]) == 0
    counts = {}
    for line in out.read_text().splitlines():
        m = re.match(r"\| (held-out fact|absent-fact) questions.*?\| (\d+) \| (\d+) \(\d+%\) \| (\d+) \(\d+%\) \| (\d+) \|", line)
        if m:
            counts[m[1]] = [int(x) for x in m.groups()[1:]]
    asked, hit, miss, empty = counts["absent-fact"]
    assert asked == hit + miss + empty and miss > asked / 2  # bridges, wells, first words: nowhere in the notes
    asked, hit, miss, empty = counts["held-out fact"]
    assert asked == hit + miss + empty and hit > miss
