"""Validate, then build every row of the dataset as serialized JSON lines (cached per fact)."""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from lorekit import dataset
from lorekit.compile.config import CompileConfig
from lorekit.compile.dataset import Builder, Row, Rows, phrasing_warnings
from lorekit.compile.extras import (
    greeting_rows,
    more_unknown_rows,
    multi_turn_rows,
    secret_rows,
    unknown_rows,
)
from lorekit.compile.focus import focus
from lorekit.compile.templates import TemplateFailure
from lorekit.dataset import SHAREGPT_ROLES
from lorekit.lore import Fact, Vault, facts_of, load_vault
from lorekit.lore.problems import Problem, error, warning
from lorekit.prompt import keeper, persona, templates_for


class Rec(NamedTuple):
    """One serialized row, as `head + tail` bytes (the head holds the long system turn, shared by
    every row of a speaker), and what the report needs to know about it. A tuple: cheap to pickle."""

    head: bytes
    tail: bytes
    npc: str | None
    kind: str
    facts: tuple[str, ...]
    questions: tuple[str, ...]


@dataclass
class Built:
    vault: Vault
    facts: list[Fact] = field(default_factory=list)
    facts_total: int = 0  # before max_facts
    problems: list[Problem] = field(default_factory=list)
    train: list[Rec] = field(default_factory=list)
    eval: list[Rec] = field(default_factory=list)
    phrasings: dict[str, int] = field(default_factory=dict)
    dropped_eval: int = 0
    systems: dict[str | None, str] = field(default_factory=dict)
    digest: str = ""  # of the templates
    ranges: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # fact -> train/eval slices
    eval_kept: list[int | None] = field(default_factory=list)  # eval row before the drop -> index after
    multi: list[tuple] = field(default_factory=list)  # (train index, npc, conversation, names, turns)
    rendered: int = 0  # facts rendered this time (the rest came from the cache)
    notes: Any = None  # the lore notes (lorekit.grounding.NoteBook) when [compile] notes is on

    @property
    def train_lines(self) -> list[bytes]:
        return [r.head + r.tail for r in self.train]

    @property
    def eval_lines(self) -> list[bytes]:
        return [r.head + r.tail for r in self.eval]


_dumps = json.JSONEncoder(ensure_ascii=False).encode
_HEADS: dict[tuple[str, str | None], bytes] = {}


def head(fmt: str, system: str | None) -> bytes:
    """The start of a row up to and including its system turn (cached: it is long and repeated)."""
    key = (fmt, system)
    if key not in _HEADS:
        if len(_HEADS) > 4096:
            _HEADS.clear()
        openai = fmt == "openai"
        start = '{"messages": [' if openai else '{"conversations": ['
        if system:
            turn = {"role": "system", "content": system} if openai else {"from": "system", "value": system}
            start += _dumps(turn) + ", "
        _HEADS[key] = start.encode("utf-8")
    return _HEADS[key]


def serialize(row: Row, fmt: str) -> Rec:
    """One JSON line, identical to json.dumps(row) with the turns renamed for the OpenAI format."""
    conv = row["conversations"]
    openai = fmt == "openai"
    role_key, text_key = ("role", "content") if openai else ("from", "value")
    system = conv[0]["value"] if conv and conv[0]["from"] == "system" else None
    turns = conv[1:] if system is not None else conv
    body = ", ".join(f'{{"{role_key}": {_dumps(SHAREGPT_ROLES[t["from"]] if openai else t["from"])}, '
                     f'"{text_key}": {_dumps(t["value"])}}}' for t in turns)
    m = row["meta"]
    tail = f'{body}], "meta": {_dumps(m)}}}\n'.encode()
    questions = tuple(t["value"] for t in conv if t["from"] == "human")
    return Rec(head(fmt, system), tail, m["npc"], m["kind"], tuple(m["facts"]), questions)


def prepare(lore_dir: Path, cfg: CompileConfig, store: Any | None) -> Built:
    vault = load_vault(lore_dir, store)
    built = Built(vault=vault, problems=list(vault.problems))
    if vault.errors:  # rows from a broken graph would only add noise to the error list
        return built
    try:
        templates = templates_for(vault, cfg.template_dir or None, store.folder / "jinja" if store is not None else None)
        systems: dict[str | None, str] = {None: keeper(vault, cfg.template_dir or None)}
        for npc_id in vault.npcs:
            systems[npc_id] = persona(vault, npc_id, cfg.template_dir or None)
    except TemplateFailure as e:
        built.problems.append(error(e.template, e.line, e.message, "fix the persona or keeper template"))
        return built
    built.systems = systems
    kept = [f for f in facts_of(vault) if keep_fact(f, cfg)]
    built.facts_total = len(kept)
    built.facts = focus(vault, kept, cfg.max_facts)
    vault.mention_log = []  # type: ignore[attr-defined]  # replayed by the incremental fast path
    builder = Builder(vault, cfg, templates, systems)
    built.digest = templates.digest()
    _fact_units(built, builder, store, built.digest)
    extras = Rows()
    by_entity: dict[str, list[Fact]] = defaultdict(list)
    for f in built.facts:
        by_entity[f.entity].append(f)
    for rows in (unknown_rows(builder, kept), secret_rows(builder, by_entity), greeting_rows(builder),
                 multi_turn_rows(builder, built.facts)):
        extras.extend(rows)
    first_multi = len(built.train) + len(extras.train) - len(extras.multi)  # multi-turn rows come last
    built.multi = [(first_multi + i, *m) for i, m in enumerate(extras.multi)]
    _add(built, extras, cfg.format)
    _drop_seen_eval(built)
    if cfg.notes and not any(p.severity == "error" for p in built.problems):  # broken rows are reported as they are
        _ground(built, builder, kept)
    built.problems += phrasing_warnings(vault, Rows(phrasings=built.phrasings), built.facts, cfg.min_phrasings)
    if len(built.train) < cfg.min_rows and not cfg.max_facts:  # a fact budget makes a small set on purpose
        built.problems.append(warning(".", None, f"only {len(built.train)} train rows (< {cfg.min_rows}): "
                                      "too few to teach a model", "write more pages or fields, or raise phrasings_per_fact"))
    built.problems = _dedupe(built.problems)
    return built


def _ground(built: Built, builder: Builder, facts: list[Fact]) -> None:
    """Put the NPC rows into the served layout (lore notes in the last user turn): lorekit.grounding."""
    from lorekit.grounding import Budget, Retriever, build_notes
    from lorekit.grounding.notes import keeper_statement
    from lorekit.grounding.rows import absent_rows, attack_rows, ground, world_eval_rows

    cfg = builder.cfg
    budget = Budget(cfg.notes_budget, cfg.notes_max)
    budget.check("[compile] notes_budget / notes_max")
    book = build_notes(builder.vault, keeper_statement(builder), facts=facts)
    retriever = Retriever(builder.vault, book, budget)
    extras = Rows()
    attacks = attack_rows(builder, book, cfg.attack_rows, {f.id: f for f in facts_of(builder.vault)})
    npcs = len(builder.vault.npcs)
    train = [json.loads(r.head + r.tail) for r in built.train]
    missing = dont_know_missing(cfg, train, len(attacks.train), npcs)
    # half as questions about names the lore does not have, half as what it does not say about known pages;
    # an NPC whose pages run out of such questions leaves the rest to more invented names
    per_npc = cfg.absent_per_npc + (math.ceil((missing - missing // 2) / npcs) if npcs else 0)
    absent = absent_rows(builder, book, per_npc)
    short = max(0, cfg.absent_per_npc * npcs + missing - missing // 2 - len(absent.train))
    for rows in (more_unknown_rows(builder, missing // 2 + short), absent, attacks,
                 world_eval_rows(builder, book, {f.id for f in built.facts}, facts, cfg.eval_world_facts)):
        extras.extend(rows)
    _add(built, extras, cfg.format)
    train += [json.loads(r.head + r.tail) for r in built.train[len(train):]]  # the rows just added
    evals = [json.loads(r.head + r.tail) for r in built.eval]
    train, evals = ground(train, evals, retriever, cfg.seed, cfg.notes_share)
    built.train = [serialize(dataset.to_row(dataset.messages(r), r["meta"]), cfg.format) for r in train]
    built.eval = [serialize(dataset.to_row(dataset.messages(r), r["meta"]), cfg.format) for r in evals]
    built.notes = book


def dont_know_missing(cfg: CompileConfig, train: list[dict], more_rows: int, npcs: int) -> int:
    """How many more "I don't know" rows the train set needs to reach `dont_know_share` (0 if none).

    A whole world has hundreds of fact rows per NPC and a few fixed "I don't know" rows: at ~2-4 % a
    model learns to answer everything (measured on the H200, bench/results/eval_grounding.md); at ~20 %
    it begins to say so when its notes lack the answer (issue 14's probe)."""
    share = min(max(cfg.dont_know_share, 0.0), 0.9)
    if not npcs or not share:
        return 0
    base = cfg.absent_per_npc * npcs  # the absent rows asked anyway
    known = sum(1 for r in train if (r.get("meta") or {}).get("kind") in ("unknown", "absent")) + base
    total = len(train) + more_rows + base
    return max(0, math.ceil((share * total - known) / (1 - share)))


def keep_fact(fact: Fact, cfg: CompileConfig) -> bool:
    skip = {f.lower().replace(" ", "_").replace("-", "_") for f in cfg.skip_fields}
    return fact.kind in cfg.fact_kinds and not (fact.kind != "summary" and fact.field in skip)


def _fact_units(built: Built, builder: Builder, store: Any | None, digest: str) -> None:
    cfg_key = json.dumps(asdict(builder.cfg), sort_keys=True) + digest
    shas = {p.path: p.sha for p in builder.vault.pages}
    sigs = {s: (json.dumps(builder.npc_views[s], sort_keys=True) if s else "-") + "\0" + builder.systems[s]
            for s in builder.systems}
    heads = {s: head(builder.cfg.format, builder.systems[s]) for s in builder.systems}
    for fact in built.facts:
        key = _unit_key(builder, fact, cfg_key, shas, sigs) if store is not None else None
        cached = store.units.get(key) if store is not None else None
        if cached is not None:
            unit = ([Rec(heads[r[1]], *r) for r in cached[0]], [Rec(heads[r[1]], *r) for r in cached[1]], [], cached[2])
        else:
            rows = builder.fact_rows(fact)
            built.rendered += 1
            unit = ([serialize(r, builder.cfg.format) for r in rows.train],
                    [serialize(r, builder.cfg.format) for r in rows.eval], rows.problems, rows.phrasings)
            if store is not None and not rows.problems:  # stored without the head: rebuilt from the speaker
                store.add_unit(key, ([tuple(r)[1:] for r in unit[0]], [tuple(r)[1:] for r in unit[1]], unit[3]))
        if store is not None:
            store.used.add(key)
        built.ranges[fact.id] = (len(built.train), len(built.train) + len(unit[0]),
                                 len(built.eval), len(built.eval) + len(unit[1]))
        built.train += unit[0]
        built.eval += unit[1]
        built.problems += unit[2]
        built.phrasings.update(unit[3])


def _unit_key(builder: Builder, fact: Fact, cfg_key: str, shas: dict[str, str], sigs: dict) -> str:
    """Everything a fact's rows depend on: the fact, its pages' bytes, its speakers, templates, config."""
    vault = builder.vault
    speakers = builder.speakers(fact)
    parts = [cfg_key, repr((fact.id, fact.kind, fact.field, fact.values, fact.expect, fact.others, fact.types)),
             ",".join(sorted(fact.pages)), shas[vault.entities[fact.entity].page]]
    parts += [sigs[s] for s in speakers]
    return hashlib.blake2b("\0".join(parts).encode("utf-8"), digest_size=16).hexdigest()


def _add(built: Built, rows: Rows, fmt: str) -> None:
    built.train += [serialize(r, fmt) for r in rows.train]
    built.eval += [serialize(r, fmt) for r in rows.eval]
    built.problems += rows.problems


def _drop_seen_eval(built: Built) -> None:
    """Eval must ask in words never seen in train: drop any eval row whose question is in train."""
    seen = {q for r in built.train for q in r.questions}
    kept = []
    for r in built.eval:
        if any(q in seen for q in r.questions):
            built.eval_kept.append(None)
        else:
            built.eval_kept.append(len(kept))
            kept.append(r)
    built.dropped_eval = len(built.eval) - len(kept)
    built.eval = kept


def _dedupe(problems: list[Problem]) -> list[Problem]:
    return sorted(dict.fromkeys(problems), key=Problem.sort_key)
