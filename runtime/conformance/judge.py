"""Judge one client's conformance observations (the JSON lines its program printed).

Every client is held to the same rules, written once here (see SCENARIO.md). `judge(lines, ...)`
returns {step: {"ok": bool, "detail": str}} for the steps of the scenario, in order.
"""

from __future__ import annotations

import re

STEPS = ["connect", "list_npcs", "typing", "turn", "cancel", "unknown_npc", "idle", "reconnect", "end"]


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def _check(problems: list) -> dict:
    return {"ok": not problems, "detail": "; ".join(problems) if problems else "ok"}


def _npcs_problems(events: list, expected: list) -> list:
    if len(events) != 1 or events[0].get("type") != "npcs":
        return [f"expected one npcs event, got {[e.get('type') for e in events]}"]
    got = [{"id": n.get("id"), "name": n.get("name"), "greeting": n.get("greeting"), "farewell": n.get("farewell")}
           for n in events[0]["npcs"]]
    if got != expected:
        return [f"NPC list differs from the server's /v1/models: {got!r} != {expected!r}"]
    return []


def _stream_problems(step: dict) -> tuple[list, dict | None]:
    """Problems common to every turn: a final event, last, and nothing after it."""
    events = step.get("events") or []
    if step.get("timed_out"):
        return [f"timed out after {len(events)} events"], None
    finals = [i for i, e in enumerate(events) if e.get("type") in ("done", "error")]
    if len(finals) != 1:
        return [f"expected exactly one final event, got {len(finals)}"], None
    if finals[0] != len(events) - 1:
        return ["events arrived after the final event"], None
    return [], events[-1]


def judge_turn(step: dict, max_tokens: int) -> dict:
    problems, final = _stream_problems(step)
    if final is None:
        return _check(problems)
    events = step["events"]
    if final.get("type") != "done":
        return _check([f"turn ended with error {final.get('code')}: {final.get('message')}"])
    tokens = [e["text"] for e in events if e["type"] == "token"]
    sentences = [e for e in events if e["type"] == "sentence"]
    if not tokens:
        problems.append("no token events")
    if not sentences:
        problems.append("no sentence events")
    if [s.get("index") for s in sentences] != list(range(len(sentences))):
        problems.append(f"sentence indexes {[s.get('index') for s in sentences]} are not 0..n-1")
    bad = sorted({hex(ord(c)) for t in [*tokens, final.get("text", "")] for c in t if ord(c) < 32 and c not in "\n\t\r"})
    if bad:
        problems.append(f"control characters {', '.join(bad)} in the reply text (a detokenizer bug?)")
    if "".join(tokens).strip() != final.get("text"):
        problems.append(f"tokens joined {''.join(tokens).strip()!r} != done.text {final.get('text')!r}")
    if _norm(" ".join(s["text"] for s in sentences)) != _norm(final.get("text", "")):
        problems.append("sentences joined differ from done.text")
    if final.get("finish_reason") not in ("stop", "length"):
        problems.append(f"finish_reason {final.get('finish_reason')!r}")
    if final.get("npc") != step.get("npc") or final.get("session") != step.get("session"):
        problems.append(f"done echoes npc/session {final.get('npc')!r}/{final.get('session')!r}, "
                        f"sent {step.get('npc')!r}/{step.get('session')!r}")
    if final.get("completion_tokens") is not None and final["completion_tokens"] > max_tokens:
        problems.append(f"{final['completion_tokens']} completion tokens > max_tokens {max_tokens}")
    return _check(problems)


def judge_cancel(step: dict, max_tokens: int) -> dict:
    problems, final = _stream_problems(step)
    if final is None:
        return _check(problems)
    if step.get("cancel_sent_after_events") is None:
        problems.append("no token arrived, so no cancel was sent")
    if final.get("type") != "done" or final.get("finish_reason") != "cancelled":
        problems.append(f"final event {final.get('type')} finish_reason={final.get('finish_reason')!r}, "
                        "expected done with 'cancelled'")
    elif (final.get("completion_tokens") or 0) >= max_tokens:
        problems.append("the turn ran to max_tokens: the cancel did not stop it")
    return _check(problems)


def judge_unknown(step: dict) -> dict:
    problems, final = _stream_problems(step)
    if final is None:
        return _check(problems)
    if len(step["events"]) != 1:
        problems.append(f"expected only the error event, got {[e['type'] for e in step['events']]}")
    if final.get("type") != "error" or final.get("code") != "unknown_npc":
        problems.append(f"expected error unknown_npc, got {final.get('type')} {final.get('code')!r}")
    elif step.get("npc", "") not in (final.get("message") or ""):
        problems.append("the error message does not name the NPC")
    return _check(problems)


def judge_typing(step: dict) -> dict:
    """A `typing` gets no answer; one to an unknown NPC gets exactly one error, under its own id. The
    program fences both with a ping: the server answers in order, so after the pong all is in."""
    if step.get("timed_out"):
        return _check(["no pong for the ping sent after the typing requests"])
    problems = []
    ids = [step.get("id"), step.get("bad_id")]
    if None in ids or "" in ids or ids[0] == ids[1]:
        problems.append(f"typing() must return a new request id each time, got {ids!r}")
    answered = step.get("events") or []
    if answered:
        problems.append("the typing got an answer, expected none: "
                        + ", ".join(f"{e.get('type')} {e.get('code') or ''} {e.get('message') or ''}".strip()
                                    for e in answered))
    bad = step.get("bad_events") or []
    if [(e.get("type"), e.get("code")) for e in bad] != [("error", "unknown_npc")]:
        problems.append(f"the typing to {step.get('bad_npc')!r} should get one error unknown_npc under its id "
                        f"(was it sent?), got {[(e.get('type'), e.get('code')) for e in bad]}")
    elif step.get("bad_npc", "") not in (bad[0].get("message") or ""):
        problems.append("the typing's error message does not name the NPC")
    return _check(problems)


def _inflight_problems(events: list) -> list:
    """The turn in flight during the restart ends exactly once: done, or an error for the drop."""
    finals = [e for e in events if e.get("type") in ("done", "error")]
    if len(finals) != 1:
        return [f"the turn in flight during the restart got {len(finals)} final events, expected 1"]
    if events[-1] is not finals[0]:
        return ["events arrived after the in-flight turn's final event"]
    if finals[0]["type"] == "error" and finals[0].get("code") not in ("shutting_down", "disconnected"):
        return [f"the turn in flight ended with error {finals[0].get('code')!r}"]
    return []


def judge(lines: list, expected_npcs: list, scenario: dict, exit_code: int | None) -> dict:
    steps = {line.get("step"): line for line in lines if isinstance(line, dict)}
    result: dict = {}
    for name in STEPS:
        step = steps.get(name)
        if step is None:
            result[name] = {"ok": False, "detail": "step not reported"}
        elif name == "connect":
            result[name] = _check([] if step.get("ok") and step.get("protocol") == 1 else
                                  [f"connected={step.get('ok')} protocol={step.get('protocol')!r}"])
        elif name == "list_npcs":
            result[name] = _check(_npcs_problems(step.get("events") or [], expected_npcs))
        elif name == "typing":
            result[name] = judge_typing(step)
        elif name == "turn":
            result[name] = judge_turn(step, scenario["turn"]["max_tokens"])
        elif name == "cancel":
            result[name] = judge_cancel(step, scenario["cancel"]["max_tokens"])
        elif name == "unknown_npc":
            result[name] = judge_unknown(step)
        elif name == "idle":
            problems = ["the server dropped the idle connection (no keep-alive?)"] if step.get("disconnected") else []
            if not step.get("pongs"):
                problems.append("no ping/pong while idle")
            problems += _npcs_problems(step.get("events") or [], expected_npcs)
            result[name] = _check(problems)
        elif name == "reconnect":
            problems = [] if step.get("disconnected") else ["never saw the connection drop"]
            if not step.get("reconnected"):
                problems.append("did not reconnect")
            else:
                problems += _npcs_problems(step.get("events") or [], expected_npcs)
            problems += _inflight_problems(step.get("inflight_events") or [])
            result[name] = _check(problems)
        else:  # end
            result[name] = _check([] if exit_code == 0 else [f"program exited with {exit_code}"])
    return result
