"""Fewer kernel launches per training step on a GPU, with the same numbers (up to bf16 rounding).

An E2B step at the batch sizes LoreKit trains is bound by the host launching kernels, not by the GPU
(bench/results/build_e2b_gpu.md). Two sources of launches are pure overhead:

- Gemma 4's RMSNorm, written out in PyTorch as ~9 kernels forward and ~12 backward (an fp32 copy, pow,
  mean, add, pow, two multiplies, the cast back), eight times in each decoder layer. torch's fused
  `rms_norm` CUDA kernel (torch 2.8 and later) computes the same thing in fp32 inside the kernel, one
  kernel each way, and keeps only the input and one number a row for the backward pass. It runs with
  autocast off: from torch 2.12 CUDA autocast would cast the input to fp32 first (three more kernels and
  an fp32 copy kept), which the kernel does inside anyway.
- PEFT casts each LoRA layer's input to the adapter's fp32 before multiplying; under bf16 autocast the
  multiply casts it straight back to bf16, so the copy (and its backward) changes nothing but the time.
  `cast_input_dtype_enabled = False` leaves the input as it is; autocast still casts the fp32 LoRA
  weights, so the products are bit for bit those of before.

`apply` is for CUDA training under bf16 autocast (LoreKit's plain loop on a GPU: `[train] fuse`, on when unset
in one process without 4-bit); the CPU path keeps transformers' own forward (tests/test_train_fused.py checks
the loss and LoRA gradients match: to 1e-6 in fp32). Timed by bench/step_probe_gpu.py on an H100 (E2B shape,
bf16, batch 16, one process): x1.62 tokens/s and 9 GiB less peak than transformers' own norms and casts, one
fixed batch's loss 0.13 % apart (bf16 rounding). Until 6f64c4f the norms of transformers 5.17 (the GPU
machine's), whose epsilon is `eps`, were not recognised: only the LoRA casts were fused (x1.18 on the H200).
"""

from __future__ import annotations

import logging
import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


@dataclass
class Fused:
    norms: int = 0       # RMSNorm modules now on torch's fused rms_norm
    lora_inputs: int = 0  # LoRA layers whose input is no longer cast to fp32

    def summary(self) -> str:
        return f"{self.norms} RMSNorms fused, {self.lora_inputs} LoRA inputs left in the autocast dtype"


def apply(model, autocast: bool) -> Fused:
    """Rebind the norms of `model` to the fused kernel (where torch has one) and, when every forward runs
    under autocast (`autocast`), stop PEFT's input casts. Returns what changed; `undo` puts it back (the
    recipe does, once training ends, so a later forward without autocast works as before)."""
    done = Fused()
    fused_kernel = hasattr(torch.ops.aten, "_fused_rms_norm")
    left = 0  # Gemma 4 norms this transformers spells in a way `_is_gemma4_norm` does not know
    for module in model.modules():
        if fused_kernel and _is_gemma4_norm(module):
            module.forward = types.MethodType(_norm_forward, module)
            done.norms += 1
        elif type(module).__name__ == "Gemma4RMSNorm":
            left += 1
        elif autocast and hasattr(module, "lora_A") and hasattr(module, "_cast_input_dtype"):
            module.cast_input_dtype_enabled = False
            done.lora_inputs += 1
    if left and fused_kernel:
        log.warning("%d Gemma 4 norms left unfused: this transformers' Gemma4RMSNorm has attributes %s; "
                    "training runs, with more kernel launches a step", left,
                    sorted(k for k in vars(next(m for m in model.modules()
                                                if type(m).__name__ == "Gemma4RMSNorm")) if not k.startswith("_")))
    return done


def undo(model) -> None:
    """Back to transformers' and PEFT's own forwards (bench/step_probe_gpu.py times both in one process)."""
    for module in model.modules():
        if "forward" in module.__dict__ and getattr(module.forward, "__func__", None) is _norm_forward:
            del module.forward
        if getattr(module, "cast_input_dtype_enabled", True) is False:
            module.cast_input_dtype_enabled = True  # PEFT's own default


def _is_gemma4_norm(module) -> bool:
    # transformers' Gemma4RMSNorm: x * (mean(x^2) + eps)^-0.5 [* weight], in fp32, cast back to x's dtype.
    # Gemma 3's norm scales by (1 + weight) and is left alone.
    return type(module).__name__ == "Gemma4RMSNorm" and _epsilon(module) is not None \
        and hasattr(module, "with_scale")


def _epsilon(module) -> float | None:
    # `variance_epsilon` in transformers 5.25, `eps` in 5.17 (the GPU machine's): both name the same number
    for name in ("variance_epsilon", "eps"):
        value = getattr(module, name, None)
        if isinstance(value, float):
            return value
    return None


def _norm_forward(self, x: torch.Tensor) -> torch.Tensor:
    weight = self.weight if self.with_scale else None
    if weight is not None and weight.dtype != x.dtype:
        return type(self).forward(self, x)  # mixed dtypes: the original's fp32 product, not a rounded weight
    with torch.autocast(x.device.type, enabled=False):
        return F.rms_norm(x, (x.shape[-1],), weight, _epsilon(self))
