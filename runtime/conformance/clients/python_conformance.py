"""The shared conformance scenario (runtime/conformance/SCENARIO.md), driven through the Python
reference client (runtime/python/lorekit_client.py).

Usage: python3 python_conformance.py HOST PORT SCENARIO_JSON LABEL
Prints one JSON line per step on stdout; the runner judges them (runtime/conformance/judge.py).
For the reconnect step it relies on the client's own reconnect (on by default since protocol client 1.1).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))
import lorekit_client as lk  # noqa: E402


def emit(step: dict) -> None:
    sys.stdout.write(json.dumps(step, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def record(event: dict) -> dict:
    """The same observations every client reports, whatever its own event shapes."""
    kind = event["type"]
    if kind == "token":
        return {"type": "token", "text": event["text"]}
    if kind == "sentence":
        return {"type": "sentence", "index": event["index"], "text": event["text"]}
    if kind == "done":
        return {"type": "done", "text": event["text"], "finish_reason": event["finish_reason"],
                "npc": event.get("npc"), "session": event.get("session"),
                "completion_tokens": (event.get("tokens") or {}).get("completion")}
    if kind == "error":
        return {"type": "error", "code": event["code"], "message": event["message"]}
    return {"type": kind}


def received(client: lk.LoreKitClient, rid) -> list:
    """The events already received for request `rid` (without waiting for more)."""
    events = []
    while True:
        try:
            events.append(record(client.next_event(rid, timeout=0)))
        except TimeoutError:
            return events


def run_turn(client: lk.LoreKitClient, npc: str, text: str, session: str, cancel_on_first_token: bool = False,
             **options) -> tuple[list, bool, int | None]:
    rid = client.start_turn(npc, text, session=session, **options)
    events, cancel_after = [], None
    try:
        for event in client.events(rid):
            events.append(record(event))
            if cancel_on_first_token and cancel_after is None and event["type"] == "token":
                cancel_after = len(events)
                client.cancel(rid)
    except TimeoutError:
        return events, True, cancel_after
    return events, False, cancel_after


def main() -> int:
    host, port, scenario_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    label = sys.argv[4] if len(sys.argv) > 4 else "python"
    scenario = json.loads(Path(scenario_path).read_text(encoding="utf-8"))
    session = f"{scenario['session_prefix']}-{label}"
    timeouts = scenario["timeouts_s"]
    client = lk.LoreKitClient(host, port, timeout=max(timeouts["step"], timeouts["reconnect"]),
                              client=f"conformance/{label}", reconnect_min=0.2, reconnect_max=1.0)

    start = time.perf_counter()
    try:
        ok = bool(client.connect(retry_for=timeouts["connect"]))
    except (ConnectionError, OSError):
        ok = False
    emit({"step": "connect", "ok": ok, "protocol": client.server_info.get("protocol"),
          "server": client.server_info.get("server"), "elapsed_ms": (time.perf_counter() - start) * 1000})
    if not ok:
        emit({"step": "end"})
        return 1

    npcs = client.list_npcs()
    emit({"step": "list_npcs", "events": [{"type": "npcs", "npcs": npcs}]})
    npc = scenario["npc"] or (npcs[0]["id"] if npcs else "missing")

    # The player types the line before saying it: no answer for the typing; the one to an unknown NPC
    # gets its error. A ping fences them: the server answers in order, so after the pong all is in.
    turn, typing = scenario["turn"], scenario["typing"]
    typed = client.typing(npc, typing["text"], session=session, state=turn["state"])
    typed_bad = client.typing(typing["bad_npc"], typing["text"], session=session)
    try:
        client.ping()
        timed_out = False
    except TimeoutError:
        timed_out = True
    emit({"step": "typing", "npc": npc, "bad_npc": typing["bad_npc"], "id": typed, "bad_id": typed_bad,
          "timed_out": timed_out, "events": received(client, typed), "bad_events": received(client, typed_bad)})

    start = time.perf_counter()
    events, timed_out, _ = run_turn(client, npc, turn["text"], session, state=turn["state"],
                                    max_tokens=turn["max_tokens"], temperature=turn["temperature"])
    emit({"step": "turn", "npc": npc, "session": session, "timed_out": timed_out, "events": events,
          "total_ms": (time.perf_counter() - start) * 1000})

    cancel = scenario["cancel"]
    events, timed_out, cancel_after = run_turn(client, npc, cancel["text"], session, cancel_on_first_token=True,
                                               max_tokens=cancel["max_tokens"], temperature=cancel["temperature"])
    emit({"step": "cancel", "npc": npc, "session": session, "timed_out": timed_out, "events": events,
          "cancel_sent_after_events": cancel_after})

    unknown = scenario["unknown_npc"]
    events, timed_out, _ = run_turn(client, unknown["npc"], unknown["text"], session)
    emit({"step": "unknown_npc", "npc": unknown["npc"], "timed_out": timed_out, "events": events})

    # Idle: the reference client has no keep-alive of its own; a tool pings, as this program does.
    idle, pongs, dropped = scenario["idle"], 0, False
    deadline = time.monotonic() + idle["seconds"]
    while time.monotonic() < deadline:
        try:
            client.ping()
            pongs += 1
        except (ConnectionError, OSError):
            dropped = True
            break
        time.sleep(idle["keepalive_s"])
    after = [] if dropped else [{"type": "npcs", "npcs": client.list_npcs()}]
    emit({"step": "idle", "seconds": idle["seconds"], "disconnected": dropped, "pongs": pongs, "events": after})

    # A long turn is in flight when the runner restarts the server: it must still end exactly once. The
    # reference client ends it itself (an `error` event: `shutting_down` from the server or `disconnected`
    # from the client) and connects again on the next call, as the Godot, Unity and Lua clients do.
    drops: list[str] = []
    client.on_disconnected = drops.append
    rid = client.start_turn(npc, cancel["text"], session=session, max_tokens=cancel["max_tokens"])
    emit({"step": "await_restart"})
    inflight = [record(event) for event in client.events(rid)]
    deadline = time.monotonic() + timeouts["reconnect"]
    while not drops and time.monotonic() < deadline:  # the server's notice can come before the drop
        try:
            client.recv(timeout=max(0.1, deadline - time.monotonic()))
        except TimeoutError:
            continue
        except (ConnectionError, OSError) as e:
            drops.append(drops[0] if drops else str(e) or type(e).__name__)
    try:
        after, reconnected = [{"type": "npcs", "npcs": client.list_npcs()}], True
    except (ConnectionError, OSError):
        after, reconnected = [], False
    emit({"step": "reconnect", "disconnected": bool(drops), "reason": drops[0] if drops else None,
          "reconnected": reconnected, "reconnects": client.reconnects, "events": after,
          "inflight_events": inflight})
    client.close()
    emit({"step": "end"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
