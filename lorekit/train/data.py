"""Rows -> token ids and labels, and length-bucketed batches.

A row is rendered through `lorekit.chat_formats` and tokenized as ONE string (the way the runtime
will see it); the character spans that `segments()` marks trainable (the model's replies and their
end-of-turn token) decide which tokens keep their label. Every other label is -100.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from lorekit import chat_formats, dataset

log = logging.getLogger(__name__)
IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]
    group: str = ""  # rows of one group start with the same system prompt

    @property
    def n_trainable(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)

    @property
    def first_trainable(self) -> int:
        return next((i for i, x in enumerate(self.labels) if x != IGNORE), len(self.labels))


def read_rows(path: Path) -> list[dict]:
    """The rows of a jsonl file (either format of `lorekit.dataset`), each with an answer to learn."""
    return [row for _, row in dataset.read(path)]


def encode(tokenizer, fmt: chat_formats.ChatFormat, turns: list[dict], max_length: int) -> Example:
    """Token ids of the rendered row (turns of either format), labels -100 except on the model's turns
    (end-of-turn included)."""
    return encode_many(tokenizer, fmt, [turns], max_length)[0]


def encode_many(tokenizer, fmt: chat_formats.ChatFormat, rows: list[list[dict]], max_length: int) -> list[Example]:
    """`encode` of many rows in one tokenizer call: a fast tokenizer spreads the batch over the CPU's
    cores (the whole sample world's 3,081 rows: 1.4 s one by one on 2 cores)."""
    texts, spans = [], []
    for turns in rows:
        text, marked, pos = "", [], 0
        for piece, trainable in fmt.segments(dataset.as_messages(turns)):
            if trainable:
                marked.append((pos, pos + len(piece)))
            text += piece
            pos += len(piece)
        texts.append(text)
        spans.append(marked)
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    out = []
    for all_ids, offsets, marked in zip(enc["input_ids"], enc["offset_mapping"], spans, strict=True):
        ids = list(all_ids[:max_length])
        out.append(Example(ids, _labels(ids, offsets[:max_length], marked)))
    return out


def _labels(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    """A token keeps its id as label when it starts inside a reply span (a token never straddles a special
    token). Tokens and spans both run left to right, so one pass over each."""
    labels, j = [], 0
    for tid, (start, end) in zip(ids, offsets, strict=True):
        while j < len(spans) and spans[j][1] <= start:
            j += 1
        labels.append(tid if end > start and j < len(spans) and spans[j][0] <= start else IGNORE)
    return labels


def encode_rows(tokenizer, fmt, rows: list[dict], max_length: int, where: str = "") -> list[Example]:
    examples, cut = [], 0
    encoded = encode_many(tokenizer, fmt, [dataset.messages(row) for row in rows], max_length)
    for row, ex in zip(rows, encoded, strict=True):
        ex.group = dataset.system_text(row)
        cut += len(ex.input_ids) == max_length
        if ex.n_trainable:
            examples.append(ex)
    if cut:
        log.warning("%s: %d of %d rows were cut at max_length=%d tokens", where, cut, len(rows), max_length)
    if len(examples) < len(rows):
        log.warning("%s: %d rows had nothing left to learn after cutting and were skipped",
                    where, len(rows) - len(examples))
    return examples


def batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int, shuffle: bool = True,
                groups: list[str] | None = None) -> list[list[int]]:
    """Batches of row indices, the same for the same (seed, epoch) so that a resumed run sees the same
    data. Rows are shuffled, then sorted by length inside windows of 32 batches (little padding), and
    the batches shuffled again so that each step still mixes entities. With `groups`, a batch never
    mixes groups (rows of one batch then share their system prompt, computed once: see loop.py)."""
    idx = list(range(len(lengths)))
    rng = random.Random(seed * 1_000_003 + epoch)
    if shuffle:
        rng.shuffle(idx)
    group = groups or [""] * len(lengths)
    window = batch_size * 32
    batches = []
    for i in range(0, len(idx), window):
        chunk = sorted(idx[i:i + window], key=lambda j: (group[j], lengths[j]))
        while chunk:
            same = [j for j in chunk[:batch_size] if group[j] == group[chunk[0]]]
            batches.append(same)
            chunk = chunk[len(same):]
    if shuffle:
        rng.shuffle(batches)
    return batches


def collate(examples: list[Example], pad_id: int, multiple: int = 1, share_prefix: bool = False):
    """Right-padded tensors: input_ids, attention_mask, labels. `multiple` rounds the width up, which
    keeps the number of distinct shapes small for compiled kernels. With `share_prefix`, "prefix_len"
    is how many leading tokens all rows share and do not learn from (0: none worth sharing)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    width = -(-width // multiple) * multiple
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if share_prefix:
        batch["prefix_len"] = shared_prefix(examples)
    return batch


def shared_prefix(examples: list[Example], minimum: int = 16) -> int:
    """Leading tokens common to every row, stopping before the token that predicts the first label."""
    first = examples[0].input_ids
    limit = min(min(e.first_trainable for e in examples) - 1, min(len(e.input_ids) for e in examples) - 1)
    n = 0
    while n < limit and all(e.input_ids[n] == first[n] for e in examples):
        n += 1
    return n if n >= minimum else 0
