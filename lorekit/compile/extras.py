"""Rows that are not one fact: "I don't know", secret refusals, greetings and multi-turn talks."""

from __future__ import annotations

import random
from collections.abc import Iterable

from lorekit.compile.dataset import Builder, Rows, make_row, meta, split
from lorekit.compile.names import invent
from lorekit.compile.templates import TemplateFailure
from lorekit.lore import Fact
from lorekit.lore.article import name_in
from lorekit.lore.facts import SECRET, heard_of, holds_secret
from lorekit.prompt import npc_view


def unknown_rows(b: Builder, facts: Iterable[Fact] = ()) -> Rows:
    """Invented names, and real pages an NPC does not know: answered "I don't know" in character. A page
    that one of the NPC's `facts` names is not asked ("Vellicor?" of an NPC told where Corvina lives)."""
    out = Rows()
    heard = heard_of(b.vault, facts)
    cfg, seed = b.cfg, b.cfg.seed
    tpl = "replies/unknown.j2"
    name = b.t.display(tpl)
    speakers: list[str | None] = ([None] if cfg.keeper else []) + list(b.vault.npcs)
    if not speakers:
        return out
    invented = invent(cfg.unknown_names + cfg.eval_unknown_names, f"{seed}:names", b.vault.mentions)
    try:
        for i, who in enumerate(invented):
            in_eval = i >= cfg.unknown_names
            (out.eval if in_eval else out.train).append(_invented_row(b, who, speakers[i % len(speakers)], in_eval))
        for npc in b.vault.npcs.values():
            strangers = sorted(e for e in b.public
                               if e not in npc.knows and e not in npc.secrets and e not in heard[npc.id])
            rng = random.Random(f"{seed}:strangers:{npc.id}")
            picked = rng.sample(strangers, min(len(strangers), cfg.unknown_per_npc + 1))
            for k, eid in enumerate(picked):
                who = b.vault.entities[eid].name
                ctx = {"name": who, "type": b.vault.entities[eid].type}
                train_q, eval_q = split(b.t.lines(tpl, "questions", ctx), cfg.eval_phrasings_per_fact)
                in_eval = k == cfg.unknown_per_npc
                qs = (eval_q or train_q) if in_eval else train_q
                q = qs[rng.randrange(len(qs))]
                a = _reply(b, tpl, npc.id, who, f"{seed}:stranger:{npc.id}:{eid}")
                (out.eval if in_eval else out.train).append(
                    make_row(b.systems[npc.id], [(q, a)], meta(npc.id, "unknown", [who], [], [], name)))
    except TemplateFailure as e:
        out.problems.append(b.template_problem(e, "(invented names)", 0, "an unknown-name question"))
    return out


def more_unknown_rows(b: Builder, count: int) -> Rows:
    """`count` further invented names, asked in training only: the ones after those `unknown_rows` uses
    (`[compile] dont_know_share` asks for them when a world's fact rows outnumber its "I don't know")."""
    out = Rows()
    speakers: list[str | None] = ([None] if b.cfg.keeper else []) + list(b.vault.npcs)
    if count <= 0 or not speakers:
        return out
    used = b.cfg.unknown_names + b.cfg.eval_unknown_names
    try:
        for i, who in enumerate(invent(used + count, f"{b.cfg.seed}:names", b.vault.mentions)[used:], start=used):
            out.train.append(_invented_row(b, who, speakers[i % len(speakers)], in_eval=False))
    except TemplateFailure as e:
        out.problems.append(b.template_problem(e, "(invented names)", 0, "an unknown-name question"))
    return out


def _invented_row(b: Builder, who: str, speaker: str | None, in_eval: bool):
    """A question about the invented name `who`, answered "I don't know" by `speaker` (train or eval phrasing)."""
    tpl, seed = "replies/unknown.j2", b.cfg.seed
    train_q, eval_q = split(b.t.lines(tpl, "questions", {"name": who}), b.cfg.eval_phrasings_per_fact)
    qs = eval_q or train_q if in_eval else train_q
    q = qs[random.Random(f"{seed}:unk:{who}").randrange(len(qs))]
    a = _reply(b, tpl, speaker, who, f"{seed}:unk:{who}")
    return make_row(b.systems[speaker], [(q, a)], meta(speaker, "unknown", [who], [], [], b.t.display(tpl)))


def _reply(b: Builder, tpl: str, speaker: str | None, who: str, seed: str) -> str:
    npc = npc_view(b.vault.npcs[speaker]) if speaker else None
    return b.t.render(tpl, "answer", {"name": who, "npc": npc}, seed)


def secret_rows(b: Builder, facts_by_entity: dict[str, list[Fact]]) -> Rows:
    """An NPC asked about a page in its `secrets`, or about a secret part of a page it holds (see
    lorekit.lore.facts.holds_secret), refuses in character (train and eval phrasings)."""
    out = Rows()
    tpl = "replies/secret.j2"
    for npc in b.vault.npcs.values():
        for eid in sorted(npc.secrets):
            entity = b.vault.entities[eid]
            facts = [f for f in facts_by_entity.get(eid, []) if f.kind in ("summary", "field", "section")
                     and SECRET not in f.pages]
            if not facts:
                continue
            try:
                rng = random.Random(f"{b.cfg.seed}:secret:{npc.id}:{eid}")
                for i in range(b.cfg.secret_rows + 1):
                    fact = facts[i % len(facts)]
                    ftpl = b.template_for(fact)
                    train_q, eval_q = split(b.t.lines(ftpl, "questions", b.context(fact)), b.cfg.eval_phrasings_per_fact)
                    in_eval = i == b.cfg.secret_rows
                    qs = (eval_q or train_q) if in_eval else train_q
                    q = qs[rng.randrange(len(qs))]
                    a = b.t.render(tpl, "answer", {"name": entity.name, "npc": npc_view(npc)}, f"{rng.random()}")
                    (out.eval if in_eval else out.train).append(make_row(
                        b.systems[npc.id], [(q, a)],
                        meta(npc.id, "secret", [entity.name], [fact.id], [], b.t.display(tpl))))
            except TemplateFailure as e:
                out.problems.append(b.template_problem(e, npc.page, 0, f"a secret of NPC `{npc.id}`"))
    held = [f for facts in facts_by_entity.values() for f in facts if SECRET in f.pages]
    for npc in b.vault.npcs.values():
        for fact in (f for f in held if holds_secret(b.vault, npc.id, f)):
            try:
                out.extend(_refusals(b, npc, fact, tpl))
            except TemplateFailure as e:
                out.problems.append(b.template_problem(e, fact.file, fact.line, f"a secret held by NPC `{npc.id}`"))
    return out


def _refusals(b: Builder, npc, fact: Fact, tpl: str) -> Rows:
    """Refusals of one secret part of a page; on its own page the NPC is asked "your ..." and says "that"."""
    out = Rows()
    entity = b.vault.entities[fact.entity]
    own = entity.id == npc.id
    rng = random.Random(f"{b.cfg.seed}:secret:{npc.id}:{fact.id}")
    ftpl = b.template_for(fact)
    train_q, eval_q = b.questions(ftpl, b.context(fact), npc.id, f"{b.cfg.seed}:{fact.id}:q")
    for i in range(b.cfg.secret_rows + 1):
        in_eval = i == b.cfg.secret_rows
        qs = (eval_q or train_q) if in_eval else train_q
        q = qs[rng.randrange(len(qs))]
        a = b.t.render(tpl, "answer", {"name": "that" if own else entity.name, "npc": npc_view(npc)}, f"{rng.random()}")
        info = meta(npc.id, "secret", [entity.name], [fact.id], [], b.t.display(tpl))
        info["secret_values"] = list(fact.values if fact.kind == "field" else fact.expect)  # what must not leak (eval)
        (out.eval if in_eval else out.train).append(make_row(b.systems[npc.id], [(q, a)], info))
    return out


def greeting_rows(b: Builder) -> Rows:
    """Each NPC's greeting to a player's hello, and its farewell to a goodbye (`replies/*.j2`)."""
    out = Rows()
    for kind, tpl, attr in (("greeting", "replies/greeting.j2", "greeting"), ("farewell", "replies/farewell.j2", "farewell")):
        if b.t.find(tpl) is None:
            continue  # a vault's own template folder from before farewells
        for npc in b.vault.npcs.values():
            if not getattr(npc, attr):
                continue
            try:
                view = npc_view(npc)
                train_q, eval_q = split(b.t.lines(tpl, "questions", {"npc": view}), b.cfg.eval_phrasings_per_fact)
                rng = random.Random(f"{b.cfg.seed}:{kind[:5]}:{npc.id}")  # "greet": the greeting rows' seed as before
                a = b.t.render(tpl, "answer", {"npc": view}, f"{b.cfg.seed}:{kind[:5]}:{npc.id}")
                for q in rng.sample(train_q, min(len(train_q), b.cfg.greetings)):
                    out.train.append(make_row(b.systems[npc.id], [(q, a)], meta(npc.id, kind, [npc.name], [], [],
                                                                                   b.t.display(tpl))))
                for q in eval_q[:1]:
                    out.eval.append(make_row(b.systems[npc.id], [(q, a)], meta(npc.id, kind, [npc.name], [], [],
                                                                                  b.t.display(tpl))))
            except TemplateFailure as e:
                out.problems.append(b.template_problem(e, npc.page, 0, f"the {kind} of NPC `{npc.id}`"))
    return out


def multi_turn_rows(b: Builder, facts: list[Fact]) -> Rows:
    """Short conversations with one NPC about several facts it knows (train phrasings only)."""
    out = Rows()
    for npc in b.vault.npcs.values():
        known = [f for f in facts if f.pages <= npc.knows]
        if len(known) < 2:
            continue
        rng = random.Random(f"{b.cfg.seed}:multi:{npc.id}")
        for c in range(b.cfg.multi_turn):
            turns, ids, names, expect = [], [], [], []
            try:
                for fact in rng.sample(known, min(len(known), b.cfg.multi_turn_length)):
                    tpl = b.template_for(fact)
                    ctx = b.context(fact)
                    train_q, _ = b.questions(tpl, ctx, npc.id, "")
                    a = b.answer(tpl, ctx, npc.id, multi_seed(b, npc.id, c, fact))
                    turns.append((train_q[rng.randrange(len(train_q))], a))
                    ids.append(fact.id)
                    names.append(b.vault.entities[fact.entity].name)
                    expect.append([v for v in fact.expect if name_in(v, a)])
            except TemplateFailure as e:
                out.problems.append(b.template_problem(e, npc.page, 0, f"a conversation of NPC `{npc.id}`"))
                break
            names = list(dict.fromkeys(names))
            out.train.append(multi_row(b.systems[npc.id], npc.id, names, ids, turns, expect))
            out.multi.append((npc.id, c, names, list(zip(ids, [q for q, _ in turns], [a for _, a in turns], expect, strict=False))))
    return out


def multi_seed(b: Builder, npc_id: str, c: int, fact: Fact) -> str:
    return f"{b.cfg.seed}:multi:{npc_id}:{c}:{fact.id}"


def multi_row(system: str, npc_id: str, names: list[str], ids: list[str], turns: list, expect: list[list[str]]) -> dict:
    flat = list(dict.fromkeys(v for part in expect for v in part))
    return make_row(system, turns, meta(npc_id, "multi_turn", names, ids, flat, "multi_turn"))
