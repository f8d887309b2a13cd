"""`[export]` settings: which base GGUF, which merged type, what to verify."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lorekit.config import opt


@dataclass
class ExportConfig:
    type: Literal["auto", "base", "f16", "q8_0"] = opt(
        "auto",
        "merged model.gguf type: `auto` keeps every tensor the adapter leaves alone as the base has it and "
        "writes the changed ones in q8_0 (a trained LoRA survives); `base` re-quantizes all to the base GGUF's "
        "type (smallest; a small LoRA can be rounded away), `f16`, or `q8_0`",
    )
    base_gguf: str = opt("", "base model GGUF; empty: the model profile's own GGUF (the 270M ships one)")
    from_hf: str = opt(
        "", "Hugging Face model folder to write the base GGUF from (Gemma 3 / Gemma 4 text decoders); "
        "`model` means the folder the adapter was trained on",
    )
    npc: str = opt("", "NPC id whose persona goes into the Modelfile as SYSTEM; empty: no SYSTEM line")
    adapter_gguf: bool = opt(True, "also write adapter.gguf (the LoRA alone, for llama.cpp's --lora)")
    hf: bool = opt(False, "also write export/hf/: the merged model as a bf16 Hugging Face folder (vLLM, SGLang, "
                   "transformers)")
    verify: bool = opt(True, "check the written files: read back, load with llama.cpp, compare logits")
    verify_prompts: int = opt(4, "how many prompts the logit check runs (1-8)")
    check_torch: bool = opt(True, "compare llama.cpp logits with the merged PyTorch model (needs torch)")
