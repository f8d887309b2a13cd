"""LoRA adapters shipped with LoreKit, for `[train] init_adapter` (a folder per prior, named after it).

A prior teaches a skill that every world needs and a CPU cannot learn in minutes, trained on a GPU on a
world that is not the user's (bench/prior_world/). Each folder holds a PEFT adapter and a PRIOR.json saying
which base model it was made for, how, and what it measured.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(p.name for p in HERE.iterdir() if (p / "adapter_model.safetensors").is_file())


def find(name: str) -> Path | None:
    """The folder of the shipped prior `name`, or None."""
    if "/" in name or "\\" in name or name.startswith("."):
        return None
    folder = HERE / name
    return folder if (folder / "adapter_model.safetensors").is_file() else None
