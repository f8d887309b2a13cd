"""`[train] init_adapter`: start the LoRA from a saved adapter instead of from scratch.

The adapter (a build's `adapter/` folder, or one shipped with LoreKit, see `lorekit.priors`) must have been
trained on the same base model with the same rank and targets: its tensors are copied over the fresh LoRA's
one for one, and any difference is an error that names the setting, before a step is trained.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lorekit.errors import LorekitError

log = logging.getLogger(__name__)
WEIGHTS = "adapter_model.safetensors"


def resolve(name: str) -> Path:
    """The adapter folder `name` stands for: a folder path, or the name of a prior shipped with LoreKit."""
    from lorekit import priors

    shipped = priors.find(name)
    folder = shipped or Path(name).expanduser()
    if not (folder / WEIGHTS).is_file():
        known = ", ".join(priors.names()) or "none"
        raise LorekitError(f"[train] init_adapter = {name!r}: no {WEIGHTS} there; name a LoRA adapter folder "
                           f"(a build's adapter/) or a prior shipped with LoreKit ({known})")
    return folder


def for_model(name: str, model: str) -> Path | None:
    """`resolve(name)` for a run that trains `model`; None (a fresh LoRA, with a warning) when `name` is a prior
    shipped for another base model, so that a lorekit.toml naming the 270M's prior (the sample world's) still
    builds with `--model gemma-4-e2b`. A folder path is taken as given: `load_into` checks that it fits."""
    from lorekit import priors

    folder = resolve(name)
    if priors.find(name) is None:
        return folder
    config = folder / "adapter_config.json"
    base = json.loads(config.read_text()).get("base_model_name_or_path", "") if config.is_file() else ""
    if base and base != model:
        log.warning("[train] init_adapter = %r is a prior for %s; training %s starts from a fresh LoRA", name, base,
                    model)
        return None
    return folder


def load_into(model, folder: Path, lora_r: int, lora_alpha: int) -> None:
    """Copy the adapter's tensors in `folder` (see `resolve`) into `model`'s LoRA (a peft model)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file

    config = json.loads((folder / "adapter_config.json").read_text()) if (folder / "adapter_config.json").is_file() else {}
    for key, want in (("r", lora_r), ("lora_alpha", lora_alpha)):
        if key in config and config[key] != want:
            setting = "lora_r" if key == "r" else "lora_alpha"
            raise LorekitError(f"{folder}: the adapter was trained with {key} = {config[key]}, [train] {setting} is "
                               f"{want}; set [train] {setting} = {config[key]} to start from it")
    saved = load_file(str(folder / WEIGHTS))
    own = get_peft_model_state_dict(model)
    missing = sorted(set(own) - set(saved))
    extra = sorted(set(saved) - set(own))
    shapes = sorted(k for k in set(own) & set(saved) if tuple(own[k].shape) != tuple(saved[k].shape))
    if missing or extra or shapes:
        first = (missing or extra or shapes)[0]
        raise LorekitError(f"{folder}: the adapter does not fit this model's LoRA ({len(missing)} tensors missing, "
                           f"{len(extra)} unknown, {len(shapes)} of another shape; first: {first}); it was trained "
                           f"on another base model or other targets ([train] model must be the one it was made for)")
    result = set_peft_model_state_dict(model, saved)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise LorekitError(f"{folder}: {len(unexpected)} adapter tensors were not used (first: {unexpected[0]})")
