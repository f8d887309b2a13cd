from __future__ import annotations

from dataclasses import dataclass

from lorekit.config import opt

STAGES: tuple[str, ...] = ("compile", "train", "export", "eval")


@dataclass
class BuildConfig:
    out: str = opt("build", "build folder, relative to the current directory")
    eval: bool = opt(True, "evaluate base against tuned model after export (false skips the eval stage)")
