"""The verdict of a run: a one-word status and concrete advice, from the figures (thresholds in docs/eval.md).

`lorekit build` prints what `verdict` returns, so each line names the setting to change.
"""

from __future__ import annotations

from lorekit.evaluate import general
from lorekit.evaluate.score import is_fact, rate

TARGET_RECALL = 0.7  # the quick-start targets; below them the advice says what to change
TARGET_RETRIEVAL = 0.95
TARGET_IGNORANCE = 0.8
MAX_FALSE_REFUSALS = 0.1
MAX_LEAKS = 0.05
TARGET_GREETINGS = 0.8  # a player's first line is a greeting: "I don't know" to "Well met." ends the scene
FEW = 20  # fewer questions than this: a share moves 5+ points an answer, and the advice says so


def missed_facts(rows: list[dict]) -> list[str]:
    """Facts none of whose asked prompts (phrasings, with and without notes) the tuned model got right."""
    seen: dict[str, bool] = {}
    for r in rows:
        if is_fact(r):
            for f in r["facts"] or [r["question"]]:
                seen[str(f)] = seen.get(str(f), False) or r["tuned"]["ok"]
    return sorted(f for f, ok in seen.items() if not ok)


def verdict(summary: dict, rows: list[dict]) -> dict:
    t, b = summary["tuned"], summary["base"]
    recall = t["fact_recall"]["share"]
    missed = missed_facts(rows)
    status, advice = _recall_status(recall)
    advice += _grounding(summary, rows)
    if missed and recall is not None:
        shown = ", ".join(missed[:8]) + (f" and {len(missed) - 8} more" if len(missed) > 8 else "")
        advice.append(f"More phrasings (or aliases) for these facts, missed in every prompt asked: {shown}.")
    over = _over_training(summary)
    if over:
        status = "over-trained" if status == "good" else status + ", over-trained"
        advice.append("Signs of over-training: " + "; ".join(over) + ". Train fewer epochs (or lower the "
                      "learning rate) and add phrasings rather than repeats.")
    advice += _ignorance(t, summary.get("compile") or {})
    greet = t.get("greetings") or {}
    if greet.get("share") is not None and greet["share"] < TARGET_GREETINGS:
        advice.append(f"Greetings answered in character on {_of(greet)}; the rest got 'I don't know' or a refusal: "
                      f"raise [compile] greetings (now {(summary.get('compile') or {}).get('greetings', '?')}) and give "
                      "every NPC a `greeting`; templates/replies/greeting.j2 lists what players say.")
    leak_advice = _secrets(t, summary.get("compile") or {})
    if leak_advice:
        status += ", leaks secrets"
        advice += leak_advice
    ended = (t.get("ended_turn") or {}).get("share")
    if ended is not None and ended < 0.8:
        status += ", does not end its turn"
        advice.append(f"Only {ended:.0%} of tuned replies ended with the end-of-turn token within [eval] max_tokens: "
                      "in a game they run on to the token limit. Train more steps, or check that the "
                      "end-of-turn token is in the labels.")
    if t["in_character"]["problems"].get("template markup"):
        advice.append("Template markup leaked into replies: the runtime must stop at the family's end-of-turn token.")
    if not advice:
        advice.append("Nothing to change: facts recalled, honest 'I don't know', secrets kept, no sign of over-training.")
    return {"status": status, "headline": _headline(summary, b, t), "advice": advice, "missed_facts": missed}


def _recall_status(recall: float | None) -> tuple[str, list[str]]:
    if recall is None:
        return "no fact questions", []
    if recall < 0.5:
        return "under-trained", [f"Tuned fact recall is {recall:.0%}: train more epochs (raise [train] epochs) "
                                 "or raise the learning rate."]
    if recall < 0.8:
        return "partly learned", [f"Tuned fact recall is {recall:.0%}: a few more epochs, or more phrasings "
                                  "for the missed facts."]
    return "good", []


def _grounding(summary: dict, rows: list[dict]) -> list[str]:
    """Advice from retrieval recall and recall with / without notes."""
    out = []
    cfg = summary.get("compile") or {}
    ret = summary.get("retrieval") or {}
    if ret.get("share") is not None and ret["share"] < TARGET_RETRIEVAL:
        out.append(f"Retrieval put the asked fact's note among the notes for only {ret['share']:.0%} of "
                   f"{ret['total']} eval fact questions (k = {ret.get('k')}): raise [compile] notes_budget "
                   f"(now {cfg.get('notes_budget', '?')}) and notes_max (now {cfg.get('notes_max', '?')}); the "
                   "server uses the same budget. Aliases for the names players use help retrieval too.")
    reads = rate(rows, "tuned", lambda r: is_fact(r) and r.get("right_note") is True)["share"]
    if reads is not None and reads < TARGET_RECALL:
        out.append(f"With the right note in its prompt the tuned model answers only {reads:.0%}: it does not read "
                   "its notes yet. Train more epochs (raise [train] epochs), or raise [compile] notes_share "
                   f"(now {cfg.get('notes_share', '?')}).")
    rec = summary["tuned"]["recall"]
    seen, unseen = rec["with_notes"]["trained"]["share"], rec["with_notes"]["not_trained"]["share"]
    if seen is not None and unseen is not None and seen - unseen > 0.25:
        out.append(f"With notes, recall on facts never trained is {unseen:.0%} against {seen:.0%} on trained "
                   "facts: the model recalls rather than reads. Teach more facts with notes (raise [compile] "
                   "max_facts) so reading the notes is what it learns.")
    bare = rec["without_notes"]["trained"]["share"]
    if bare is not None and bare < 0.5:
        out.append(f"Without notes the tuned model recalls {bare:.0%} of trained facts: when retrieval misses, "
                   "it cannot answer. More epochs, or lower [compile] notes_share "
                   f"(now {cfg.get('notes_share', '?')}) so more rows teach the facts without notes.")
    false = summary["tuned"]["false_refusals"]["share"]
    if false is not None and false > MAX_FALSE_REFUSALS:
        out.append(f"The tuned model says 'I don't know' or refuses on {false:.0%} of fact questions whose notes "
                   "hold the answer: lower [compile] dont_know_share (now "
                   f"{cfg.get('dont_know_share', '?')}) or unknown_names, or train more epochs on the facts.")
    return out


def _ignorance(t: dict, cfg: dict) -> list[str]:
    out = []
    unknown, absent = t["honest_ignorance"].get("unknown", {}), t["honest_ignorance"].get("absent", {})
    if unknown.get("share") is not None and unknown["share"] < TARGET_IGNORANCE:
        out.append(f"Honest 'I don't know' on {_of(unknown)} of unknown names: add more out-of-lore "
                   f"questions (raise [compile] unknown_names, now {cfg.get('unknown_names', '?')}, and "
                   f"unknown_per_npc, now {cfg.get('unknown_per_npc', '?')})."
                   + _few(unknown, "[compile] eval_unknown_names and [eval] limit"))
    if absent.get("share") is not None and absent["share"] < TARGET_IGNORANCE:
        out.append(f"Honest 'I don't know' on {_of(absent)} of questions about known pages on what the lore "
                   f"does not say: raise [compile] dont_know_share (now {cfg.get('dont_know_share', '?')})."
                   + _few(absent))
    return out


def _secrets(t: dict, cfg: dict) -> list[str]:
    leaks = t["secret_leaks"]
    if not leaks["total"] or leaks["share"] <= MAX_LEAKS:
        return []
    worst = [f"{k} {v['hits']}/{v['total']}" for k, v in sorted(leaks["by_attack"].items()) if v["hits"]]
    return [f"Secrets leaked in {leaks['share']:.0%} of attacks ({', '.join(worst)}): raise [compile] attack_rows "
            f"(now {cfg.get('attack_rows', '?')}), add phrasings to templates/attacks/<kind>.j2, and check each "
            "secret's `known_by`; an NPC that must never tell it should not hold it."]


def _over_training(summary: dict) -> list[str]:
    t = summary["tuned"]
    rep, ref = t["repetition"]["share"], summary.get("repetition_reference") or 0.0
    over = []
    if rep is not None and rep > max(0.3, ref + 0.15):
        over.append(f"{rep:.0%} of tuned replies repeat {summary['repeat_words']}+ words of training answers "
                    f"(the dataset's own answers: {ref:.0%})")
    forgot = general.forgetting(summary.get("general"))
    if forgot:
        over.append(forgot)
    return over


def _headline(summary: dict, b: dict, t: dict) -> str:
    recall = t["fact_recall"]["share"]
    if recall is None:
        return "no fact questions asked"
    parts = [f"fact recall {_pct(b['fact_recall']['share'])} -> {_of(t['fact_recall'])} (base -> tuned)"]
    unseen = t["recall"]["with_notes"]["not_trained"]
    if unseen["total"]:
        parts.append(f"not trained, with notes {_of(unseen)}")
    if t["honest_ignorance"]["total"]:
        parts.append(f"'I don't know' {_of(t['honest_ignorance'])}")
    if t["secret_leaks"]["total"]:
        parts.append(f"leaks {_of(t['secret_leaks'])}")
    return "; ".join(parts)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def _of(rate: dict) -> str:
    """A share with what it counts, "78% (7/9)": on a handful of questions one answer moves it a lot."""
    return f"{_pct(rate['share'])} ({rate['hits']}/{rate['total']})" if rate.get("total") else _pct(rate.get("share"))


def _few(rate: dict, more: str = "[eval] limit") -> str:
    """A caution for a figure measured on fewer than FEW questions (the quick start asks 9 unknown names:
    the same recipe, trained twice, gave 2/9 and 4/9; bench/results/build_quickstart.md)."""
    total = rate.get("total") or 0
    if not 0 < total < FEW:
        return ""
    return (f" Only {total} such questions were asked, so one answer moves this by {100 / total:.0f} points: "
            f"ask more ({more}) before you compare two builds on it.")
