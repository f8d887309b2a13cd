"""Replies that run to max_tokens instead of ending their turn are counted and flagged."""

from __future__ import annotations

from lorekit.evaluate.advice import verdict
from lorekit.evaluate.score import model_summary


def _row(kind: str, ok: bool, ended: bool) -> dict:
    answer = {"ok": ok, "character": [], "repeat": 0, "ended": ended, "verdict": ""}
    return {"kind": kind, "expect": ["Mara Vell"], "facts": ["f"], "base": dict(answer), "tuned": dict(answer)}


def _summary(rows):
    s = {m: model_summary(rows, m, 10, {}) for m in ("base", "tuned")}
    s.update(repetition_reference=0.0, repeat_words=10, general=None)
    return s


def test_runaway_replies_are_counted_and_advised():
    rows = [_row("field", True, ended=False)] * 3 + [_row("field", True, ended=True)]
    summary = _summary(rows)
    assert summary["tuned"]["ended_turn"] == {"hits": 1, "total": 4, "share": 0.25}
    v = verdict(summary, rows)
    assert "does not end its turn" in v["status"]
    assert any("end-of-turn token" in a for a in v["advice"])


def test_replies_that_end_their_turn_raise_nothing():
    rows = [_row("field", True, ended=True)] * 4
    v = verdict(_summary(rows), rows)
    assert v["status"] == "good"
    assert not any("end-of-turn token" in a for a in v["advice"])
