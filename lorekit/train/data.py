"""Rows -> token ids and labels, and length-bucketed batches.

A row is rendered through `lorekit.chat_formats` and tokenized as ONE string (the way the runtime
will see it); the character spans that `segments()` marks trainable (the model's replies and their
end-of-turn token) decide which tokens keep their label. Every other label is -100.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from lorekit import chat_formats
from lorekit.errors import LorekitError

log = logging.getLogger(__name__)
IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def n_trainable(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def read_rows(path: Path) -> list[dict]:
    """The ShareGPT rows of a jsonl file; a broken line is a one-line error naming file and line."""
    rows = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            turns = row["conversations"]
            if not any(t["from"] == "gpt" for t in turns):
                raise ValueError("no `gpt` turn to learn from")
            chat_formats.from_sharegpt(turns)
        except (ValueError, KeyError, TypeError) as e:
            raise LorekitError(f"{path}:{n}: not a dataset row ({e}); rebuild it with `lorekit compile`") from None
        rows.append(row)
    return rows


def encode(tokenizer, fmt: chat_formats.ChatFormat, conversations: list[dict], max_length: int) -> Example:
    """Token ids of the rendered row, labels -100 except on the model's turns (end-of-turn included)."""
    segments = fmt.segments(chat_formats.from_sharegpt(conversations))
    text, spans, pos = "", [], 0
    for piece, trainable in segments:
        if trainable:
            spans.append((pos, pos + len(piece)))
        text += piece
        pos += len(piece)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"][:max_length])
    labels = [tid if _inside(start, end, spans) else IGNORE
              for tid, (start, end) in zip(ids, enc["offset_mapping"][:max_length])]
    return Example(ids, labels)


def _inside(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    # A token belongs to a reply when it starts inside one (a token never straddles a special token).
    return end > start and any(a <= start < b for a, b in spans)


def encode_rows(tokenizer, fmt, rows: list[dict], max_length: int, where: str = "") -> list[Example]:
    examples, cut = [], 0
    for row in rows:
        ex = encode(tokenizer, fmt, row["conversations"], max_length)
        cut += len(ex.input_ids) == max_length
        if ex.n_trainable:
            examples.append(ex)
    if cut:
        log.warning("%s: %d of %d rows were cut at max_length=%d tokens", where, cut, len(rows), max_length)
    if len(examples) < len(rows):
        log.warning("%s: %d rows had nothing left to learn after cutting and were skipped",
                    where, len(rows) - len(examples))
    return examples


def batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> list[list[int]]:
    """Batches of row indices, the same for the same (seed, epoch) so that a resumed run sees the same
    data. Rows are shuffled, then sorted by length inside windows of 32 batches (little padding), and
    the batches shuffled again so that each step still mixes entities."""
    idx = list(range(len(lengths)))
    rng = random.Random(seed * 1_000_003 + epoch)
    if shuffle:
        rng.shuffle(idx)
    window = batch_size * 32
    batches = []
    for i in range(0, len(idx), window):
        chunk = sorted(idx[i:i + window], key=lambda j: lengths[j])
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    if shuffle:
        rng.shuffle(batches)
    return batches


def collate(examples: list[Example], pad_id: int, multiple: int = 1):
    """Right-padded tensors: input_ids, attention_mask, labels. `multiple` rounds the width up, which
    keeps the number of distinct shapes small for compiled kernels."""
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
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
