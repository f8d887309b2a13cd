"""`[train]` in lorekit.toml: every knob of `lorekit train`, with the guide's defaults.

Fields left at None are filled per device and model profile by `resolve_defaults` (see
docs/train.md): the tiny CPU model needs a bigger batch and more epochs than a GPU run of Gemma 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lorekit.config import opt


@dataclass
class TrainConfig:
    model: str = opt("gemma3-270m", "model profile name, local model folder, or hub id")
    backend: Literal["auto", "unsloth", "transformers"] = opt(
        "auto", "auto: the path the speed table says finishes first (Unsloth needs a CUDA GPU)")
    speed_table: str = opt("", "speed table for backend auto (bench/train_throughput.py --table writes one); "
                           "empty: the one shipped with lorekit")
    epochs: float | None = opt(None, "passes over the training rows (default 3)")
    max_steps: int = opt(0, "stop after this many optimizer steps (0: no limit)")
    lr: float = opt(2e-4, "peak learning rate")
    batch_size: int | None = opt(None, "rows per micro-batch (default 2; 8 on CPU)")
    grad_accum: int | None = opt(None, "micro-batches per optimizer step (default 4; 1 on CPU)")
    warmup_ratio: float = opt(0.05, "fraction of steps spent warming the learning rate up")
    schedule: Literal["cosine", "linear", "constant"] = opt("cosine", "learning-rate decay after warmup")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    optimizer: Literal["auto", "adamw", "adamw_8bit"] = opt("auto", "auto: AdamW (torch); adamw_8bit: bitsandbytes 8-bit AdamW (CUDA)")
    lora_r: int = opt(16, "LoRA rank")
    lora_alpha: int = opt(32, "LoRA alpha (scale = alpha / r)")
    lora_dropout: float = opt(0.0, "dropout on the LoRA input")
    init_adapter: str = opt("", "start the LoRA from this adapter folder (a build's adapter/) or from a prior "
                            "shipped with LoreKit (lorekit/priors/); empty: a fresh LoRA")
    train_turn_tokens: bool = opt(True, "also train the embedding rows of the chat format's turn tokens "
                                  "(a base model never learned them, so without this it never ends its turn)")
    max_length: int = opt(1024, "rows longer than this many tokens are cut (a warning says how many)")
    precision: Literal["auto", "bf16", "fp32"] = opt("auto", "auto: bf16 where it is faster (GPU, CPU autocast)")
    load_in_4bit: bool = opt(True, "on CUDA, load the base model in 4-bit (bitsandbytes nf4)")
    gradient_checkpointing: bool = opt(True, "on CUDA, trade compute for memory")
    share_prompt: bool | None = opt(None, "run a system prompt shared by a batch once, without gradient "
                                    "(much faster on CPU; default on for CPU, off for GPU)")
    compile: bool | None = opt(None, "let Unsloth use torch.compile (faster steps, minutes of start-up); "
                               "unset: backend auto decides by the speed table, off otherwise")
    offload_ple: bool | None = opt(None, "on CUDA, keep Gemma 4's per-layer embedding tables in CPU memory and "
                                   "copy only each batch's rows to the GPU (about 4 GB less GPU memory for E2B); "
                                   "unset: when the tables would take over an eighth of the card")
    fuse: bool | None = opt(None, "on CUDA (plain loop): Gemma 4's RMSNorm as torch's fused kernel and LoRA "
                            "inputs left in bf16: fewer kernel launches a step, the same numbers up to bf16 rounding "
                            "(lorekit/train/fused.py); unset: on in one process without 4-bit (H100, batch 16: x1.62 "
                            "tokens/s, 9 GiB less, bench/results/build_e2b_gpu.md), off with 4-bit or several "
                            "processes (not yet timed)")
    parallel: Literal["ddp", "fsdp"] = opt(
        "ddp", "several processes (torchrun): ddp keeps a whole copy of the model on every GPU; fsdp shards it "
        "across them, for a model that does not fit one card (bf16, no 4-bit)")
    eval_every: int = opt(0, "also evaluate every N optimizer steps (0: once per epoch only)")
    eval_rows: int = opt(256, "rows of eval.jsonl the loop scores for its eval loss, a seeded sample kept for the "
                              "whole run (0: all); `lorekit eval` picks its own questions (`[eval] limit`)")
    log_every: int = opt(5, "write a metrics line every N optimizer steps")
    seed: int = opt(3407, "random seed for LoRA init, data order and dropout")
    keep_best: bool = opt(True, "save the adapter of the lowest eval loss, not the last step")
