"""Gemma 4's per-layer embeddings in CPU memory (lorekit/train/ple_offload.py): the same logits and the same
LoRA gradients as with the table in the model, on the tiny random Gemma 4 (device "cpu" runs the same
lookup path as CUDA, without the pinned copy)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory):
    from tests.tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"), "gemma4")


def lora_model(path, checkpointing: bool, dtype=None):
    """The tiny model (in `dtype`, default its own) with LoRA on, every LoRA B given values."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorekit.models import resolve
    from lorekit.train.recipe import attach_lora

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(path)
    base = AutoModelForCausalLM.from_pretrained(path, **({"dtype": dtype} if dtype is not None else {}))
    model = attach_lora(base, resolve(str(path)),
                        {"r": 4, "alpha": 8, "dropout": 0.0, "turn_tokens": True}, checkpointing, tok)
    with torch.no_grad():  # LoRA B starts at zero, which would leave A without gradient: give it values
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    return model, tok


def forward_backward(model, batch):
    from lorekit.train.loop import masked_loss

    model.zero_grad(set_to_none=True)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.detach()
    loss, n = masked_loss(model, batch, bf16=False)
    (loss / n).backward()
    grads = {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    return logits, loss.detach(), grads


@pytest.mark.parametrize("checkpointing", [False, True])
def test_offloaded_table_gives_the_same_logits_and_lora_gradients(tiny4, checkpointing):
    import torch

    from lorekit import chat_formats
    from lorekit.train import ple_offload
    from lorekit.train.data import collate, encode_rows
    from tests.test_train_tiny import rows

    model, tok = lora_model(tiny4, checkpointing)
    model.train()
    batch = collate(encode_rows(tok, chat_formats.get("gemma4"), rows(3), 256), tok.pad_token_id)
    before_logits, before_loss, before_grads = forward_backward(model, batch)

    table = dict(model.named_parameters())
    ple_name = next(n for n in table if "embed_tokens_per_layer" in n)
    expected_bytes = table[ple_name].numel() * table[ple_name].element_size()
    assert ple_offload.offload(model, "cpu") == expected_bytes
    assert not any("embed_tokens_per_layer" in n for n, _ in model.named_parameters())
    lookups = [m for m in model.modules() if isinstance(m, ple_offload.CpuRowLookup)]
    assert len(lookups) == 1 and lookups[0].table.shape == table[ple_name].shape

    after_logits, after_loss, after_grads = forward_backward(model, batch)
    assert torch.equal(after_logits, before_logits)
    assert torch.equal(after_loss, before_loss)
    assert after_grads.keys() == before_grads.keys()
    assert any("lora_A" in n for n in after_grads) and any("lora_B" in n for n in after_grads)
    for name, grad in before_grads.items():
        assert grad.abs().sum() > 0, name  # every LoRA weight gets a gradient, so the comparison means something
        assert torch.equal(after_grads[name], grad), name


def test_lookup_gathers_only_the_rows_of_the_batch(tiny4, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM

    from lorekit.train import ple_offload

    model = AutoModelForCausalLM.from_pretrained(tiny4)
    original = model.model.embed_tokens_per_layer
    ids = torch.tensor([[5, 9, 5, 5], [9, 40, 5, 9]])
    with torch.no_grad():
        expected = original(ids)
    ple_offload.offload(model, "cpu")
    lookup = model.model.embed_tokens_per_layer
    gathered = []
    real = torch.Tensor.index_select

    def spy(self, dim, index, *a, **kw):
        if self is lookup.table:
            gathered.append(index.tolist())
        return real(self, dim, index, *a, **kw)

    monkeypatch.setattr(torch.Tensor, "index_select", spy)
    out = lookup(ids)
    assert gathered == [[5, 9, 40]]  # three distinct tokens: three rows, not eight
    assert torch.equal(out, expected)


def test_a_model_without_per_layer_embeddings_is_left_alone(tmp_path):
    from transformers import AutoModelForCausalLM

    from lorekit.train import ple_offload
    from tests.tiny_models import make_tiny_model

    model = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path, "gemma3"))
    names = [n for n, _ in model.named_parameters()]
    assert ple_offload.offload(model, "cpu") == 0
    assert [n for n, _ in model.named_parameters()] == names


def test_unset_offload_follows_the_card_size():
    """E2B's 3.75 GiB of tables: moved to CPU memory on an 8-24 GB card, kept on a 40 GB or larger one
    (where the offload only costs time); an explicit setting always wins; no tables, nothing to move."""
    from lorekit.train.ple_offload import wanted

    gib = 2**30
    tables = int(3.75 * gib)
    assert wanted(None, tables, 8 * gib) and wanted(None, tables, 24 * gib)
    assert not wanted(None, tables, 40 * gib) and not wanted(None, tables, 141 * gib)
    assert wanted(True, tables, 141 * gib) and not wanted(False, tables, 8 * gib)
    assert not wanted(None, 0, 8 * gib) and not wanted(True, 0, 8 * gib)


def test_table_bytes_counts_what_an_offload_would_move(tiny4):
    import torch
    from transformers import AutoModelForCausalLM

    from lorekit.train import ple_offload

    model = AutoModelForCausalLM.from_pretrained(tiny4, dtype=torch.float32)
    before = ple_offload.table_bytes(model)
    assert before > 0 and not ple_offload.offloaded(model)
    assert ple_offload.offload(model, "cpu") == before
    assert ple_offload.table_bytes(model) == 0 and ple_offload.offloaded(model)
