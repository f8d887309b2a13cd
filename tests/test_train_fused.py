"""lorekit/train/fused.py: torch's fused RMSNorm for Gemma 4 and LoRA inputs left in the autocast dtype give
the same loss and LoRA gradients as transformers' and PEFT's own forwards, on the tiny random Gemma 4."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module")
def tiny4(tmp_path_factory):
    from tests.tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny"), "gemma4")


def lora_model(path, dtype):
    from tests.test_train_ple_offload import lora_model as with_lora

    model, tok = with_lora(path, False, dtype)
    model.train()
    return model, tok


def loss_and_grads(model, batch, bf16: bool):
    from lorekit.train.loop import masked_loss

    model.zero_grad(set_to_none=True)
    loss, n = masked_loss(model, batch, bf16=bf16)
    (loss / n).backward()
    return float(loss), {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.requires_grad}


def a_batch(tok):
    from lorekit import chat_formats
    from lorekit.train.data import collate, encode_rows
    from tests.test_train_tiny import rows

    return collate(encode_rows(tok, chat_formats.get("gemma4"), rows(3), 256), tok.pad_token_id)


def worst_relative(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max() / b[k].abs().max().clamp_min(1e-12)) for k in b)


def test_fused_norms_give_the_same_loss_and_lora_gradients_in_fp32(tiny4):
    import torch

    from lorekit.train import fused

    model, tok = lora_model(tiny4, torch.float32)
    batch = a_batch(tok)
    loss, grads = loss_and_grads(model, batch, bf16=False)
    done = fused.apply(model, autocast=False)
    assert done.norms == sum(type(m).__name__ == "Gemma4RMSNorm" for m in model.modules()) > 0
    assert done.lora_inputs == 0  # no autocast: PEFT's casts stay
    fused_loss, fused_grads = loss_and_grads(model, batch, bf16=False)
    assert fused_loss == pytest.approx(loss, rel=1e-6)
    assert worst_relative(fused_grads, grads) < 1e-4
    fused.undo(model)
    again, again_grads = loss_and_grads(model, batch, bf16=False)
    assert again == loss and worst_relative(again_grads, grads) == 0.0


def test_norms_of_either_transformers_spelling_are_fused(tiny4, caplog):
    """transformers 5.17 (the GPU machine's) names the norm's epsilon `eps`, 5.25 `variance_epsilon`: the
    H200 builds logged "0 RMSNorms fused" until both were known. Rename it the 5.17 way: still fused, same
    numbers; a norm with neither is left alone, with a warning that says so."""
    import torch

    from lorekit.train import fused

    model, tok = lora_model(tiny4, torch.float32)
    norms = [m for m in model.modules() if type(m).__name__ == "Gemma4RMSNorm"]
    batch = a_batch(tok)
    loss, grads = loss_and_grads(model, batch, bf16=False)  # this transformers' own norms
    for m in norms:
        m.eps = vars(m).pop("variance_epsilon")
    assert fused.apply(model, autocast=False).norms == len(norms) > 0
    fused_loss, fused_grads = loss_and_grads(model, batch, bf16=False)
    assert fused_loss == pytest.approx(loss, rel=1e-6) and worst_relative(fused_grads, grads) < 1e-4
    fused.undo(model)
    for m in norms:
        m.epsilon_under_another_name = m.__dict__.pop("eps")
    with caplog.at_level("WARNING", logger="lorekit.train.fused"):
        assert fused.apply(model, autocast=False).norms == 0
    assert f"{len(norms)} Gemma 4 norms left unfused" in caplog.text


def test_lora_inputs_left_in_bf16_change_nothing_under_autocast(tiny4):
    import torch

    from lorekit.train import fused

    model, tok = lora_model(tiny4, torch.bfloat16)
    batch = a_batch(tok)
    loss, grads = loss_and_grads(model, batch, bf16=True)
    done = fused.apply(model, autocast=True)
    assert done.lora_inputs > 0 and done.norms > 0
    fused_loss, fused_grads = loss_and_grads(model, batch, bf16=True)
    # the CPU's rms_norm rounds to bf16 before the weight (CUDA's fused kernel does not): near, not exact
    assert fused_loss == pytest.approx(loss, rel=1e-3)
    assert worst_relative(fused_grads, grads) < 2e-2
    # the input casts alone are exact: autocast casts the same values to bf16 either way
    fused.undo(model)
    lora = [m for m in model.modules() if hasattr(m, "lora_A")]
    assert lora and all(m.cast_input_dtype_enabled is True for m in lora)  # PEFT's own default again
    assert not any("forward" in m.__dict__ for m in model.modules() if type(m).__name__ == "Gemma4RMSNorm")
    for module in model.modules():
        if hasattr(module, "lora_A"):
            module.cast_input_dtype_enabled = False
    cast_loss, cast_grads = loss_and_grads(model, batch, bf16=True)
    assert cast_loss == loss and worst_relative(cast_grads, grads) == 0.0


def test_fuse_unset_is_on_for_the_bf16_plain_loop_on_cuda_only():
    """Timed on the H100 in bf16 (x1.62 tokens/s, bench/results/build_e2b_gpu.md); not with 4-bit layers."""
    from lorekit.train.config import TrainConfig
    from lorekit.train.recipe import fuses

    assert fuses(TrainConfig(load_in_4bit=False), cuda=True, backend="transformers")
    assert not fuses(TrainConfig(), cuda=True, backend="transformers")  # 4-bit by default: not timed there
    assert fuses(TrainConfig(fuse=True), cuda=True, backend="transformers")
    assert not fuses(TrainConfig(fuse=False, load_in_4bit=False), cuda=True, backend="transformers")
    assert not fuses(TrainConfig(fuse=True), cuda=True, backend="unsloth")  # its own kernels
    assert not fuses(TrainConfig(fuse=True, load_in_4bit=False), cuda=False, backend="transformers")
    assert not fuses(TrainConfig(load_in_4bit=False), cuda=True, backend="transformers", processes=2)  # untimed
    assert fuses(TrainConfig(fuse=True), cuda=True, backend="transformers", processes=2)  # as set
