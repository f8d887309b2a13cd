"""A cheap forward for PEFT's trainable token rows (`trainable_token_indices`).

PEFT stores the trained rows' new values and, on every forward, copies the whole embedding matrix to
write them in (Gemma: 262,144 x hidden, 671 MB in fp32 for the 270M model); as the tied output layer
it then multiplies by that copy, and the backward pass builds a dense gradient of the whole matrix
just to read a few rows of it. Here the base layer runs as it is and only the trained rows change:
the embedding output is replaced where the input is one of those tokens, and the output layer's
logits of those tokens are recomputed from the new rows. Same numbers, saved in PEFT's own format.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


def speed_up(model) -> int:
    """Give every PEFT TrainableTokensLayer in `model` the row-only forward; returns how many."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    layers = [m for m in model.modules() if isinstance(m, TrainableTokensLayer)]
    for layer in layers:
        layer.forward = types.MethodType(_forward, layer)
    return len(layers)


def _forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    active = self.active_adapters
    if self.disable_adapters or not active or self.merged:
        return type(self).forward(self, x, *args, **kwargs)
    self._check_overlapping_tokens(active)
    out = self.base_layer(x, *args, **kwargs)
    for name in active:
        if name not in self.token_indices:
            continue
        rows = self.trainable_tokens_delta[name]
        index = torch.as_tensor(self.token_indices[name], device=out.device)
        if isinstance(self.base_layer, torch.nn.Embedding):
            out = _replace_embeddings(self, x, out, index, rows.to(out.dtype))
        else:  # the output layer tied to the embedding: recompute those tokens' logits
            out = out.index_copy(-1, index, F.linear(x, rows.to(x.dtype)).to(out.dtype))
    return out


def _replace_embeddings(layer, ids: torch.Tensor, out: torch.Tensor, index: torch.Tensor,
                        rows: torch.Tensor) -> torch.Tensor:
    slot = torch.full((layer.base_layer.num_embeddings,), -1, dtype=torch.long, device=ids.device)
    slot[index] = torch.arange(len(index), device=ids.device)
    which = slot[ids]
    new = rows[which.clamp(min=0)]
    scale = layer._get_embed_scale()  # Gemma scales embeddings inside the embedding layer
    if scale is not None:
        new = new * scale.to(new.dtype)
    return torch.where((which >= 0).unsqueeze(-1), new, out)
