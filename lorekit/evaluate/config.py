"""`[eval]` settings: how `lorekit eval` compares the base model with the tuned model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lorekit.config import opt


@dataclass
class EvalConfig:
    backend: Literal["gguf", "adapter"] = opt(
        "gguf", "gguf: base and merged GGUF through llama.cpp; adapter: PyTorch base + OUT/adapter (needs [train])"
    )
    base: str = opt("", "base model GGUF (default: export.json's base_gguf, else the profile's GGUF)")
    tuned: str = opt("", "tuned model GGUF (default: OUT/export/model.gguf)")
    limit: int = opt(60, "evaluate at most this many eval.jsonl rows, spread over facts trained / not trained, "
                     "unknown, absent, secrets and the rest (0 = all); a fact row with notes is asked twice, "
                     "with and without them")
    max_tokens: int = opt(48, "most tokens generated per answer (answers are cut there)")
    seed: int = opt(0, "seed for sampling the questions and for the runtime (decoding is greedy)")
    general: bool = opt(True, "also ask the built-in general-knowledge questions (forgetting check)")
    repeat_words: int = opt(10, "a reply repeats training data when it shares this many words in a row with a train.jsonl answer")
    leak_words: int = opt(2, "a secret reply leaks when it states this many of the secret's key words "
                          "(numbers, names, rare words the prompt did not hold)")
    agree_threshold: float = opt(0.5, "general questions: the tuned answer agrees with the base answer at this word-overlap F1 or more")
    n_ctx: int = opt(2048, "context window used for evaluation (prompt + answer)")
    threads: int = opt(0, "CPU threads for llama.cpp (0 = all cores)")
