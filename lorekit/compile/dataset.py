"""Build the rows: facts x phrasings x speakers, plus "I don't know", secrets, greetings, multi-turn.

A speaker is an NPC id, or None for the neutral lore keeper. Every fact gets `phrasings_per_fact`
train rows (more when more NPCs know it, so each of them answers it at least once), each in another
phrasing; the last `eval_phrasings_per_fact` phrasings of each template go to eval only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from lorekit.compile.config import CompileConfig
from lorekit.compile.templates import TemplateFailure, Templates, plural
from lorekit.lore import Fact, Vault
from lorekit.lore.article import name_in
from lorekit.lore.problems import Problem, error, warning
from lorekit.prompt import entity_view, npc_view

Row = dict[str, Any]


@dataclass
class Rows:
    train: list[Row] = field(default_factory=list)
    eval: list[Row] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    phrasings: dict[str, int] = field(default_factory=dict)  # fact id -> distinct train phrasings
    multi: list[tuple] = field(default_factory=list)  # per multi-turn row: (npc, index, names, turns)

    def extend(self, other: Rows) -> None:
        self.train += other.train
        self.eval += other.eval
        self.problems += other.problems
        self.phrasings.update(other.phrasings)
        self.multi += other.multi


def make_row(system: str | None, turns: list[tuple[str, str]], meta: dict[str, Any]) -> Row:
    conv = [{"from": "system", "value": system}] if system else []
    for question, answer in turns:
        conv += [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"conversations": conv, "meta": meta}


def meta(npc: str | None, kind: str, entities: list[str], facts: list[str], expect: list[str], template: str) -> dict:
    return {"npc": npc, "kind": kind, "entities": entities, "facts": facts, "expect": expect, "template": template}


class Builder:
    """Holds what every row needs: templates, system prompts, which speaker knows what."""

    def __init__(self, vault: Vault, cfg: CompileConfig, templates: Templates, systems: dict[str | None, str]):
        self.vault, self.cfg, self.t, self.systems = vault, cfg, templates, systems
        self.public = vault.public_ids()
        self.npc_views = {n.id: npc_view(n) for n in vault.npcs.values()}

    # --- which template asks a fact -------------------------------------------------------------
    def template_for(self, fact: Fact) -> str:
        etype = self.vault.entities[fact.entity].type
        if fact.kind == "field":
            names = [f"fields/{etype}/{fact.field}.j2", f"fields/{fact.field}.j2", "fields/_default.j2"]
        elif fact.kind == "reverse":
            names = [f"reverse/{etype}/{fact.field}.j2", f"reverse/{fact.field}.j2", "reverse/_default.j2"]
        elif fact.kind == "summary":
            names = [f"summary/{etype}.j2", "summary/_default.j2"]
        else:
            names = [f"section/{etype}.j2", "section.j2"]
        found = self.t.find(*names)
        if found is None:
            raise TemplateFailure(names[-1], None, f"no template for {fact.kind} facts ({' or '.join(names)})")
        return found

    def speakers(self, fact: Fact) -> list[str | None]:
        out: list[str | None] = [None] if self.cfg.keeper and fact.pages <= self.public else []
        out += [n.id for n in self.vault.npcs.values() if fact.pages <= n.knows]
        return out

    def context(self, fact: Fact) -> dict[str, Any]:
        entity = self.vault.entities[fact.entity]
        view = {"id": fact.id, "kind": fact.kind, "field": fact.field, "label": fact.label,
                "values": list(fact.values), "value": _and(fact.values), "plural": _plural(fact),
                "text": fact.values[0] if fact.values else "", "expect": list(fact.expect), "others": list(fact.others),
                "types": list(fact.types)}
        # `me`: the speaker is the page the fact is about (an NPC asked about itself): answers in the
        # first person, and some questions say "you"; set per speaker by questions() and answer()
        return {"entity": entity_view(entity), "fact": view, "me": False}

    def questions(self, template: str, ctx: dict, speaker: str | None, seed: str) -> tuple[list[str], list[str]]:
        """(train, eval) phrasings of a fact as asked of `speaker` (its own page: `me` is true)."""
        me = speaker is not None and speaker == ctx["entity"]["id"]
        return split(self.t.lines(template, "questions", {**ctx, "me": me}, seed), self.cfg.eval_phrasings_per_fact)

    def answer(self, template: str, ctx: dict, speaker: str | None, seed: str, memo: dict | None = None) -> str:
        """The answer in the speaker's voice. `memo` reuses renders that did not call pick() (same text)."""
        if memo is not None and speaker in memo:
            return memo[speaker]
        npc = self.npc_views.get(speaker) if speaker else None
        me = speaker is not None and speaker == ctx["entity"]["id"]
        statement = self.t.render(template, "answer", {**ctx, "npc": npc, "me": me}, seed)
        fixed = not self.t.picked
        voice = self.t.find("replies/voice.j2")
        if voice is not None:
            statement = self.t.render(voice, "answer", {"statement": statement, "npc": npc, "entity": ctx.get("entity"),
                                                        "names": _names(ctx, speaker)}, seed + ":v")
            fixed = fixed and not self.t.picked
        if memo is not None and fixed:
            memo[speaker] = statement
        return statement

    # --- facts ----------------------------------------------------------------------------------
    def fact_rows(self, fact: Fact) -> Rows:
        out = Rows()
        speakers = self.speakers(fact)
        if not speakers:
            return out
        try:
            template = self.template_for(fact)
            ctx = self.context(fact)
            qseed = f"{self.cfg.seed}:{fact.id}:q"
            train_q, eval_q = self.questions(template, ctx, None, qseed)
            # the NPC the fact is about is asked its own variant ("What do you own?"), line for line
            own = self.questions(template, ctx, fact.entity, qseed) if fact.entity in speakers else (train_q, eval_q)
            rng = random.Random(f"{self.cfg.seed}:{fact.id}")
            q0, s0 = rng.randrange(len(train_q)), rng.randrange(len(speakers))
            name = self.t.display(template)
            expect = list(fact.expect)
            entities = [self.vault.entities[fact.entity].name, *[o for o in fact.others if o]]
            entities = list(dict.fromkeys(entities))
            n = max(self.cfg.phrasings_per_fact, len(speakers) if len(speakers) > 1 else 0)
            memo: dict = {}
            for i in range(n):
                speaker = speakers[(s0 + i) % len(speakers)]
                tq = own[0] if speaker == fact.entity else train_q
                q = tq[(q0 + i) % len(tq)]
                a = self.answer(template, ctx, speaker, f"{self.cfg.seed}:{fact.id}:{i}", memo)
                out.train.append(make_row(self.systems[speaker], [(q, a)],
                                          meta(speaker, fact.kind, entities, [fact.id], _present(expect, a), name)))
            for j, q in enumerate(eval_q):
                speaker = speakers[(s0 + n + j) % len(speakers)]
                if speaker == fact.entity and j < len(own[1]):
                    q = own[1][j]
                a = self.answer(template, ctx, speaker, f"{self.cfg.seed}:{fact.id}:e{j}", memo)
                out.eval.append(make_row(self.systems[speaker], [(q, a)],
                                         meta(speaker, fact.kind, entities, [fact.id], _present(expect, a), name)))
            out.phrasings[fact.id] = min(n, len(train_q))
        except TemplateFailure as e:
            out.problems.append(self.template_problem(e, fact.file, fact.line, f"fact `{fact.id}`"))
        return out

    def template_problem(self, e: TemplateFailure, lore_file: str, lore_line: int, what: str) -> Problem:
        try:
            where = self.t.display(e.template)
        except Exception:
            where = e.template
        if e.missing:
            msg = (f"template uses `{e.missing}`, which {lore_file}:{lore_line} ({what}) lacks: {e.message}")
            fix = f"add `{e.missing}:` to {lore_file}, or guard it with {{% if ... is defined %}}"
        else:
            msg, fix = f"{e.message} (while rendering {what} from {lore_file}:{lore_line})", "fix the template"
        return error(where, e.line, msg, fix)


def split(questions: list[str], n_eval: int) -> tuple[list[str], list[str]]:
    """Hold out the last `n_eval` phrasings for eval, keeping at least one for train."""
    if not questions:
        raise TemplateFailure("", None, "the questions block rendered no lines")
    n_eval = min(n_eval, len(questions) - 1)
    return (questions[:-n_eval], questions[-n_eval:]) if n_eval > 0 else (questions, [])


def _and(values: tuple[str, ...] | list[str]) -> str:
    from lorekit.compile.templates import and_list

    return and_list(list(values))


def _plural(fact: Fact) -> bool:
    """Whether the fact's value takes a plural verb: more than one value, or one group with a plural name
    ("The Oarsmen are based in ..."); a reverse fact's `types` say whether its one source is a faction."""
    return len(fact.values) > 1 or (fact.kind == "reverse" and list(fact.types) == ["faction"]
                                    and plural(fact.values[0], "faction"))


def _names(ctx: dict, speaker: str | None) -> list[str]:
    """The page names a statement may hold besides the speaker's: the page it is about (unless that is
    the speaker) and the pages its fact links to. All of them are part of the fact's cache key."""
    entity, fact = ctx.get("entity") or {}, ctx.get("fact") or {}
    own = [entity.get("name", ""), *entity.get("aliases", [])] if entity.get("id") != speaker else []
    return list(dict.fromkeys(n for n in [*own, *fact.get("others", []), *fact.get("expect", [])] if n))


def _present(expect: list[str], answer: str) -> list[str]:
    return [v for v in expect if v and name_in(v, answer)]


def phrasing_warnings(vault: Vault, rows: Rows, facts: list[Fact], minimum: int) -> list[Problem]:
    by_id = {f.id: f for f in facts}
    out = []
    for fid, count in rows.phrasings.items():
        if count < minimum:
            f = by_id[fid]
            out.append(warning(f.file, f.line, f"fact `{fid}` is asked in only {count} phrasings (< {minimum})",
                               "add phrasings to its template or raise phrasings_per_fact"))
    return out
