"""The conformance judge (runtime/conformance/judge.py) fails what it must: each rule is broken once
on an otherwise passing set of observations. Pure data, no server."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from tests.conftest import load_script

CONF = Path(__file__).resolve().parent.parent / "runtime" / "conformance"
judge_mod = load_script(CONF / "judge.py", "lorekit_conformance_judge")

SCENARIO = json.loads((CONF / "scenario.json").read_text(encoding="utf-8"))
NPCS = [{"id": "mara-vell", "name": "Mara Vell", "greeting": "State your business.",
         "farewell": "Mind the kiln on your way out."}]


def good_lines() -> list:
    npcs = [{"type": "npcs", "npcs": copy.deepcopy(NPCS)}]
    done = {"type": "done", "text": "Mara Vell does. Why ask?", "finish_reason": "stop", "npc": "mara-vell",
            "session": "conformance-x", "completion_tokens": 6}
    return [
        {"step": "connect", "ok": True, "protocol": 1},
        {"step": "list_npcs", "events": npcs},
        {"step": "typing", "npc": "mara-vell", "bad_npc": "no-such-npc-conformance", "id": "r3", "bad_id": "r4",
         "timed_out": False, "events": [], "bad_events": [
            {"type": "error", "code": "unknown_npc", "message": "no NPC 'no-such-npc-conformance' (known: mara-vell)"}]},
        {"step": "turn", "npc": "mara-vell", "session": "conformance-x", "timed_out": False, "events": [
            {"type": "token", "text": "Mara"}, {"type": "token", "text": " Vell does."},
            {"type": "sentence", "index": 0, "text": "Mara Vell does."},
            {"type": "token", "text": " Why ask?"}, {"type": "sentence", "index": 1, "text": "Why ask?"}, done]},
        {"step": "cancel", "timed_out": False, "cancel_sent_after_events": 1, "events": [
            {"type": "token", "text": "Tell"},
            {"type": "done", "text": "Tell", "finish_reason": "cancelled", "completion_tokens": 1}]},
        {"step": "unknown_npc", "npc": "no-such-npc-conformance", "timed_out": False, "events": [
            {"type": "error", "code": "unknown_npc", "message": "no NPC 'no-such-npc-conformance' (known: mara-vell)"}]},
        {"step": "idle", "seconds": 4, "disconnected": False, "pongs": 3, "events": copy.deepcopy(npcs)},
        {"step": "await_restart"},
        {"step": "reconnect", "disconnected": True, "reconnected": True, "events": copy.deepcopy(npcs),
         "inflight_events": [{"type": "token", "text": "Long"},
                             {"type": "error", "code": "shutting_down", "message": "the server is stopping"}]},
        {"step": "end"},
    ]


def run(lines, exit_code=0) -> dict:
    return judge_mod.judge(lines, NPCS, SCENARIO, exit_code)


def step(lines, name) -> dict:
    return next(line for line in lines if line["step"] == name)


def test_good_observations_pass():
    result = run(good_lines())
    assert list(result) == judge_mod.STEPS
    assert all(r["ok"] for r in result.values()), result


def _break_turn_sentence_index(lines):
    step(lines, "turn")["events"][4]["index"] = 3


def _break_turn_missing_done(lines):
    step(lines, "turn")["events"].pop()


def _break_turn_event_after_done(lines):
    step(lines, "turn")["events"].append({"type": "token", "text": "late"})


def _break_turn_tokens_vs_done(lines):
    step(lines, "turn")["events"][0]["text"] = "Mira"


def _break_turn_nul(lines):
    ev = step(lines, "turn")["events"]
    ev[0]["text"] = "Mara\x00"
    ev[-1]["text"] = "Mara\x00 Vell does. Why ask?"


def _break_turn_session_echo(lines):
    step(lines, "turn")["events"][-1]["session"] = "conformance-y"


def _break_typing_not_sent(lines):
    # What a client that omits the request shows: an id, but no error for the bad typing.
    step(lines, "typing")["bad_events"] = []


def _break_typing_answered(lines):
    step(lines, "typing")["events"] = [{"type": "error", "code": "unknown_type", "message": "unknown request type"}]


def _break_typing_wrong_code(lines):
    step(lines, "typing")["bad_events"][0]["code"] = "bad_request"


def _break_typing_error_twice(lines):
    bad = step(lines, "typing")["bad_events"]
    bad.append(dict(bad[0]))


def _break_typing_no_id(lines):
    step(lines, "typing")["id"] = None


def _break_typing_same_id(lines):
    step(lines, "typing")["bad_id"] = "r3"


def _break_typing_no_pong(lines):
    step(lines, "typing")["timed_out"] = True


def _break_cancel_not_cancelled(lines):
    step(lines, "cancel")["events"][-1]["finish_reason"] = "stop"


def _break_unknown_wrong_code(lines):
    step(lines, "unknown_npc")["events"][0]["code"] = "bad_request"


def _break_npcs_greeting(lines):
    step(lines, "list_npcs")["events"][0]["npcs"][0]["greeting"] = "State your business"


def _break_npcs_no_farewell(lines):
    del step(lines, "list_npcs")["events"][0]["npcs"][0]["farewell"]


def _break_no_reconnect(lines):
    step(lines, "reconnect")["reconnected"] = False


def _break_inflight_twice(lines):
    step(lines, "reconnect")["inflight_events"].append({"type": "error", "code": "disconnected", "message": "x"})


def _break_inflight_never_ends(lines):
    step(lines, "reconnect")["inflight_events"].pop()


def _break_idle_dropped(lines):
    step(lines, "idle")["disconnected"] = True


def _break_idle_no_pong(lines):
    step(lines, "idle")["pongs"] = 0


def _break_protocol(lines):
    step(lines, "connect")["protocol"] = 2


BREAKS = {
    "typing": [_break_typing_not_sent, _break_typing_answered, _break_typing_wrong_code, _break_typing_error_twice,
               _break_typing_no_id, _break_typing_same_id, _break_typing_no_pong],
    "turn": [_break_turn_sentence_index, _break_turn_missing_done, _break_turn_event_after_done,
             _break_turn_tokens_vs_done, _break_turn_nul, _break_turn_session_echo],
    "cancel": [_break_cancel_not_cancelled],
    "unknown_npc": [_break_unknown_wrong_code],
    "list_npcs": [_break_npcs_greeting, _break_npcs_no_farewell],
    "reconnect": [_break_no_reconnect, _break_inflight_twice, _break_inflight_never_ends],
    "connect": [_break_protocol],
    "idle": [_break_idle_dropped, _break_idle_no_pong],
}


@pytest.mark.parametrize("name,breaker", [(n, b) for n, bs in BREAKS.items() for b in bs],
                         ids=[b.__name__[7:] for bs in BREAKS.values() for b in bs])
def test_each_broken_rule_fails_only_its_step(name, breaker):
    lines = good_lines()
    breaker(lines)
    result = run(lines)
    assert not result[name]["ok"]
    assert [s for s, r in result.items() if not r["ok"]] == [name]


def test_missing_steps_and_bad_exit_fail():
    lines = [line for line in good_lines() if line["step"] not in ("reconnect", "end")]
    result = run(lines, exit_code=1)
    assert not result["reconnect"]["ok"] and not result["end"]["ok"]
    assert result["reconnect"]["detail"] == "step not reported"
