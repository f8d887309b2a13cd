"""`lorekit train`: LoRA fine-tuning of a Gemma model on `OUT/dataset/`.

`run(out, cfg)` = load base -> attach LoRA -> tokenize rows -> train -> save adapter (recipe.py).
Importing this package does not import torch; `run` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lorekit.train.config import TrainConfig
    from lorekit.train.recipe import TrainResult


def run(out: Path, cfg: TrainConfig | None = None, **hooks: Any) -> TrainResult:
    from lorekit.train.recipe import run as _run

    return _run(out, cfg, **hooks)


__all__ = ["run"]
