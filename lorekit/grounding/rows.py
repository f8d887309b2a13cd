"""Rows in the served layout: the compiled rows of an NPC get the lore notes that retrieval gives
their question, as the server will (`lorekit.prompt.user_turn`).

- Fact rows: the right note is always among the notes (RAFT: among the distractors retrieval
  picks, at a seeded place); `1 - notes_share` of them keep no notes, so core facts stay in the weights.
- "I don't know" rows: invented names (retrieval finds nothing), and `absent_per_npc` questions on
  pages the NPC knows about what the lore does not say (`grounding/absent.j2`): notes about the
  page, no answer in them.
- Secrets: a holder's notes carry only the topic it keeps; attack phrasings (`attacks/*.j2`) are
  answered with the NPC's refusal; the held-out phrasing of each kind goes to eval.
- Eval: held-out phrasings of a seeded sample of facts that were not taught (`eval_world_facts`),
  so the eval asks about the whole world. Eval rows carry the notes retrieval really gives (never
  forced), and `meta.question` so the eval can ask again without notes.
"""

from __future__ import annotations

import random
import re

from lorekit import dataset
from lorekit.compile.dataset import Builder, Rows, make_row, meta, split
from lorekit.compile.templates import TemplateFailure
from lorekit.grounding.notes import Note, NoteBook, note_pairs
from lorekit.grounding.retrieve import Retriever
from lorekit.lore import Fact
from lorekit.lore.vault import entity_corpus
from lorekit.prompt import npc_view, user_turn

FACT_KINDS = ("field", "reverse", "summary", "section")
ATTACK_DIR = "attacks"


def ground_row(row: dict, retriever: Retriever, rng: random.Random, share: float, force: str | None) -> dict:
    """Give the last user turn of an NPC row its notes (or, for `1 - share` of rows, none)."""
    m = row["meta"]
    msgs = dataset.messages(row)
    last = max(i for i, msg in enumerate(msgs) if msg["role"] == "user")
    question = msgs[last]["content"]
    if rng.random() >= share:
        m = {**m, "question": question, "notes": None}
        return dataset.to_row(msgs, m)
    history = [msg for msg in msgs[:last] if msg["role"] != "system"]
    notes = retriever.retrieve(m["npc"], question, history)
    if force and force not in {n.id for n in notes}:  # the right note among the distractors, at a seeded place
        right = retriever.book.notes[force]
        while notes and not retriever.fits([*notes, right]):
            notes = notes[:-1]
        notes.insert(rng.randrange(len(notes) + 1), right)
    msgs[last] = {"role": "user", "content": user_turn(question, notes=note_pairs(notes))}
    return dataset.to_row(msgs, {**m, "question": question, "notes": [n.id for n in notes]})


def ground(train: list[dict], evals: list[dict], retriever: Retriever, seed: int, share: float) -> tuple[list, list]:
    """Ground every NPC row (keeper rows stay as they are); eval rows are never forced."""
    out = []
    for split_rows, forced in ((train, True), (evals, False)):
        done = []
        for i, row in enumerate(split_rows):
            m = row.get("meta") or {}
            if not m.get("npc"):
                done.append(row)
                continue
            rng = random.Random(f"{seed}:notes:{forced}:{i}:{m.get('kind')}")
            right = m["facts"][0] if forced and m.get("kind") in FACT_KINDS and m.get("facts") else None
            right = right if right in retriever.book.by_npc_set(m["npc"]) else None
            done.append(ground_row(row, retriever, rng, share if forced else 1.0, right))
        out.append(done)
    return out[0], out[1]


def absent_rows(b: Builder, book: NoteBook, per_npc: int) -> Rows:
    """Questions about pages an NPC knows, on what the lore does not say: "I don't know"."""
    out, tpl = Rows(), "grounding/absent.j2"
    if per_npc <= 0 or b.t.find(tpl) is None:
        return out
    for npc in b.vault.npcs.values():
        rng = random.Random(f"{b.cfg.seed}:absent:{npc.id}")
        known = sorted({n.entity for n in book.of(npc.id) if not n.secret})
        picks = rng.sample(known, min(len(known), per_npc + 1))
        while known and len(picks) < per_npc + 1:  # more rows than known pages: a page again, asked otherwise
            picks += rng.sample(known, min(len(known), per_npc + 1 - len(picks)))
        asked: set[str] = set()
        for k, eid in enumerate(picks):
            entity = b.vault.entities[eid]
            try:
                prose = entity_corpus(entity)
                keyed = [q.split("|", 1) for q in b.t.lines(tpl, "questions", {"name": entity.name, "type": entity.type})
                         if "|" in q]
                lines = [q for key, q in keyed if key not in entity.fields and unsaid(key, prose)]
                train_q, eval_q = split(lines, 1)
                in_eval = k == per_npc
                qs = [q for q in ((eval_q or train_q) if in_eval else train_q) if q not in asked]
                if not qs:
                    continue
                q = qs[rng.randrange(len(qs))]
                a = b.t.render(tpl, "answer", {"name": entity.name, "npc": npc_view(npc)},
                               f"{b.cfg.seed}:absent:{npc.id}:{eid}:{q}")
            except TemplateFailure as e:
                out.problems.append(b.template_problem(e, npc.page, 0, f"an absent-fact question of NPC `{npc.id}`"))
                return out
            asked.add(q)
            (out.eval if in_eval else out.train).append(
                make_row(b.systems[npc.id], [(q, a)], meta(npc.id, "absent", [entity.name], [], [], b.t.display(tpl))))
    return out


GENERIC_KEY_WORDS = {"first", "favourite", "name", "day", "year", "times", "many", "best", "oldest"}


def unsaid(key: str, prose: str) -> bool:
    """Whether a page's prose (lower case) says nothing of what an absent-fact question's key asks
    ("bridges": no "bridge" anywhere in it): a page may tell its mayor in a paragraph, not a field, and
    an "I don't know" trained on that would teach the NPC to deny its own lore."""
    words = [w.rstrip("s") for w in key.lower().split("_") if len(w) >= 3 and w not in GENERIC_KEY_WORDS]
    return not any(re.search(rf"\b{re.escape(w)}", prose) for w in words)


def attack_rows(b: Builder, book: NoteBook, per_kind: int, facts: dict[str, Fact]) -> Rows:
    """Each attack kind on each kept secret: refused in character (train), the last phrasing held out."""
    out = Rows()
    kinds = sorted(n[len(ATTACK_DIR) + 1:-3] for n in b.t.names if n.startswith(ATTACK_DIR + "/") and n.endswith(".j2"))
    for npc in b.vault.npcs.values():
        kept = [n for n in book.of(npc.id) if n.secret]
        for note in kept:
            entity = b.vault.entities[note.entity]
            rng = random.Random(f"{b.cfg.seed}:attack:{npc.id}:{note.id}")
            for kind in kinds:
                tpl = f"{ATTACK_DIR}/{kind}.j2"
                try:
                    own = note.entity == npc.id  # the NPC's own secrets: "your secrets", refused as "that"
                    ctx = {"topic": "your secrets" if own else note.text, "npc": npc_view(npc), "entity": entity.name}
                    train_q, eval_q = split(b.t.lines(tpl, "questions", ctx), 1)
                    a = b.t.render("replies/secret.j2", "answer", {"name": "that" if own else entity.name,
                                                                   "npc": npc_view(npc)}, f"{rng.random()}")
                except TemplateFailure as e:
                    out.problems.append(b.template_problem(e, npc.page, 0, f"an attack ({kind}) on a secret of `{npc.id}`"))
                    continue
                secret_of = _secret_fact(note)
                info = {**meta(npc.id, "secret", [entity.name], secret_of, [], tpl), "attack": kind}
                if secret_of and secret_of[0] in facts:  # what must not leak (eval)
                    fact = facts[secret_of[0]]
                    info["secret_values"] = list(fact.values if fact.kind == "field" else fact.expect)
                for q in rng.sample(train_q, min(per_kind, len(train_q))):
                    out.train.append(make_row(b.systems[npc.id], [(q, a)], dict(info)))
                for q in eval_q:
                    out.eval.append(make_row(b.systems[npc.id], [(q, a)], dict(info)))
    return out


def _secret_fact(note: Note) -> list[str]:
    """The fact a kept note stands for (`secret:<npc>:<fact id>`), or [] for a whole kept page."""
    rest = note.id.split(":", 2)[2]
    return [rest] if "." in rest else []


def world_eval_rows(b: Builder, book: NoteBook, taught: set[str], facts: list[Fact], n: int) -> Rows:
    """Held-out phrasings of `n` facts some NPC may tell that training never saw (seeded sample)."""
    out = Rows()
    pool = [f for f in facts if f.id not in taught and any(f.id in book.by_npc_set(npc) for npc in book.by_npc)]
    for fact in random.Random(f"{b.cfg.seed}:world").sample(pool, min(n, len(pool))):
        rows = b.fact_rows(fact)
        out.problems += rows.problems
        npc_rows = [r for r in rows.eval if r["meta"]["npc"] and fact.id in book.by_npc_set(r["meta"]["npc"])]
        for r in npc_rows[:1]:
            r["meta"]["trained"] = False
            out.eval.append(r)
    return out
