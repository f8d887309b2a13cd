"""`[compile]` in lorekit.toml: how the dataset is made."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lorekit.config import opt


@dataclass
class CompileConfig:
    seed: int = opt(1234, "seed for every choice (phrasings, speakers, shuffling); same seed, same bytes")
    phrasings_per_fact: int = opt(5, "training rows per fact, each in a different phrasing where the template has enough")
    eval_phrasings_per_fact: int = opt(1, "phrasings per question template held out for eval.jsonl (never in train)")
    multi_turn: int = opt(3, "multi-turn conversations per NPC")
    multi_turn_length: int = opt(3, "questions per multi-turn conversation")
    unknown_names: int = opt(24, "invented names (absent from the vault) asked about in train, answered 'I don't know'")
    eval_unknown_names: int = opt(6, "further invented names asked only in eval.jsonl")
    unknown_per_npc: int = opt(4, "questions per NPC about real pages it does not know, answered 'I don't know'")
    secret_rows: int = opt(3, "refusal rows per NPC and secret page")
    greetings: int = opt(2, "greeting rows per NPC")
    fact_kinds: list[str] = opt(["field", "reverse", "summary", "section"],
                                "which facts to teach: field, reverse (links asked backwards), summary, section")
    skip_fields: list[str] = opt([], "front matter fields not to teach (e.g. [\"aliases\"]) to keep the dataset small")
    max_facts: int = opt(0, "teach at most this many facts, those of the NPCs' most important pages first "
                         "(0: all); keeps quick CPU builds of large worlds within minutes")
    keeper: bool = opt(True, "also teach public facts without a persona, as a neutral lore keeper")
    format: Literal["sharegpt", "openai"] = opt("sharegpt", "row format: ShareGPT `conversations` or OpenAI `messages`")
    template_dir: str = opt("", "extra template folder that overrides the vault's _templates/ and the defaults")
    min_rows: int = opt(150, "warn when the train set has fewer rows than this")
    min_phrasings: int = opt(5, "warn when a fact is asked in fewer distinct train phrasings than this")
    notes: bool = opt(True, "grounding: NPC rows carry the lore notes retrieval picks for their question, the "
                      "layout `lorekit serve` uses (false: knowledge only in the weights)")
    notes_budget: int = opt(200, "approximate tokens (4 characters each) the lore notes of one turn may take; "
                            "the server uses the same budget")
    notes_max: int = opt(6, "at most this many lore notes in one turn (compile and serve)")
    notes_share: float = opt(0.8, "share of NPC fact rows trained with notes; the rest without, so facts stay in the weights")
    absent_per_npc: int = opt(4, "questions per NPC about known pages on what the lore does not say, answered 'I don't know'")
    dont_know_share: float = opt(0.15, "grounding: at least this share of the train rows answer 'I don't know'; "
                                 "questions on invented names and on absent facts are added until it holds")
    attack_rows: int = opt(1, "train rows per attack kind (templates/attacks/) and kept secret, refused in character")
    eval_world_facts: int = opt(40, "eval questions about facts training did not teach (a seeded sample of the whole world)")
    cache: bool = opt(True, "reuse parse and render results from OUT/.cache for unchanged pages")
