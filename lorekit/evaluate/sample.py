"""Which eval.jsonl rows are asked, and in which prompts.

`pick` takes at most `limit` rows, round-robin over strata so that every figure gets questions:
facts trained, facts not trained (`meta.trained: false`), unknown names, absent facts, secrets (in
turn over attack kinds), and the rest (greetings, multi-turn). Seeded: a rerun asks the same rows.

`prompts` turns the rows into what the models are asked: every row as written (with the notes
retrieval gave it), and a fact row with notes once more without them (`data.bare`), so recall with
and without notes compares the same questions. Sorted by NPC, so a runtime reuses its prompt cache.
"""

from __future__ import annotations

import random
from collections import defaultdict

from lorekit.evaluate.data import IGNORANCE_KINDS, Question, bare

STRATA = ("fact: trained", "fact: not trained", "unknown", "absent", "secret", "other")


def stratum(q: Question) -> str:
    if q.is_fact:
        return "fact: trained" if q.trained else "fact: not trained"
    if q.kind in (*IGNORANCE_KINDS, "secret"):
        return q.kind
    return "other"


def pick(questions: list[Question], limit: int, seed: int) -> list[Question]:
    """At most `limit` rows (0: all), spread over the strata; seeded."""
    if not limit or len(questions) <= limit:
        return list(questions)
    rng = random.Random(seed)
    pools: dict[str, list[Question]] = defaultdict(list)
    for q in questions:
        pools[stratum(q)].append(q)
    order = [_interleave(pools[s], rng, s == "secret") for s in STRATA if pools.get(s)]
    picked: list[Question] = []
    while len(picked) < limit:
        for pool in order:
            if pool and len(picked) < limit:
                picked.append(pool.pop(0))
    return picked


def _interleave(pool: list[Question], rng: random.Random, by_attack: bool) -> list[Question]:
    """The pool shuffled; secrets taken in turn from each attack kind, so few picks cover many kinds."""
    pool = list(pool)
    rng.shuffle(pool)
    if not by_attack:
        return pool
    kinds: dict[str, list[Question]] = defaultdict(list)
    for q in pool:
        kinds[q.attack].append(q)
    lists = [kinds[k] for k in sorted(kinds)]
    rng.shuffle(lists)
    out = []
    while any(lists):
        out += [lst.pop(0) for lst in lists if lst]
    return out


def prompts(rows: list[Question]) -> list[Question]:
    """Every row as written, plus each fact row with notes asked again without them."""
    out = []
    for q in rows:
        out.append(q)
        if q.is_fact and q.notes is not None:
            out.append(bare(q))
    return sorted(out, key=lambda q: (str(q.meta.get("npc") or ""), q.index, q.without_notes))


def count_strata(rows: list[Question]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for q in rows:
        counts[stratum(q)] += 1
    return {s: counts[s] for s in STRATA if counts.get(s)}
