"""Scoring a run: each question's verdicts for both models, the summary figures, and the advice."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from lorekit.evaluate import data, general, metrics
from lorekit.evaluate.config import EvalConfig

MODELS = ("base", "tuned")


@dataclass
class Context:
    """What scoring needs besides the answers: lore names, aliases, secrets, training n-grams."""

    names: set[str]
    npc_names: dict[str, str]  # NPC id -> name
    lore: data.LoreInfo
    fact_values: dict[str, set[str]]
    ngrams: set[tuple[str, ...]]
    repeat_words: int
    report: dict

    @classmethod
    def build(cls, dataset: Path, cfg: EvalConfig) -> Context:
        report = data.read_json(dataset / "report.json")
        rows = [r for _, r in data.read_jsonl(dataset / "train.jsonl")]
        rows += [r for _, r in data.read_jsonl(dataset / "eval.jsonl")]
        answers = data.train_answers(dataset / "train.jsonl")
        npc_names = {str(n.get("id")): str(n.get("name")) for n in report.get("npcs", []) if isinstance(n, dict)}
        return cls(names=data.lore_names(rows, report), npc_names=npc_names, lore=data.lore_info(report.get("lore_dir")),
                   fact_values=data.fact_values(rows), ngrams=metrics.ngram_index(answers, cfg.repeat_words),
                   repeat_words=cfg.repeat_words, report=report)


def judge(q: data.Question, reply: str, ctx: Context) -> dict:
    """One model's reply to one question: the verdict for its kind, character problems, repetition."""
    secrets = data.secret_values(q, ctx.fact_values, ctx.lore.secrets, ctx.npc_names) if q.kind == "secret" else []
    problems = metrics.character_problems(reply, secrets, [m["content"] for m in q.messages])
    out: dict = {"answer": reply, "character": problems,
                 "repeat": metrics.longest_shared_run(reply, ctx.ngrams, ctx.repeat_words)}
    if q.kind == "unknown":
        v = metrics.ignorance_verdict(reply, q.text, ctx.names, ctx.lore.dont_know)
        echo = "echoes the prompt" in problems  # "say that you do not know" from the system text is no answer
        out.update(ok=v["honest"] and not echo, verdict="echoes the prompt" if echo else v["label"])
    elif q.kind == "secret":
        leaked = any(p.startswith("secret leaked") for p in problems)
        echo = "echoes the prompt" in problems
        out.update(ok=not leaked and not echo,
                   verdict="secret leaked" if leaked else "echoes the prompt" if echo else "secret kept")
    elif q.expect:
        v = metrics.fact_verdict(reply, q.expect, ctx.lore.aliases, ctx.names)
        out.update(ok=v["correct"], verdict=v["label"])
    else:
        out.update(ok=not problems, verdict="in character" if not problems else "; ".join(problems))
    return out


def score_question(q: data.Question, base, tuned, ctx: Context) -> dict:
    return {
        "line": q.index, "npc": q.meta.get("npc"), "kind": q.kind, "question": q.text,
        "expected": q.expected, "expect": q.expect, "facts": q.meta.get("facts") or [],
        "base": {**judge(q, base.text, ctx), "ended": getattr(base, "ended", True)},
        "tuned": {**judge(q, tuned.text, ctx), "ended": getattr(tuned, "ended", True)},
    }


def _rate(rows: list[dict], model: str, pick) -> dict:
    chosen = [r for r in rows if pick(r)]
    hits = sum(r[model]["ok"] for r in chosen)
    return {"hits": hits, "total": len(chosen), "share": metrics.share(hits, len(chosen))}


def is_fact(r: dict) -> bool:
    return r["kind"] not in ("unknown", "secret") and bool(r["expect"])


def model_summary(rows: list[dict], model: str, repeat_words: int, speed: dict) -> dict:
    in_char = sum(not r[model]["character"] for r in rows)
    repeats = [r[model]["repeat"] for r in rows]
    ended = sum(r[model].get("ended", True) for r in rows)  # stopped at the end-of-turn token
    kinds = sorted({r["kind"] for r in rows if is_fact(r)})
    return {
        "fact_recall": _rate(rows, model, is_fact),
        "recall_by_kind": {k: _rate(rows, model, lambda r, k=k: is_fact(r) and r["kind"] == k) for k in kinds},
        "honest_ignorance": _rate(rows, model, lambda r: r["kind"] == "unknown"),
        "secrets_kept": _rate(rows, model, lambda r: r["kind"] == "secret"),
        "in_character": {"hits": in_char, "total": len(rows), "share": metrics.share(in_char, len(rows)),
                         "problems": dict(Counter(p.split(":")[0] for r in rows for p in r[model]["character"]))},
        "repetition": {"verbatim": sum(n >= repeat_words for n in repeats), "total": len(rows),
                       "share": metrics.share(sum(n >= repeat_words for n in repeats), len(rows)),
                       "longest_words": max(repeats, default=0)},
        "ended_turn": {"hits": ended, "total": len(rows), "share": metrics.share(ended, len(rows))},
        "tokens_per_s": speed.get("tokens_per_s"),
    }


def summarize(rows: list[dict], ctx: Context, speeds: dict) -> dict:
    summary = {m: model_summary(rows, m, ctx.repeat_words, speeds[m]) for m in MODELS}
    # How often the dataset's own answers share such runs with training: the level that is expected.
    ref = [metrics.longest_shared_run(r["expected"], ctx.ngrams, ctx.repeat_words) for r in rows]
    summary["repetition_reference"] = metrics.share(sum(n >= ctx.repeat_words for n in ref), len(rows))
    summary["repeat_words"] = ctx.repeat_words
    return summary


def count_kinds(questions: list[data.Question]) -> dict[str, int]:
    return dict(sorted(Counter(q.kind for q in questions).items()))


def missed_facts(rows: list[dict]) -> list[str]:
    """Facts none of whose asked phrasings the tuned model got right."""
    seen: dict[str, bool] = {}
    for r in rows:
        if is_fact(r):
            for f in r["facts"] or [r["question"]]:
                seen[str(f)] = seen.get(str(f), False) or r["tuned"]["ok"]
    return sorted(f for f, ok in seen.items() if not ok)


def verdict(summary: dict, rows: list[dict]) -> dict:
    """A one-word status and concrete advice, from the figures (thresholds in docs/eval.md)."""
    t, b = summary["tuned"], summary["base"]
    recall = t["fact_recall"]["share"]
    advice: list[str] = []
    status = "good"
    missed = missed_facts(rows)
    if recall is None:
        status = "no fact questions"
    elif recall < 0.5:
        status = "under-trained"
        advice.append(f"Tuned fact recall is {recall:.0%}: train more epochs (raise [train] epochs) "
                      "or raise the learning rate.")
    elif recall < 0.8:
        status = "partly learned"
        advice.append(f"Tuned fact recall is {recall:.0%}: a few more epochs, or more phrasings for the missed facts.")
    if missed and recall is not None:
        shown = ", ".join(missed[:8]) + (f" and {len(missed) - 8} more" if len(missed) > 8 else "")
        advice.append(f"More phrasings (or aliases) for these facts, missed in every phrasing asked: {shown}.")
    rep, ref = t["repetition"]["share"], summary.get("repetition_reference") or 0.0
    forgot = general.forgetting(summary.get("general"))
    over = []
    if rep is not None and rep > max(0.3, ref + 0.15):
        over.append(f"{rep:.0%} of tuned replies repeat {summary['repeat_words']}+ words of training answers "
                    f"(the dataset's own answers: {ref:.0%})")
    if forgot:
        over.append(forgot)
    if over:
        status = "over-trained" if status == "good" else status + ", over-trained"
        advice.append("Signs of over-training: " + "; ".join(over) + ". Train fewer epochs (or lower the "
                      "learning rate) and add phrasings rather than repeats.")
    hon = t["honest_ignorance"]["share"]
    if hon is not None and hon < 0.7:
        advice.append(f"Honest 'I don't know' on {hon:.0%} of unknown names: add more out-of-lore questions.")
    if t["secrets_kept"]["total"] and t["secrets_kept"]["share"] < 1:
        advice.append("A secret leaked: add refusal lines (npc.refuse) and check the secret's `known_by`.")
    ended = (t.get("ended_turn") or {}).get("share")
    if ended is not None and ended < 0.8:
        status += ", does not end its turn"
        advice.append(f"Only {ended:.0%} of tuned replies ended with the end-of-turn token within [eval] max_tokens: "
                      "in a game they run on to the token limit. Train more steps, or check that the "
                      "end-of-turn token is in the labels.")
    if t["in_character"]["problems"].get("template markup"):
        advice.append("Template markup leaked into replies: the runtime must stop at the family's end-of-turn token.")
    if not advice:
        advice.append("Nothing to change: facts recalled, no sign of over-training.")
    base_recall = b["fact_recall"]["share"]
    headline = (f"fact recall {_pct(base_recall)} -> {_pct(recall)} (base -> tuned)" if recall is not None
                else "no fact questions asked")
    return {"status": status, "headline": headline, "advice": advice, "missed_facts": missed}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"
