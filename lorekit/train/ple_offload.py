"""Gemma 4's per-layer embedding tables (PLE) kept in CPU memory while training.

Gemma 4 E2B/E4B feed every decoder layer a per-token vector looked up in one big table,
`embed_tokens_per_layer`: vocabulary x (layers x 256), 262,144 x 7,680 = 3.75 GiB in bf16 for the
E2B bench shape. LoRA never trains it, and a batch reads only the rows of its own tokens. `offload`
moves the table to CPU memory and swaps in a lookup that gathers just the rows a batch uses on the
CPU, into pinned memory, copies them to the device asynchronously, and scales them there exactly as
the original module does, so logits and gradients are unchanged. With device "cpu" the same path
runs without the copy (that is how the tests check it).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

NAME = "embed_tokens_per_layer"  # the attribute of transformers' Gemma4TextModel


class CpuRowLookup(nn.Module):
    """An embedding whose table lives in CPU memory; the output lands on `device`."""

    def __init__(self, embedding: nn.Embedding, device: str | torch.device):
        super().__init__()
        self.device = torch.device(device)
        # A plain attribute, not a parameter or buffer: model.to(), .cuda() and state_dict() leave it alone.
        self.table = embedding.weight.detach().to("cpu")
        self.num_embeddings, self.embedding_dim = self.table.shape
        self.padding_idx = embedding.padding_idx
        scale = getattr(embedding, "embed_scale", None)
        if scale is None:
            scale = getattr(embedding, "scalar_embed_scale", 1.0)
        self.register_buffer("embed_scale", torch.as_tensor(scale).detach().to(self.device), persistent=False)

    @property
    def weight(self) -> torch.Tensor:  # for code that reads the table's dtype or shape
        return self.table

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        ids = input_ids.to("cpu")  # on CUDA a small device-to-host copy (the loop syncs every micro-batch anyway)
        unique, inverse = torch.unique(ids, return_inverse=True)
        if self.device.type == "cuda":
            rows = torch.empty((len(unique), self.embedding_dim), dtype=self.table.dtype, pin_memory=True)
            torch.index_select(self.table, 0, unique, out=rows)
            rows = rows.to(self.device, non_blocking=True)
            inverse = inverse.pin_memory().to(self.device, non_blocking=True)
        else:
            rows = self.table.index_select(0, unique).to(self.device)
            inverse = inverse.to(self.device)
        # as Gemma4TextScaledWordEmbedding: look up, then scale in the table's dtype, on the device
        return rows[inverse] * self.embed_scale.to(rows.dtype)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, table on cpu, output on {self.device}"


def has_ple(model) -> bool:
    return any(isinstance(getattr(m, NAME, None), nn.Embedding) for m in model.modules())


def table_bytes(model) -> int:
    """Bytes of the per-layer tables still in `model` as embeddings (0 once offloaded, or without any)."""
    return sum(e.weight.numel() * e.weight.element_size() for m in model.modules()
               if isinstance(e := getattr(m, NAME, None), nn.Embedding))


def offloaded(model) -> bool:
    return any(isinstance(m, CpuRowLookup) for m in model.modules())


SHARE = 8  # unset `offload_ple`: offload when the tables would take more than 1/SHARE of the card


def wanted(setting: bool | None, tables: int, card: int) -> bool:
    """Whether to offload: as `[train] offload_ple` says, or, unset, when the tables are over an eighth of
    the card's memory: E2B's 3.75 GiB go to CPU memory on an 8-24 GB card and stay on a 40 GB or larger
    one, where the offload only costs time (its load copies them back, ~3 s on the H200, and each batch
    gathers its rows on the CPU)."""
    if setting is not None:
        return setting and tables > 0
    return tables * SHARE > card


def offload(model, device: str | torch.device) -> int:
    """Swap every per-layer embedding table in `model` for a CPU lookup; returns the bytes moved off
    `device` (0 for a model without per-layer embeddings)."""
    parents = [m for m in model.modules() if isinstance(getattr(m, NAME, None), nn.Embedding)]
    moved, embedding = 0, None
    for parent in parents:
        embedding = getattr(parent, NAME)
        setattr(parent, NAME, CpuRowLookup(embedding, device))
        moved += embedding.weight.numel() * embedding.weight.element_size()
    del parents, embedding  # the last references to the device copy, before the cache is emptied
    if moved:
        if torch.device(device).type == "cuda":
            torch.cuda.empty_cache()
        log.info("per-layer embeddings: %.2f GiB kept in CPU memory, only each batch's rows go to %s",
                 moved / 2**30, device)
    return moved
